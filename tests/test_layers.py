"""Re-extraction of other layers at the positions of an activation frame (fixture base model)."""

import numpy as np
import polars as pl
import pytest
import torch

from nla_probe.errors import InputError
from nla_probe.nla.layers import (
    LazyBase,
    cached_layers,
    decode_vectors,
    encode_vectors,
    extract_layers,
    parse_layers,
    resolve_base_dir,
)

TEXTS = ["The committee met on Tuesday to discuss the budget for next year and the plan.",
         "She said no twice, then walked out of the room without a word.",
         "A hacker is a person who enjoys exploring the details of programmable systems."]


@pytest.fixture(scope="module")
def base(fixture_pairs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    av = fixture_pairs["qwen2"][0]
    model = AutoModelForCausalLM.from_pretrained(str(av), dtype=torch.float32).eval()
    return av, model, AutoTokenizer.from_pretrained(str(av))


@pytest.fixture(scope="module")
def frame(base):
    from nla_probe.nla.extraction import extract_activations

    _, model, tok = base
    return extract_activations(model, tok, TEXTS, ["a", "b", "c"], 2, n_per_doc=3, min_position=2)


def _hidden(model, tok, text):
    ids = tok(text, add_special_tokens=True, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return model(input_ids=ids, output_hidden_states=True).hidden_states


def test_layers_match_hidden_states_at_the_positions(base, frame):
    _, model, tok = base
    got = extract_layers(model, tok, frame, [0, 1, 2, 3], batch_size=2)
    docs = dict(zip(["a", "b", "c"], TEXTS))
    for i, (doc, pos) in enumerate(zip(frame["doc_id"], frame["position"])):
        hs = _hidden(model, tok, docs[doc])
        for L in (0, 1, 2):
            np.testing.assert_allclose(got[L][i], hs[L + 1][0, pos].numpy(), atol=1e-4)
        # the last block is read before the final norm: applying the norm gives hidden_states[-1]
        with torch.inference_mode():
            normed = model.model.norm(torch.from_numpy(got[3][i])).numpy()
        np.testing.assert_allclose(normed, hs[4][0, pos].numpy(), atol=1e-4)


def test_layer_k_reproduces_the_file_vectors_for_any_batching(base, frame):
    _, model, tok = base
    vecs = np.asarray(frame["activation_vector"].to_list(), dtype=np.float32)
    for bs in (1, 3):
        got = extract_layers(model, tok, frame, [2], batch_size=bs)[2]
        np.testing.assert_allclose(got, vecs, atol=1e-4)


def test_token_mismatch_and_position_errors(base, frame):
    _, model, tok = base
    bad = frame.with_columns(pl.Series("token_id", [t + 1 for t in frame["token_id"]]))
    with pytest.raises(InputError, match="token_id"):
        extract_layers(model, tok, bad, [1])
    extract_layers(model, tok, bad, [1], check_tokens=False)  # no check requested: runs
    far = frame.with_columns(pl.Series("position", [10_000] * frame.height))
    with pytest.raises(InputError, match="beyond"):
        extract_layers(model, tok, far, [1], check_tokens=False)
    with pytest.raises(InputError, match="block indices"):
        extract_layers(model, tok, frame, [4])
    with pytest.raises(InputError, match="source_text"):
        extract_layers(model, tok, frame.drop("source_text"), [1])


def test_parse_layers():
    assert parse_layers("all", 4) == [0, 1, 2, 3]
    assert parse_layers([3, -1, 0], 4) == [0, 3]
    with pytest.raises(InputError, match="block indices"):
        parse_layers([4], 4)
    with pytest.raises(InputError, match="'all'"):
        parse_layers("some", 4)


def test_vector_codec_roundtrip():
    v = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    rec = encode_vectors(v)
    assert rec["shape"] == [3, 5]
    np.testing.assert_array_equal(decode_vectors(rec), v)


def test_resolve_base_dir_and_lazy_base(fixture_pairs, tmp_path):
    av = fixture_pairs["qwen2"][0]
    with pytest.raises(InputError, match="params.base_model"):
        resolve_base_dir("auto", av)  # the fixture layout has no base/ next to av/
    assert resolve_base_dir(str(av), av) == av
    lb = LazyBase(str(av), av)
    assert lb.n_blocks == 4 and lb._loaded is None and len(lb.identity["fingerprint"]) == 16


def test_cached_layers_computes_once(base, frame):
    av, model, tok = base
    store, calls = {}, []

    def cached(type_, payload, compute, rows=1):
        key = (type_, repr(sorted(payload.items())))
        if key not in store:
            calls.append(type_)
            store[key] = compute()
        return store[key]

    lb = LazyBase(str(av), av)
    first = cached_layers(cached, lb, frame, [1, 2])
    second = cached_layers(cached, lb, frame, [2, 1])
    assert calls == ["layers"]
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_allclose(first[2], np.asarray(frame["activation_vector"].to_list()), atol=1e-4)
