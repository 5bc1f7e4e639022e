"""Tests of the generation-side experiment kinds: corroborate, quote_ban, best_of_n, length.

Runs use a random-weight fixture pair (a few activations, short decodes); expected values are
recomputed independently (numpy, a directly loaded AR, hand-made texts), never read back from the
code under test.  The quote-ban bar is also checked on the toy pair when it is present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

import nla_probe.experiments.best_of_n as bon
import nla_probe.experiments.corroborate as corr
import nla_probe.experiments.length as length
import nla_probe.experiments.quote_ban as qb
from nla_probe.ablate.engine import ablate
from nla_probe.ablate.spec import Spec, load_spec
from nla_probe.errors import InputError, SpecError

DENOM = 0.9
TEXTS = (
    'She said "no" twice, then walked out of the room.',
    "A hacker is a person who enjoys exploring (the details of) systems.",
    "Photosynthesis converts light energy into 'chemical' energy.",
    "The committee met on Tuesday to discuss the budget for next year.",
    "Genre: dictionary. Current token: \"room\". Previous: [the].",
    "Don't confuse a kludge with a *hack*, the jargon entry says.",
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    from nla_probe.toy.fixtures import make_fixture_pair

    root = tmp_path_factory.mktemp("gen_pairs")
    return make_fixture_pair(root / "a", "qwen2", seed=0), make_fixture_pair(root / "b", "qwen2", seed=1)


@pytest.fixture(scope="module")
def data(pairs):
    """Activations of pair A's base model at 2 positions of each of 6 documents (12 rows)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nla_probe.nla.extraction import extract_activations

    av = pairs[0][0]
    model = AutoModelForCausalLM.from_pretrained(str(av), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(av))
    frame = extract_activations(model, tok, list(TEXTS), [f"doc{i}" for i in range(6)], 2, n_per_doc=2,
                                min_position=2, seed=0)
    vecs = np.asarray(frame["activation_vector"].to_list(), dtype=np.float32)
    return frame.drop("activation_vector"), vecs


def _spec(kind: str, conditions: list, **kw) -> dict:
    d = {"experiment": {"name": kind, "kind": kind}, "seed": 3,
         "sampling": {"max_new_tokens": 10, **kw.pop("sampling", {})},
         "metrics": {"n_boot": 200, "denominator": DENOM}, "conditions": conditions}
    d.update(kw)
    return d


def _run(spec, pairs, data, tmp_path, batch_size=5):
    return ablate(spec, pairs[0], data, out=tmp_path / "out", batch_size=batch_size, report=False)


def _var_nrm(v: np.ndarray) -> float:
    u = v / np.linalg.norm(v, axis=1, keepdims=True) * np.sqrt(v.shape[1])
    return float(((u - u.mean(0)) ** 2).mean())


# ----------------------------------------------------------------------------------------- corroborate


def test_rotation_derangement_properties():
    from nla_probe.copying.nulls import rotation_derangement

    docs = ["a"] * 3 + ["b"] * 3 + ["c"] * 2 + ["d"] * 2
    p, same = rotation_derangement(docs, seed=5)
    assert sorted(p.tolist()) == list(range(10))
    assert all(p[j] != j for j in range(10))
    assert same == 0 and all(docs[j] != docs[p[j]] for j in range(10))
    assert rotation_derangement(docs, seed=5)[0].tolist() == p.tolist()
    assert rotation_derangement(docs, seed=6)[0].tolist() != p.tolist()
    # One document holds more than half the rows: still a derangement, some pairs share it.
    dom = ["a"] * 5 + ["b", "c"]
    q, same = rotation_derangement(dom, seed=0)
    assert all(q[j] != j for j in range(7)) and sorted(q.tolist()) == list(range(7))
    assert same == sum(dom[j] == dom[q[j]] for j in range(7)) >= 3
    with pytest.raises(InputError, match="at least 2"):
        rotation_derangement(["a"], seed=0)


def test_source_context():
    assert corr.source_context("abcdefgh", 5) == "abcde"
    assert corr.source_context("abcdefgh", 5, window_chars=2) == "de"
    assert corr.source_context("abcdefgh", 5, window_chars=50) == "abcde"
    with pytest.raises(InputError, match="char_end"):
        corr.source_context("abc", 4)


def test_corroborate_run(pairs, data, tmp_path):
    frame, vecs = data
    conds = [{"name": "rt"}, {"name": "shuf", "params": {"text": "shuffled"}},
             {"name": "empty", "params": {"text": "empty"}},
             {"name": "src", "params": {"text": "source", "window_chars": 7}}]
    res = _run(_spec("corroborate", conds), pairs, (frame, vecs), tmp_path)
    f = res.frame.sort("sample_id")
    rt, sh = f.filter(pl.col("condition") == "rt"), f.filter(pl.col("condition") == "shuf")
    expl = dict(zip(rt["sample_id"].to_list(), rt["explanation"].to_list()))
    docs = dict(zip(rt["sample_id"].to_list(), rt["doc_id"].to_list()))
    for r in sh.iter_rows(named=True):
        assert r["partner"] != r["sample_id"] and docs[r["partner"]] != r["doc_id"]
        assert r["text"] == expl[r["partner"]]
    assert sorted(sh["partner"].to_list()) == sorted(sh["sample_id"].to_list())
    assert set(f.filter(pl.col("condition") == "empty")["text"].to_list()) == {""}
    src = f.filter(pl.col("condition") == "src")
    want = [t[:e][-7:] for t, e in zip(frame["source_text"].to_list(), frame["char_end"].to_list())]
    assert src["text"].to_list() == want
    var = _var_nrm(vecs)
    assert f["var_eval"].to_numpy() == pytest.approx(var, rel=1e-5)
    assert f["fve_eval_var"].to_numpy() == pytest.approx(1 - f["mse_nrm"].to_numpy() / var, rel=1e-5)
    assert f["fve_nrm"].to_numpy() == pytest.approx(1 - f["mse_nrm"].to_numpy() / DENOM)
    assert f["fve_above"].to_list() == (f["fve_nrm"] > 0.5).to_list()
    sections = corr.Corroborate().report_sections(res.spec("corroborate"), res.frame, tmp_path / "rep")
    assert sections[0].table["condition"].to_list() == ["rt", "shuf", "empty", "src"]
    assert sections[0].figures[0][0].is_file()


def test_corroborate_spec_checks():
    bad_base = _spec("corroborate", [{"name": "e", "params": {"text": "empty"}}, {"name": "rt"}])
    with pytest.raises(SpecError, match="must read the explanation"):
        Spec.from_dict(bad_base)
    with pytest.raises(SpecError, match="window_chars"):
        Spec.from_dict(_spec("corroborate", [{"name": "rt", "params": {"window_chars": 3}}]))
    with pytest.raises(SpecError, match="text"):
        Spec.from_dict(_spec("corroborate", [{"name": "rt", "params": {"text": "nonsense"}}]))
    with pytest.raises(SpecError, match="reference"):
        Spec.from_dict(_spec("corroborate", [{"name": "rt"}], params={"reference": {"fve": 0.7}}))


# ----------------------------------------------------------------------------------------- best_of_n


def test_best_of_n_run_with_verifier(pairs, data, tmp_path):
    from nla_probe.analysis.metrics import mse_nrm
    from nla_probe.nla.checkpoint import load_ar

    frame, vecs = data
    conds = [{"name": "greedy", "params": {"n": 0}}, {"name": "N1", "params": {"n": 1}},
             {"name": "N2", "params": {"n": 2}}, {"name": "N3", "params": {"n": 3}},
             {"name": "N3v", "params": {"n": 3, "select_by": "verifier"}}]
    spec = _spec("best_of_n", conds, baseline="N1", sampling={"do_sample": True},
                 params={"verifier_ar": str(pairs[1][1])})
    res = _run(spec, pairs, (frame, vecs), tmp_path)
    f = res.frame
    by = {c: f.filter(pl.col("condition") == c).sort("sample_id") for c in ("greedy", "N1", "N2", "N3", "N3v")}
    assert by["N1"]["chosen"].to_list() == [0] * 12 and by["greedy"]["chosen"].to_list() == [-1] * 12
    assert all(0 <= c < 3 for c in by["N3"]["chosen"].to_list())
    f1, f2, f3 = (by[c]["fve_nrm"].to_numpy() for c in ("N1", "N2", "N3"))
    assert np.all(f1 <= f2 + 1e-12) and np.all(f2 <= f3 + 1e-12)       # prefix maximum never decreases
    assert np.all(by["N3v"]["fve_nrm"].to_numpy() <= f3 + 1e-12)       # the AR's pick is the AR's best
    assert np.all(by["N3"]["verifier_fve"].to_numpy() <= by["N3v"]["verifier_fve"].to_numpy() + 1e-12)
    # With n = K the all-subsets estimator is the maximum itself.
    assert by["N3"]["fve_subsets"].to_numpy() == pytest.approx(f3)
    # The verifier's numbers, recomputed with the verifier AR loaded directly.
    ver = load_ar(pairs[1][1])
    for c in ("N3", "greedy"):
        pred = ver.reconstruct(by[c]["text"].to_list(), on_overflow="truncate")
        got = 1 - mse_nrm(pred, vecs[by[c]["sample_id"].to_numpy()], ver.contract.mse_scale) / DENOM
        assert by[c]["verifier_fve"].to_numpy() == pytest.approx(got, abs=1e-4)
    counts = res.info["counts"]["best_of_n"]
    assert counts["decode"]["computed"] == 4 * 12        # 3 samples + greedy, shared by all conditions
    sections = bon.BestOfN().report_sections(res.spec("best_of_n"), f, tmp_path / "rep")
    t = sections[0].table
    assert set(t["quantity"].to_list()) == {"fve", "gain", "bias"}
    bias3 = t.filter((pl.col("quantity") == "bias") & (pl.col("N") == 3))["estimate"][0]
    want = np.mean((f3 - f1) - (by["N3"]["verifier_fve"].to_numpy() - by["N1"]["verifier_fve"].to_numpy()))
    assert bias3 == pytest.approx(want)
    assert all(p.is_file() for p, _ in sections[0].figures)


def test_best_of_n_verifier_from_base_model(pairs, data, tmp_path):
    """Gold of another model extracted at positions aligned by character offset (same tokenizer here,
    so the aligned positions are the original ones and the gold equals a direct extraction)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nla_probe.nla.extraction import extract_activations

    frame, vecs = data
    base_b = pairs[1][0]  # pair B's AV directory holds a full causal LM
    spec = _spec("best_of_n", [{"name": "N1", "params": {"n": 1}}], sampling={"do_sample": True},
                 params={"verifier_ar": str(pairs[1][1]), "verifier_base_model": str(base_b)})
    res = _run(spec, pairs, (frame, vecs), tmp_path)
    f = res.frame.sort("sample_id")
    assert f["verifier_align_error"].to_list() == [0] * 12
    pos = dict(zip(range(12), frame["position"].to_list()))
    model = AutoModelForCausalLM.from_pretrained(str(base_b), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(base_b))
    gold_b = extract_activations(model, tok, list(TEXTS), [f"doc{i}" for i in range(6)], 2, n_per_doc=2,
                                 min_position=2, seed=0)
    gold_b = np.asarray(gold_b["activation_vector"].to_list(), dtype=np.float32)
    from nla_probe.analysis.metrics import mse_nrm
    from nla_probe.nla.checkpoint import load_ar

    ver = load_ar(pairs[1][1])
    pred = ver.reconstruct(f["text"].to_list(), on_overflow="truncate")
    m = mse_nrm(pred, gold_b[f["sample_id"].to_numpy()], ver.contract.mse_scale)
    assert f["verifier_fve"].to_numpy() == pytest.approx(1 - m / _var_nrm(gold_b), abs=1e-4)
    # A position limit leaves the rows beyond it unscored and the denominator on the rest.
    limit = sorted(pos.values())[6]
    spec["params"]["verifier_max_position"] = limit
    g = _run(spec, pairs, (frame, vecs), tmp_path / "limited").frame.sort("sample_id")
    keep = np.array([pos[i] <= limit for i in g["sample_id"].to_list()])
    assert np.isnan(g["verifier_fve"].to_numpy()[~keep]).all() and keep.sum() >= 7
    assert g["verifier_fve"].to_numpy()[keep] == pytest.approx(1 - m[keep] / _var_nrm(gold_b[keep]), abs=1e-4)


def test_best_of_n_verifier_data_with_main_row(pairs, data, tmp_path):
    """A verifier parquet in another row order with a ``main_row`` column and two rows missing."""
    from nla_probe.analysis.metrics import mse_nrm
    from nla_probe.nla.checkpoint import load_ar
    from nla_probe.nla.extraction import write_activations

    frame, vecs = data
    gold = vecs[:, ::-1].copy()  # any other gold of the same width
    order = [11, 3, 7, 0, 5, 9, 1, 10, 2, 6]  # rows 4 and 8 missing
    vf = frame[order].with_columns(pl.Series("main_row", order),
                                   pl.Series("activation_vector", gold[order], dtype=pl.Array(pl.Float32, 64)))
    path = write_activations(vf, tmp_path / "verifier.parquet")
    spec = _spec("best_of_n", [{"name": "N1", "params": {"n": 1}}], sampling={"do_sample": True},
                 params={"verifier_ar": str(pairs[1][1]), "verifier_data": str(path)})
    f = _run(spec, pairs, (frame, vecs), tmp_path).frame.sort("sample_id")
    v = f["verifier_fve"].to_numpy()
    assert np.isnan(v[[4, 8]]).all() and f["verifier_fve"].null_count() == 2
    keep = sorted(order)
    ver = load_ar(pairs[1][1])
    pred = ver.reconstruct([f["text"][i] for i in keep], on_overflow="truncate")
    m = mse_nrm(pred, gold[keep], ver.contract.mse_scale)
    assert v[keep] == pytest.approx(1 - m / _var_nrm(gold[keep]), abs=1e-4)


def test_best_of_n_spec_checks():
    with pytest.raises(SpecError, match="do_sample"):
        Spec.from_dict(_spec("best_of_n", [{"name": "N1"}]))
    with pytest.raises(SpecError, match="verifier_ar"):
        Spec.from_dict(_spec("best_of_n", [{"name": "v", "params": {"select_by": "verifier"}}],
                             sampling={"do_sample": True}))
    with pytest.raises(SpecError, match="greedy"):
        Spec.from_dict(_spec("best_of_n", [{"name": "g", "params": {"n": 0, "select_by": "verifier"}}],
                             sampling={"do_sample": True}, params={"verifier_ar": "x"}))


# ----------------------------------------------------------------------------------------- quote_ban


def test_substitution_counts_hand_example():
    texts = ['say "a" and (b)', "it's 'x' here", "none at all", 'nested "a (b)"']
    fams = ("double_quotes", "single_quotes", "parentheses", "emphasis")
    assert qb.substitution_counts(texts, fams) == {"double_quotes": 2, "single_quotes": 1, "parentheses": 2,
                                                   "emphasis": 0}


def test_quote_ban_leaves_no_banned_character(pairs, data, tmp_path):
    """Sampled decodes of the fixture AV write quote characters unless banned; banned, never."""
    conds = [{"name": "none"},
             {"name": "ds", "hooks": [{"name": "ban_chars", "families": ["quotes"]}]}]
    spec = _spec("quote_ban", conds, sampling={"do_sample": True, "temperature": 1.5, "max_new_tokens": 40})
    res = _run(spec, pairs, data, tmp_path, batch_size=12)
    f = res.frame
    quote_chars = set("\"'\u201c\u201d\u2018\u2019`")
    free = "".join(f.filter(pl.col("condition") == "none")["text"].to_list())
    assert any(ch in quote_chars for ch in free), "precondition: the unbanned decodes contain quotes"
    banned = f.filter(pl.col("condition") == "ds")
    from nla_probe.text.delimiters import resolve_chars

    chars = resolve_chars(["quotes"])
    assert all(not (set(t) & chars) for t in banned["text"].to_list())
    assert banned["n_banned"].to_list() == [0] * 12
    sec = qb.QuoteBan().report_sections(res.spec("quote_ban"), f, tmp_path / "rep")[0]
    row = sec.table.filter(pl.col("condition") == "ds").row(0, named=True)
    assert row["banned chars leaked"] == "0/12"
    assert sec.figures[0][0].is_file()


# ----------------------------------------------------------------------------------------- length


def test_length_table_and_penalty_shortens(pairs, data, tmp_path):
    conds = [{"name": "lam0"}, {"name": "lam1", "hooks": [{"name": "length_penalty", "lam": 1.0}]}]
    spec = _spec("length", conds, sampling={"do_sample": True, "max_new_tokens": 24})
    res = _run(spec, pairs, data, tmp_path)
    f = res.frame
    t = length.length_table(f, res.spec("length"))
    assert t["condition"].to_list() == ["lam0", "lam1"]
    for c in ("lam0", "lam1"):
        sub = f.filter(pl.col("condition") == c)
        r = t.filter(pl.col("condition") == c).row(0, named=True)
        assert r["tokens"] == pytest.approx(float(np.mean(sub["n_tokens"].to_numpy())))
        assert r["fve"] == pytest.approx(float(np.mean(sub["fve_nrm"].to_numpy())))
        assert r["capped"] == pytest.approx(float(np.mean(np.array(sub["finish_reason"].to_list()) == "length")))
        assert r["tokens_low"] <= r["tokens"] <= r["tokens_high"]
        assert r["expl_chars"] == pytest.approx(float(np.mean([len(t) for t in sub["text"].to_list()])))
    # A bonus of λ·t nats on the end logits must shorten the decodes of a random AV.
    assert t["tokens"][1] < t["tokens"][0]
    sec = length.LengthSweep().report_sections(res.spec("length"), f, tmp_path / "rep")[0]
    assert sec.figures[0][0].is_file()


# ----------------------------------------------------------------------------------------- spec files


@pytest.mark.parametrize("name", ["corroborate", "quote_ban", "best_of_n", "length"])
def test_spec_files_run_on_the_fixture(name, pairs, data, tmp_path):
    spec = load_spec(Path(__file__).resolve().parents[1] / "ablations" / f"{name}.toml")
    assert spec.kind == name and Spec.from_toml(spec.to_toml()) == spec
    d = spec.to_dict()
    d["sampling"]["max_new_tokens"] = 6
    for c in d["conditions"]:  # keep floors below the short test cap
        if c.get("hooks"):
            c["hooks"] = [{**h, "n": 3} if h["name"] == "min_new_tokens" else h for h in c["hooks"]]
    d["metrics"].update(n_boot=50, denominator=DENOM)
    if name == "best_of_n":
        d["params"].update(verifier_ar=str(pairs[1][1]), verifier_data="", verifier_base_model="",
                           verifier_max_position=-1)
    res = _run(Spec.from_dict(d), pairs, data, tmp_path, batch_size=12)
    assert res.frame["condition"].unique().sort().to_list() == sorted(c.name for c in spec.conditions)
    assert res.frame.height == 12 * len(spec.conditions)


# ----------------------------------------------------------------------------------------- toy pair


def test_quote_ban_on_the_toy_pair(tmp_path):
    """The bar: on the toy pair the double+single ban leaves no banned character in any decode."""
    from nla_probe import defaults
    from nla_probe.hooks import BanChars
    from nla_probe.nla.checkpoint import load_av
    from nla_probe.text.delimiters import resolve_chars

    if not defaults.toy_pair_present():
        pytest.skip("toy pair not built")
    from nla_probe.nla.extraction import read_activations

    _, vecs = read_activations(defaults.toy_eval_path())
    vecs = vecs[:48]
    verb = load_av(defaults.toy_pair_dirs()[0]).verbalizer()
    chars = resolve_chars(["quotes"])
    free = verb.verbalize(vecs, max_new_tokens=64)
    assert sum(bool(set(d.raw_text) & chars) for d in free) > 0, "precondition: the toy AV quotes"
    banned = verb.verbalize(vecs, max_new_tokens=64, hooks=[BanChars(("quotes",))])
    assert [d.raw_text for d in banned if set(d.raw_text) & chars] == []
