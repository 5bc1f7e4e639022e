import numpy as np
import polars as pl
import pytest
import torch

from nla_probe.errors import InputError
from nla_probe.nla.extraction import extract_activations, read_activations, sample_positions, write_activations

DOCS = ["The committee met on Tuesday to discuss the budget for next year. " * 4,
        "A hacker is a person who enjoys exploring the details of systems. " * 5,
        "tiny"]


@pytest.fixture(scope="module")
def base(fixture_pairs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    av = fixture_pairs["qwen2"][0]
    return AutoModelForCausalLM.from_pretrained(str(av), dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(str(av))


def test_layer_k_is_block_k_output_and_offsets(base, tmp_path):
    model, tok = base
    frame = extract_activations(model, tok, DOCS, ["d0", "d1", "d2"], layer=2, n_per_doc=4, min_position=10, seed=1)
    assert set(frame["doc_id"]) == {"d0", "d1"}  # "tiny" has no position >= 10
    assert frame.height == 8
    write_activations(frame, tmp_path / "a.parquet")
    meta, vecs = read_activations(tmp_path / "a.parquet", d_model=64)
    assert vecs.dtype == np.float32 and vecs.shape == (8, 64)
    schema = pl.read_parquet_schema(tmp_path / "a.parquet")
    assert schema["activation_vector"] == pl.Array(pl.Float32, 64)
    for row, v in zip(meta.iter_rows(named=True), vecs):
        text = row["source_text"]
        ids = tok(text, add_special_tokens=True)["input_ids"]
        assert ids[row["position"]] == row["token_id"]
        assert text[row["char_start"]:row["char_end"]] == tok.decode([row["token_id"]])
        with torch.no_grad():
            hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[3][0, row["position"]]
        np.testing.assert_allclose(v, hs.numpy(), atol=1e-4)
        assert row["n_raw_tokens"] == row["position"] + 1 and row["activation_layer"] == 2


def test_positions_are_seeded_per_document():
    mask = [False] * 100
    a = sample_positions(100, mask, "doc", n_per_doc=5, min_position=50, seed=42)
    assert a == sample_positions(100, mask, "doc", n_per_doc=5, min_position=50, seed=42)
    assert a != sample_positions(100, mask, "doc2", n_per_doc=5, min_position=50, seed=42)
    assert all(p >= 50 for p in a) and len(set(a)) == 5
    special = [i % 2 == 0 for i in range(100)]
    assert all(p % 2 == 1 for p in sample_positions(100, special, "d", n_per_doc=10, min_position=50, seed=0))


def test_read_activations_errors(tmp_path):
    p = tmp_path / "x.parquet"
    pl.DataFrame({"activation_vector": [[1.0, 2.0], [0.0, 0.0]]}).write_parquet(p)
    with pytest.raises(InputError, match="zero norm"):
        read_activations(p)
    pl.DataFrame({"activation_vector": [[1.0, 2.0], [1.0, float("nan")]]}).write_parquet(p)
    with pytest.raises(InputError, match="NaN"):
        read_activations(p)
    pl.DataFrame({"activation_vector": [[1.0, 2.0], [1.0, 2.0]]}).write_parquet(p)
    with pytest.raises(InputError, match="d_model=3"):
        read_activations(p, d_model=3)
    pl.DataFrame({"vec": [[1.0]]}).write_parquet(p)
    with pytest.raises(InputError, match="activation_vector' missing"):
        read_activations(p)
    with pytest.raises(InputError, match="not found"):
        read_activations(tmp_path / "none.parquet")


def test_layer_bounds(base):
    model, tok = base
    with pytest.raises(InputError, match=r"\[0, 2\]"):
        extract_activations(model, tok, DOCS, ["a", "b", "c"], layer=3)
