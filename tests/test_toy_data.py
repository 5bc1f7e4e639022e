"""The committed toy pairs in data/toy: they load as released pairs and do what the card says."""

import numpy as np
import polars as pl

from nla_probe.analysis.metrics import mse_nrm, variance_baseline
from nla_probe.defaults import TOY_DIR, toy_eval_path, toy_pair_dirs
from nla_probe.nla.checkpoint import load_pair
from nla_probe.toy.corpus import default_corpus_path, load_corpus

FAMILIES = ("qwen_small", "qwen_tiny")


def test_weights_are_small_half_precision_safetensors():
    from safetensors import safe_open

    for fam in FAMILIES:
        av, ar = toy_pair_dirs(fam)
        for f in (av / "model.safetensors", ar / "model.safetensors", ar / "value_head.safetensors"):
            with safe_open(str(f), "pt") as fh:
                dtypes = {str(fh.get_slice(k).get_dtype()) for k in fh.keys()}
            assert dtypes <= {"F16", "BF16"}, (f, dtypes)
    total = sum(f.stat().st_size for f in TOY_DIR.rglob("*.safetensors"))
    assert total <= 40_000_000


def test_eval_sets_are_held_out_and_aligned():
    heldout = {d.doc_id for d in load_corpus(default_corpus_path()) if d.split == "heldout"}
    main = pl.read_parquet(toy_eval_path("qwen_small"))
    assert main.height >= 1000
    assert set(main["doc_id"].to_list()) <= heldout
    second = pl.read_parquet(toy_eval_path("qwen_tiny"))
    assert second.height >= 0.9 * main.height
    # each second-family row covers the last character of its main-family row
    for r in second.head(50).iter_rows(named=True):
        m = main.row(r["main_row"], named=True)
        assert m["doc_id"] == r["doc_id"]
        assert r["char_start"] <= m["char_end"] - 1 < r["char_end"]
        assert r["source_text"][r["char_start"]:r["char_end"]] == r["token"]


def test_round_trip_beats_the_shuffled_null():
    for fam in FAMILIES:
        av, ar = toy_pair_dirs(fam)
        pair = load_pair(av, ar)
        frame = pl.read_parquet(toy_eval_path(fam)).head(64)
        vec = np.asarray(frame["activation_vector"].to_numpy(), dtype=np.float32)
        decodes = pair.verbalizer().verbalize(vec, max_new_tokens=64)
        assert np.mean([d.tag_status == "ok" for d in decodes]) >= 0.9
        pred = pair.reconstructor().reconstruct([d.explanation for d in decodes])
        b = variance_baseline(vec)  # held-out denominator: fine for a paired comparison
        true = 1 - mse_nrm(pred, vec).mean() / b
        null = 1 - mse_nrm(pred, np.roll(vec, 1, axis=0)).mean() / b
        assert true > 0.15 and null < 0 and true - null > 0.4
