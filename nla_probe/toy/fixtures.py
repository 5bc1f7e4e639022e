"""Tiny random-weight NLA pairs in exactly the released layout, for tests and benchmarks.

``make_fixture_pair(out_dir, arch="qwen2")`` writes ``out_dir/av`` and ``out_dir/ar``:

* ``qwen2``: Qwen2 architecture, no BOS, ChatML template, marker ``㈎`` (U+320E) as released Qwen;
* ``gemma3``: Gemma-3 text architecture (√d embedding scale), BOS prepended, ``<end_of_turn>`` as an
  extra stop id in ``generation_config.json``, marker ``㈜`` (U+321C) as released Gemma.

The tokenizer is trained locally in about a second; weights are random (seeded).  The AR is the same
base truncated to K+1 blocks with an IDENTITY value head, so its output equals the base model's
``hidden_states[K + 1]`` at the last token — the property the contract tests check.
``injection_scale`` is the mean norm of layer-K activations over a few fixture texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nla_probe.errors import InputError, UnknownNameError
from nla_probe.nla.contract import AR_TEMPLATE, AV_TEMPLATE

MARKERS = {"qwen2": "\u320e", "gemma3": "\u321c"}

FIXTURE_TEXTS = (
    "The committee met on Tuesday to discuss the budget for next year.",
    "She said \"no\" twice, then walked out of the room without a word.",
    "A hacker is a person who enjoys exploring the details of programmable systems.",
    "Photosynthesis converts light energy into chemical energy stored in sugar.",
    "(See also: the 'jargon' entry.) Don't confuse a kludge with a hack.",
    "The explanation mentions the word \"budget\" and the phrase 'next year'.",
    "Genre: dictionary. Current token: \"room\". Previous: \"the\".",
) * 3


def _config(arch: str, vocab: int, d_model: int, n_layers: int, tok: Any) -> Any:
    common = dict(vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    if arch == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(tie_word_embeddings=True, **common)
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(head_dim=d_model // 4, sliding_window=64, query_pre_attn_scalar=d_model // 4,
                            tie_word_embeddings=True, **common)


def make_fixture_pair(out_dir: str | Path, arch: str = "qwen2", *, d_model: int = 64, n_layers: int = 4,
                      layer: int = 2, vocab_size: int = 700, seed: int = 0, force: bool = False) -> tuple[Path, Path]:
    """Write a random-weight AV/AR pair under ``out_dir``; returns ``(av_dir, ar_dir)``.

    ``out_dir`` must be new or empty unless ``force`` (then its ``av/``, ``ar/`` and ``tokenizer/``
    are overwritten; other files stay).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from nla_probe.nla.export import make_contract, save_ar_checkpoint, save_av_checkpoint
    from nla_probe.nla.reconstructor import build_ar_from_causal_lm
    from nla_probe.toy.tokenizer import train_tokenizer

    if arch not in MARKERS:
        raise UnknownNameError("fixture architecture", arch, MARKERS)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; expected a directory to write av/ and ar/ into")
    if out.is_dir() and not force:
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            raise InputError(f"{out}: the directory is not empty ({len(entries)} entries, e.g. {entries[0]!r}); pass "
                             "--force (force=True) to overwrite the av/ and ar/ in it")
    marker = MARKERS[arch]
    tok = train_tokenizer([AV_TEMPLATE, AR_TEMPLATE, *FIXTURE_TEXTS], vocab_size, out / "tokenizer",
                          marker_chars=[marker], add_bos=(arch == "gemma3"))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(arch, len(tok), d_model, n_layers, tok), dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        enc = tok(list(FIXTURE_TEXTS[:7]), return_tensors="pt", padding=True)
        hs = model(**enc, output_hidden_states=True).hidden_states[layer + 1]
        norms = hs.norm(dim=-1)[enc["attention_mask"].bool()]
    contract = make_contract(tok, d_model, layer, float(norms.mean()), marker,
                             base_checkpoint=f"nla-probe/fixture-{arch}")
    av_dir = save_av_checkpoint(model, tok, out / "av", contract)
    ar = build_ar_from_causal_lm(model, layer)
    ar_dir = save_ar_checkpoint(ar, tok, out / "ar", contract)
    return av_dir, ar_dir


def default_pair_dirs() -> tuple[Path, Path]:
    """The toy pair if present, else a fixture pair (random weights) written to a temporary directory,
    so tools keep working on a partial checkout."""
    from nla_probe.defaults import toy_pair_dirs

    av, ar = toy_pair_dirs()
    if (av / "nla_meta.yaml").is_file() and (ar / "nla_meta.yaml").is_file():
        return av, ar
    import tempfile

    return make_fixture_pair(Path(tempfile.mkdtemp(prefix="nla-probe-fixture-")), "qwen2", d_model=128)
