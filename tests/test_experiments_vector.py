"""Vector-side studies: adjacent_layer, layer_sweep, cross_family and ridge.

Pure functions are checked against hand-computed values; the kinds run through ``ablate`` on the
random-weight fixture pairs with a deterministic stand-in verbalizer (text = a function of the
injected vector), so every row can be recomputed independently from the base models and the AR.
"""

import json
import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest
import torch

import nla_probe.experiments.adjacent_layer  # noqa: F401  (registers the kinds)
import nla_probe.experiments.cross_family  # noqa: F401
import nla_probe.experiments.layer_sweep  # noqa: F401
import nla_probe.experiments.ridge  # noqa: F401
from nla_probe.ablate.spec import Spec
from nla_probe.errors import InputError, SpecError
from nla_probe.experiments.adjacent_layer import additive_bound, adjacent_table, bound_verdict, triangle_bound
from nla_probe.experiments.cross_family import transfer_matrix
from nla_probe.experiments.layer_sweep import sweep_tests
from nla_probe.experiments.vector_common import (
    clc_matrix,
    gaussian_rows,
    reconstruction_consistency,
    rowwise_cos,
    shuffle_pairs,
)

TEXTS = ["The committee met on Tuesday to discuss the budget for next year and the plan after it.",
         "She said no twice, then walked out of the room without a word to anyone at all.",
         "A hacker is a person who enjoys exploring the details of programmable systems deeply.",
         "Photosynthesis converts light energy into chemical energy stored in sugar molecules."]
WORDS = ("the", "committee", "budget", "room", "hacker", "word", "year", "light", "sugar", "plan")


# ------------------------------------------------------------------------------------------ pure functions


def test_bounds_on_constructed_numbers():
    np.testing.assert_allclose(additive_bound([0.013, 0.02], [0.006, 0.01]), [0.019, 0.03])
    # (sqrt(0.04) + sqrt(0.01))^2 = (0.2 + 0.1)^2 = 0.09
    np.testing.assert_allclose(triangle_bound([0.04], [0.01]), [0.09])
    assert bound_verdict(-0.01, -0.001) == "below the bound"
    assert bound_verdict(-0.01, 0.002) == "at the bound"
    assert bound_verdict(0.001, 0.01) == "above the bound"


def test_clc_and_prior_work_matrix_on_constructed_vectors():
    e1, e2 = np.array([[1.0, 0.0]] * 3), np.array([[0.0, 1.0]] * 3)
    gold = {0: e1, 1: e2}
    recon = {0: e1, 1: (e1 + e2) / math.sqrt(2)}
    c = clc_matrix(recon, gold)  # [[cos(e1,e1), cos(e1,e2)], [cos(m,e1), cos(m,e2)]]
    np.testing.assert_allclose(c, [[1.0, 0.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]])
    r = reconstruction_consistency(recon)
    np.testing.assert_allclose(r, [[1.0, 1 / math.sqrt(2)], [1 / math.sqrt(2), 1.0]])
    with pytest.raises(InputError, match="same layers"):
        clc_matrix(recon, {0: e1})


def test_shuffle_pairs_pairs_other_documents():
    docs = ["a"] * 3 + ["b"] * 2 + ["c"] * 2 + ["d"]
    p = shuffle_pairs(docs, seed=3)
    assert sorted(p.tolist()) == list(range(8))
    assert all(docs[p[i]] != docs[i] for i in range(8))
    np.testing.assert_array_equal(p, shuffle_pairs(docs, seed=3))
    with pytest.warns(UserWarning, match="within their own document"):
        q = shuffle_pairs(["a"] * 5 + ["b"], seed=0)
    assert sorted(q.tolist()) == list(range(6)) and all(q[i] != i for i in range(6))


def test_gaussian_rows_norm_and_per_sample_seed():
    g = gaussian_rows([5, 9], 16, 3.0, seed=1, layer=2)
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), [3.0, 3.0], rtol=1e-6)
    np.testing.assert_array_equal(gaussian_rows([9], 16, 3.0, seed=1, layer=2)[0], g[1])
    assert not np.allclose(gaussian_rows([9], 16, 3.0, seed=1, layer=3)[0], g[1])


def test_adjacent_table_and_sweep_tests_on_constructed_frames():
    rows = []
    for cond, off, mse, bound in (("L2", 0, [0.1, 0.3], [0.1, 0.3]), ("L1", -1, [0.2, 0.3], [0.25, 0.4])):
        for i in range(2):
            rows.append({"condition": cond, "doc_id": f"d{i}", "layer": 2 + off, "offset": off, "cos_in": 0.9,
                         "mse_nrm": mse[i], "fve_nrm": 1 - mse[i] / 0.5, "mse_intrinsic": [0.1, 0.3][i],
                         "mse_offset": bound[i] - [0.1, 0.3][i], "bound_add": bound[i], "bound_tri": bound[i],
                         "excess_add": mse[i] - bound[i], "below_add": mse[i] <= bound[i], "reextract_cos": 1.0})
    t = adjacent_table(pl.DataFrame(rows), n_boot=50)
    r = t.filter(pl.col("condition") == "L1").row(0, named=True)
    assert r["mse_nrm"] == pytest.approx(0.25) and r["bound_add"] == pytest.approx(0.325)
    assert r["excess"] == pytest.approx(-0.075) and r["verdict"] == "below the bound"
    assert r["estimate"] == pytest.approx(0.5) and r["share_below"] == 1.0
    assert t["offset"].to_list() == [-1, 0]
    f = pl.DataFrame({"arm": ["nla"] * 4 + ["random"] * 4, "layer": [0] * 8, "sample_id": [0, 1, 2, 3] * 2,
                      "doc_id": ["a", "b", "c", "d"] * 2, "cos": [0.5, 0.6, 0.7, 0.8, 0.1, 0.1, 0.2, 0.2]})
    s = sweep_tests(f, n_boot=50)
    assert s.height == 1 and s["diff"][0] == pytest.approx(0.5)
    assert s["p"][0] == pytest.approx(1 / 16)  # exact one-sided Wilcoxon, all 4 differences positive


def test_transfer_matrix_on_constructed_frame():
    rows = []
    vals = {("A", "A"): [0.6, 0.8], ("A", "B"): [0.3, 0.5], ("B", "B"): [0.5, 0.5], ("B", "A"): [0.1, 0.3]}
    for (av, ar), v in vals.items():
        for null in (False, True):
            for i in range(2):
                rows.append({"av_family": av, "ar_family": ar, "null": null, "cell": "within" if av == ar else "cross",
                             "doc_id": f"d{i}", "fve_nrm": -1.0 if null else v[i], "cos": 0.5, "denominator": 0.5,
                             "align_error": i})
    t = transfer_matrix(pl.DataFrame(rows), n_boot=50)
    ab = t.filter((pl.col("av_family") == "A") & (pl.col("ar_family") == "B")).row(0, named=True)
    assert ab["estimate"] == pytest.approx(0.4) and ab["ceiling"] == pytest.approx(0.5)
    assert ab["share_of_ceiling"] == pytest.approx(0.8) and ab["null_fve"] == pytest.approx(-1.0)
    ba = t.filter((pl.col("av_family") == "B") & (pl.col("ar_family") == "A")).row(0, named=True)
    assert ba["share_of_ceiling"] == pytest.approx(0.2 / 0.7)
    assert ab["align_error_mean"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------ engine runs


@dataclass
class _Decode:
    explanation: str
    raw_text: str
    tag_status: str = "ok"
    n_tokens: int = 6
    finish_reason: str = "stop"
    token_ids: tuple = ()


def fake_text(v: np.ndarray) -> str:
    """A deterministic explanation of a vector (stands in for the AV)."""
    return " ".join(WORDS[int(abs(float(x)) * 1000) % len(WORDS)] for x in np.asarray(v)[:6])


class _FakeVerbalizer:
    def verbalize(self, vectors, **kwargs):
        return [_Decode(fake_text(v), f"<explanation>{fake_text(v)}</explanation>") for v in np.asarray(vectors)]


@pytest.fixture
def fake_av(monkeypatch):
    from nla_probe.ablate.engine import PairHandle

    monkeypatch.setattr(PairHandle, "verbalizer", property(lambda self: _FakeVerbalizer()))


@pytest.fixture(scope="module")
def world(fixture_pairs, tmp_path_factory):
    """Eval parquet from the qwen2 fixture base (layer 2), loaded pairs and base models."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nla_probe import load_pair
    from nla_probe.nla.extraction import extract_activations, write_activations

    root = tmp_path_factory.mktemp("vector")
    bases = {}
    for arch in ("qwen2", "gemma3"):
        av = fixture_pairs[arch][0]
        bases[arch] = (AutoModelForCausalLM.from_pretrained(str(av), dtype=torch.float32).eval(),
                       AutoTokenizer.from_pretrained(str(av)))
    model, tok = bases["qwen2"]
    frame = extract_activations(model, tok, TEXTS, ["d0", "d1", "d2", "d3"], 2, n_per_doc=2, min_position=3)
    data = write_activations(frame, root / "eval.parquet")
    pairs = {arch: load_pair(*fixture_pairs[arch]) for arch in ("qwen2", "gemma3")}
    return {"root": root, "data": data, "frame": frame, "bases": bases, "pairs": pairs, "dirs": fixture_pairs}


def _block(model, tok, text, pos, layer):
    """Output of block ``layer`` at token ``pos`` (pre-final-norm for the last block)."""
    ids = tok(text, add_special_tokens=True, return_tensors="pt")["input_ids"]
    out = {}
    h = model.model.layers[layer].register_forward_hook(lambda m, i, o: out.setdefault("x", o))
    try:
        with torch.inference_mode():
            model(input_ids=ids)
    finally:
        h.remove()
    x = out["x"][0] if isinstance(out["x"], tuple) else out["x"]
    return x[0, pos].numpy()


def _run(spec_dict, world, out, report=False):
    from nla_probe.ablate.engine import ablate

    spec = Spec.from_dict({"seed": 0, "sampling": {"max_new_tokens": 4}, "metrics": {"n_boot": 50}, **spec_dict})
    res = ablate(spec, tuple(world["dirs"]["qwen2"]), world["data"], out=out, batch_size=3, report=report)
    return spec, res.frame


def test_adjacent_layer_rows_recomputed(world, fake_av, tmp_path):
    av = str(world["dirs"]["qwen2"][0])
    spec, f = _run({"experiment": {"name": "adj", "kind": "adjacent_layer"}, "params": {"base_model": av},
                    "conditions": [{"name": "K", "params": {"offset": 0}},
                                   {"name": "below", "params": {"offset": -1}}]}, world, tmp_path, report=True)
    model, tok = world["bases"]["qwen2"]
    ar = world["pairs"]["qwen2"].ar
    src = world["frame"]
    gold = np.asarray(src["activation_vector"].to_list(), dtype=np.float32)
    low = f.filter(pl.col("condition") == "below").sort("sample_id")
    k = f.filter(pl.col("condition") == "K").sort("sample_id")
    v1 = np.stack([_block(model, tok, t, p, 1) for t, p in zip(src["source_text"], src["position"])])
    assert low["explanation"].to_list() == [fake_text(v) for v in v1]  # the AV read layer K-1
    assert k["explanation"].to_list() == [fake_text(v) for v in gold]
    rec = ar.reconstruct(low["explanation"].to_list())
    np.testing.assert_allclose(low["cos"].to_numpy(), rowwise_cos(rec, gold), atol=1e-5)
    np.testing.assert_allclose(low["cos_in"].to_numpy(), rowwise_cos(v1, gold), atol=1e-5)
    np.testing.assert_allclose(low["mse_intrinsic"].to_numpy(), k["mse_nrm"].to_numpy())
    np.testing.assert_allclose(low["bound_add"].to_numpy(), k["mse_nrm"].to_numpy() + 2 * (1 - low["cos_in"].to_numpy()),
                               atol=1e-6)
    assert low["layer"].unique().to_list() == [1] and (k["reextract_cos"].to_numpy() > 0.9999).all()
    report = (tmp_path / "report.md").read_text()
    assert "adj: additive bound" in report and (tmp_path / "figures" / "adj_bound.png").is_file()
    with pytest.raises(SpecError, match="offset = 0"):
        Spec.from_dict({"experiment": {"name": "x", "kind": "adjacent_layer"},
                        "conditions": [{"name": "a", "params": {"offset": 1}}]})


def test_layer_sweep_rows_recomputed(world, fake_av, tmp_path):
    from nla_probe.analysis.metrics import recall_at_k, variance_baseline
    from nla_probe.experiments.layer_sweep import LayerSweep

    av = str(world["dirs"]["qwen2"][0])
    spec, f = _run({"experiment": {"name": "sweep", "kind": "layer_sweep"},
                    "params": {"base_model": av, "layers": [1, 3], "recall_k": 2, "recall_pool": 5},
                    "conditions": [{"name": "nla", "params": {"arm": arm}} if arm == "nla" else
                                   {"name": arm, "params": {"arm": arm}} for arm in ("nla", "random", "shuffled")]},
                   world, tmp_path)
    model, tok = world["bases"]["qwen2"]
    ar = world["pairs"]["qwen2"].ar
    src = world["frame"]
    v = {L: np.stack([_block(model, tok, t, p, L) for t, p in zip(src["source_text"], src["position"])])
         for L in (1, 3)}
    v[2] = np.asarray(src["activation_vector"].to_list(), dtype=np.float32)
    rec = {L: ar.reconstruct([fake_text(x) for x in v[L]]) for L in (1, 2, 3)}
    nla1 = f.filter(pl.col("condition") == "nla@L1").sort("sample_id")
    np.testing.assert_allclose(nla1["cos"].to_numpy(), rowwise_cos(rec[1], v[1]), atol=1e-5)
    np.testing.assert_allclose(nla1["fve_nrm"].to_numpy(),
                               1 - 2 * (1 - nla1["cos"].to_numpy()) / variance_baseline(v[1]), atol=1e-5)
    np.testing.assert_allclose(nla1["recall_hit"].to_numpy(), recall_at_k(rec[1], v[1], k=2, pool_size=5, seed=0))
    clc = f.filter(pl.col("condition") == "clc@L1>L3").sort("sample_id")
    np.testing.assert_allclose(clc["cos"].to_numpy(), rowwise_cos(rec[1], v[3]), atol=1e-5)
    np.testing.assert_allclose(clc["cos_recon"].to_numpy(), rowwise_cos(rec[1], rec[3]), atol=1e-5)
    np.testing.assert_allclose(clc["cos_gold"].to_numpy(), rowwise_cos(v[1], v[3]), atol=1e-5)
    sh = f.filter(pl.col("condition") == "shuffled@L2").sort("sample_id")
    perm = shuffle_pairs(src["doc_id"].to_list(), 0)
    np.testing.assert_allclose(sh["cos"].to_numpy(), rowwise_cos(rec[2][perm], v[2]), atol=1e-5)
    rnd = f.filter(pl.col("condition") == "random@L3")
    assert rnd.height == src.height and set(rnd["explanation"]) != set(nla1["explanation"])
    assert set(f["arm"].unique()) == {"nla", "random", "shuffled", "clc"}
    secs = LayerSweep().report_sections(spec, f, tmp_path)
    assert [s.title.split(": ")[1] for s in secs] == ["per-layer metrics", "nla vs baselines per layer",
                                                      "cross-layer consistency"]
    assert all(p.is_file() for s in secs for p, _ in s.figures)
    diag = secs[2].table.filter((pl.col("layer_i") == 1) & (pl.col("layer_j") == 1))["clc"][0]
    assert diag == pytest.approx(float(nla1["cos"].mean()))


def test_cross_family_and_ridge_rows_recomputed(world, fake_av, tmp_path):
    from nla_probe.ablate.engine import ablate
    from nla_probe.analysis.metrics import variance_baseline
    from nla_probe.experiments.cross_family import CrossFamily
    from nla_probe.experiments.ridge import Ridge

    q_av, g_av = str(world["dirs"]["qwen2"][0]), str(world["dirs"]["gemma3"][0])
    fam = {"base_model": q_av, "other_av": g_av, "other_ar": str(world["dirs"]["gemma3"][1]),
           "other_base_model": g_av}
    corpus = tmp_path / "train.jsonl"
    corpus.write_text("".join(json.dumps({"doc_id": f"t{i}", "text": TEXTS[i % 4][::-1] + f" and {i} more words.",
                                          "split": "train"}) + "\n" for i in range(8)))
    base = {"seed": 0, "sampling": {"max_new_tokens": 4}, "metrics": {"n_boot": 50}}
    cross = Spec.from_dict({**base, "experiment": {"name": "cross", "kind": "cross_family"}, "params": fam,
                            "conditions": [{"name": f"{a}-{b}", "params": {"av": a, "ar": b}}
                                           for a in ("self", "other") for b in ("self", "other")]})
    ridge = Spec.from_dict({**base, "experiment": {"name": "ridge", "kind": "ridge"},
                            "params": {**fam, "train_corpus": str(corpus), "n_grid": [4, 8, 16], "n_folds": 2,
                                       "positions_per_doc": 2, "min_position": 2},
                            "conditions": [{"name": "q2g", "params": {"direction": "self_to_other"}}]})
    res = ablate([cross, ridge], tuple(world["dirs"]["qwen2"]), world["data"], out=tmp_path / "out", batch_size=3,
                 report=False)
    f = res.frame
    gmodel, gtok = world["bases"]["gemma3"]
    src = world["frame"]
    cell = f.filter(pl.col("condition") == "self-other").sort("sample_id")
    for row in cell.iter_rows(named=True):  # the aligned B token contains the A token's last character
        a_end = src["char_end"][row["sample_id"]]
        s, e = gtok(src["source_text"][row["sample_id"]], return_offsets_mapping=True)["offset_mapping"][
            row["tgt_position"]]
        assert s <= a_end - 1 < e and row["align_error"] == abs(e - a_end)
    vb = np.stack([_block(gmodel, gtok, src["source_text"][i], p, 2)
                   for i, p in zip(cell["sample_id"], cell["tgt_position"])])
    va = np.asarray(src["activation_vector"].to_list(), dtype=np.float32)[cell["sample_id"].to_numpy()]
    rec = world["pairs"]["gemma3"].ar.reconstruct([fake_text(x) for x in va])
    np.testing.assert_allclose(cell["cos"].to_numpy(), rowwise_cos(rec, vb), atol=1e-5)
    np.testing.assert_allclose(cell["denominator"].to_numpy(), variance_baseline(vb), rtol=1e-6)
    null = f.filter(pl.col("condition") == "self-other:null").sort("sample_id")
    perm = shuffle_pairs(cell["doc_id"].to_list(), 0)
    np.testing.assert_allclose(null["cos"].to_numpy(), rowwise_cos(rec[perm], vb), atol=1e-5)
    t = CrossFamily().report_sections(cross, f.filter(pl.col("experiment") == "cross"), tmp_path)[0].table
    assert t.height == 4 and set(t["cell"]) == {"within", "cross"}
    r = f.filter(pl.col("experiment") == "ridge")
    assert sorted(r["condition"].unique().to_list()) == ["q2g@n16", "q2g@n4", "q2g@n8", "q2g@text"]
    text = r.filter(pl.col("condition") == "q2g@text").sort("sample_id")
    np.testing.assert_allclose(text["fve_nrm"].to_numpy(), cell["fve_nrm"].to_numpy(), atol=1e-9)
    secs = Ridge().report_sections(ridge, r, tmp_path)
    assert secs[0].table.filter(pl.col("route") == "ridge").height == 3 and secs[0].figures


def test_ridge_refuses_overlapping_training_documents(world, fake_av, tmp_path):
    from nla_probe.ablate.engine import ablate

    q_av, g_av = str(world["dirs"]["qwen2"][0]), str(world["dirs"]["gemma3"][0])
    corpus = tmp_path / "train.jsonl"
    corpus.write_text(json.dumps({"doc_id": "d1", "text": TEXTS[1], "split": "train"}) + "\n")
    spec = Spec.from_dict({"experiment": {"name": "ridge", "kind": "ridge"},
                           "params": {"base_model": q_av, "other_av": g_av, "other_ar": str(world["dirs"]["gemma3"][1]),
                                      "other_base_model": g_av, "train_corpus": str(corpus)},
                           "conditions": [{"name": "q2g", "params": {"direction": "self_to_other"}}]})
    with pytest.raises(InputError, match="disjoint"):
        ablate(spec, tuple(world["dirs"]["qwen2"]), world["data"], out=tmp_path / "o", batch_size=3, report=False)
