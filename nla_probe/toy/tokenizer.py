"""Train a small byte-level BPE tokenizer that transformers reloads with identical ids.

transformers 5 rebuilds a ``qwen2`` tokenizer's pipeline on load (NFC, then the Qwen2 split
regex, then ByteLevel without its own regex). A tokenizer trained with any other
pre-tokenizer reloads with different ids, so :func:`train_tokenizer` trains with exactly
that pipeline and checks the ids of a probe text after a save/load round trip.

Two flavours:

- Qwen-style (default): no BOS, ChatML turns (``<|im_start|>``/``<|im_end|>``), saved as
  ``Qwen2Tokenizer``; ``eos_token`` is ``<|im_end|>``, ``pad_token`` ``<|endoftext|>``.
- Gemma-style (``add_bos=True``): the tokenizer prepends ``<bos>`` when
  ``add_special_tokens=True``, turns are ``<start_of_turn>``/``<end_of_turn>``; saved as a
  generic fast tokenizer with a template post-processor.

Marker characters (the AV injection characters) are added as single, non-special tokens,
so ``tokenizer.encode(char, add_special_tokens=False) == [id]`` as the contract requires.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

from nla_probe.errors import InputError

logger = logging.getLogger(__name__)

QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

GEMMA_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{- '<start_of_turn>' + role + '\\n' + message['content'] + '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}"
)

_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>")

PROBE_TEXT = (
    "The quick brown fox's \"jumps\" (over) 12 lazy dogs -- don't panic!\n\n"
    "  Indented line\twith tab; caf\u00e9 na\u00efve \u00c5ngstr\u00f6m 3.14\n"
)


def _build_backend(texts: Iterable[str], vocab_size: int, specials: Sequence[str]) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                        fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(specials),
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                         show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: str | Path,
    extra_special_tokens: Sequence[str] = (),
    marker_chars: Sequence[str] = (),
    *,
    add_bos: bool = False,
    model_max_length: int = 1024,
) -> Any:
    """Train a byte-level BPE tokenizer, save it to ``out_dir`` and reload it.

    Args:
        texts: Training texts (corpus plus any fixed wording that should get short
            encodings, e.g. prompt templates and explanation scaffolds).
        vocab_size: Total vocabulary size, including the 256 byte tokens, the special
            tokens and the marker characters.
        out_dir: Directory that receives ``tokenizer.json``, ``tokenizer_config.json`` and
            ``chat_template.jinja`` (created if missing).
        extra_special_tokens: Further special tokens, appended after the flavour's own.
        marker_chars: Characters that must encode to exactly one (non-special) token
            each, e.g. ``"\\u320e"``.
        add_bos: Gemma-style flavour (BOS prepended, ``<start_of_turn>`` turns) instead of
            the Qwen-style default.
        model_max_length: Stored ``model_max_length`` (tokens).

    Returns:
        The tokenizer reloaded from ``out_dir`` with ``transformers.AutoTokenizer``.

    Raises:
        InputError: If ``vocab_size`` is too small, a marker is not a single character,
            or the reloaded tokenizer encodes the probe text or a marker differently.
    """
    from tokenizers import AddedToken
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    base = _GEMMA_SPECIALS if add_bos else _QWEN_SPECIALS
    specials = list(dict.fromkeys([*base, *extra_special_tokens]))
    for ch in marker_chars:
        if len(ch) != 1:
            raise InputError(f"marker_chars: expected single characters, found {ch!r}")
    if vocab_size < 256 + len(specials) + len(marker_chars) + 1:
        raise InputError(f"vocab_size: expected >= {256 + len(specials) + len(marker_chars) + 1}, "
                         f"found {vocab_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _build_backend(texts, vocab_size - len(marker_chars), specials)
    if marker_chars:
        tok.add_tokens([AddedToken(ch, special=False, normalized=False) for ch in marker_chars])
    if add_bos:
        from tokenizers.processors import TemplateProcessing
        bos_id = tok.token_to_id("<bos>")
        tok.post_processor = TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                special_tokens=[("<bos>", bos_id)])
        kw = dict(bos_token="<bos>", eos_token="<end_of_turn>", pad_token="<pad>",
                  unk_token=None)
        template = GEMMA_CHAT_TEMPLATE
    else:
        kw = dict(bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                  unk_token=None)
        template = QWEN_CHAT_TEMPLATE
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length,
                                   clean_up_tokenization_spaces=False, **kw)
    fast.chat_template = template
    fast.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast" if add_bos else "Qwen2Tokenizer"
    cfg["add_bos_token"] = bool(add_bos)
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
    reloaded = AutoTokenizer.from_pretrained(str(out))
    probe = PROBE_TEXT + "".join(f" x{ch}y" for ch in marker_chars)
    want = tok.encode(probe, add_special_tokens=True).ids
    got = reloaded(probe, add_special_tokens=True)["input_ids"]
    if want != got:
        raise InputError(f"tokenizer round trip: expected ids {want[:20]}..., found {got[:20]}...")
    for ch in marker_chars:
        ids = reloaded.encode(ch, add_special_tokens=False)
        if len(ids) != 1:
            raise InputError(f"marker {ch!r}: expected one token, found {ids}")
    logger.info("tokenizer: %d tokens saved to %s", len(reloaded), out)
    return reloaded


def load_tokenizer(ctx: Any, spec: Any) -> Any:
    """The tokenizer a toy build trained for family ``spec`` (``<family dir>/tokenizer``)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ctx.fam_dir(spec.name) / "tokenizer"))
