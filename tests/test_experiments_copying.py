"""Tests of the ``copying`` experiment kind.

A random-weight fixture pair decodes a small activation set built here.  Its decodes are empty
(no explanation tags), so the main runs replace each cached decode's explanation by a text that
quotes 0..5 words of the activation's own source context; the engine's decode, store and AR
scoring still run.  Every run length is recomputed with
:func:`nla_probe.copying.longest_shared_run` on the explanation and ``source_text[:char_end]``;
summary numbers are recomputed with numpy.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import nla_probe.experiments.copying as cp
from nla_probe.ablate.engine import RunContext, ablate
from nla_probe.ablate.spec import Spec, load_spec
from nla_probe.copying import longest_shared_run, null_sources
from nla_probe.errors import InputError, SpecError

N_DOCS, PER_DOC, N_NULL, SEED = 8, 2, 3, 5
WORDS = ("budget committee hacker systems light energy river stone window garden music paper north winter "
         "silver engine market bridge candle forest").split()


def _doc(k: int) -> str:
    """Document k: 30 words drawn with a per-document seed, as sentences."""
    rng = np.random.default_rng(100 + k)
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), 30)]
    return " ".join(words[:10]).capitalize() + ". " + " ".join(words[10:]) + "."


def _data(d_model: int) -> tuple[pl.DataFrame, np.ndarray]:
    """``N_DOCS × PER_DOC`` rows; row i's token ends 12 or 25 words into its document."""
    n = N_DOCS * PER_DOC
    sources = [_doc(i // PER_DOC) for i in range(n)]
    ends = [sum(len(w) + 1 for w in s.split()[:12 if i % 2 == 0 else 25]) - 1 for i, s in enumerate(sources)]
    frame = pl.DataFrame({
        "doc_id": [f"doc{i // PER_DOC}" for i in range(n)], "position": [12 + 13 * (i % 2) for i in range(n)],
        "token": ["x"] * n, "char_start": [e - 3 for e in ends], "char_end": ends, "source_text": sources,
        "activation_layer": [1] * n,
    })
    return frame, np.random.default_rng(0).normal(size=(n, d_model)).astype(np.float32)


def _explanation(sample_id: int, source: str, char_end: int, banned: bool) -> str:
    """Quotes ``sample_id % 6`` words that end 2 words before the token; no quotes when banned."""
    words = source[:char_end].split()
    k = sample_id % 6
    quoted = " ".join(words[len(words) - 2 - k:len(words) - 2]) if k else ""
    mark = "" if banned else '"'
    return f"Token in a text about {WORDS[sample_id % len(WORDS)]}; it repeats {mark}{quoted}{mark} here."


def _spec(**params) -> dict:
    return {"experiment": {"name": "copy", "kind": "copying"}, "seed": SEED,
            "sampling": {"max_new_tokens": 6}, "metrics": {"n_boot": 200, "denominator": 0.9},
            "params": {"n_null": N_NULL, "ns": [2, 3], **params},
            "conditions": [{"name": "free"},
                           {"name": "banned", "hooks": [{"name": "ban_chars", "families": ["quotes"]}]}]}


def _d_model(pair) -> int:
    from nla_probe.nla.contract import read_sidecar

    return read_sidecar(pair[0]).d_model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from nla_probe.toy.fixtures import make_fixture_pair

    return make_fixture_pair(tmp_path_factory.mktemp("copy_pair"), "qwen2", seed=0)


def _run(pair, out, **params):
    """``ablate`` with each decode's explanation replaced by :func:`_explanation`."""
    frame, vecs = _data(_d_model(pair))
    real = RunContext.decode

    def decode(self, chunk, hooks, sampling):
        decs = real(self, chunk, hooks, sampling)
        return [{**d, "explanation": _explanation(s, frame["source_text"][s], frame["char_end"][s], bool(hooks))}
                for d, s in zip(decs, chunk.sample_ids)]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunContext, "decode", decode)
        return ablate(_spec(**params), pair, (frame, vecs), out=out, batch_size=5, report=False), frame


@pytest.fixture(scope="module")
def runs(pair, tmp_path_factory):
    return _run(pair, tmp_path_factory.mktemp("copy_runs") / "out")


def _expected(frame: pl.DataFrame, data: pl.DataFrame, window: int | None = None):
    """Per row of one condition (sorted by sample_id): true run and null runs, recomputed."""
    ctx = [s[:e] for s, e in zip(data["source_text"].to_list(), data["char_end"].to_list())]
    if window:
        ctx = [" ".join(c.split()[-window:]) for c in ctx]
    expl = frame["explanation"].to_list()
    nulls = null_sources(data["doc_id"].to_list(), N_NULL, seed=[SEED, 0])
    true = [longest_shared_run(e, c).length for e, c in zip(expl, ctx)]
    null = [[longest_shared_run(e, ctx[j]).length for j in nulls[i]] for i, e in enumerate(expl)]
    return true, null


def test_rows_match_longest_shared_run_computed_directly(runs):
    res, data = runs
    f = res.frame
    assert f.height == 2 * N_DOCS * PER_DOC
    assert set(f["condition"].unique()) == {"free", "banned"}
    for cond in ("free", "banned"):
        sub = f.filter(pl.col("condition") == cond).sort("sample_id")
        true, null = _expected(sub, data)
        assert sub["run_len"].to_list() == true
        assert cp.parse_run_lens(sub["null_run_lens"].to_list()) == null
        assert sub["null_max"].to_list() == [max(x) for x in null]
        assert sub["null_median"].to_list() == [float(np.median(x)) for x in null]
        pct = [100.0 * (sum(v < t for v in x) + 0.5 * sum(v == t for v in x)) / N_NULL for t, x in zip(true, null)]
        assert sub["run_percentile"].to_list() == pytest.approx(pct)
        for r in sub.iter_rows(named=True):
            i = r["sample_id"]
            run = longest_shared_run(r["explanation"], data["source_text"][i][:data["char_end"][i]])
            assert r["run_text"] == " ".join(run.words)
        # the explanation quotes sample_id % 6 context words: the true run is at least that long
        assert all(t >= i % 6 for t, i in zip(true, sub["sample_id"].to_list()))
    assert f.filter(pl.col("condition") == "free")["text"].to_list() == \
        f.filter(pl.col("condition") == "free")["explanation"].to_list()


def test_quoted_spans_are_counted_and_found_verbatim(runs):
    res, _ = runs
    free = res.frame.filter(pl.col("condition") == "free").sort("sample_id")
    ks = [i % 6 for i in free["sample_id"].to_list()]
    assert free["n_spans"].to_list() == [1] * free.height  # '""' is a span too, without words
    assert free["n_spans_verbatim"].to_list() == [1 if k else 0 for k in ks]
    # null: share of the row's null contexts holding the quoted words contiguously
    data = runs[1]
    ctx = [s[:e] for s, e in zip(data["source_text"].to_list(), data["char_end"].to_list())]
    nulls = null_sources(data["doc_id"].to_list(), N_NULL, seed=[SEED, 0])
    expected = []
    for i, e in zip(free["sample_id"].to_list(), free["explanation"].to_list()):
        quoted = e.split('"')[1]
        k = len(quoted.split())
        expected.append(np.mean([longest_shared_run(quoted, ctx[j]).length == k > 0 for j in nulls[i]]))
    assert free["null_spans_verbatim"].to_list() == pytest.approx(expected)
    assert 0 < sum(expected) < sum(x > 0 for x in ks)
    banned = res.frame.filter(pl.col("condition") == "banned")
    assert banned["n_spans"].to_list() == [0] * banned.height


def test_unpatched_fixture_decodes_run_end_to_end(pair, tmp_path):
    """Real (empty) fixture decodes: no shared words, every null run 0."""
    frame, vecs = _data(_d_model(pair))
    res = ablate(_spec(), pair, (frame, vecs), out=tmp_path / "o", batch_size=8, report=False)
    for cond in ("free", "banned"):
        sub = res.frame.filter(pl.col("condition") == cond).sort("sample_id")
        true, null = _expected(sub, frame)
        assert sub["run_len"].to_list() == true
        assert cp.parse_run_lens(sub["null_run_lens"].to_list()) == null
        assert all(len(x) == N_NULL for x in null)


def test_summary_matches_numpy(runs):
    res, _ = runs
    spec = res.spec("copy")
    s = cp.copy_summary(res.frame, spec)
    assert s["condition"].unique(maintain_order=True).to_list() == ["free", "banned"]

    def get(cond, source, stat):
        r = s.filter((pl.col("condition") == cond) & (pl.col("source") == source) & (pl.col("statistic") == stat))
        assert r.height == 1
        return r.row(0, named=True)

    for cond in ("free", "banned"):
        sub = res.frame.filter(pl.col("condition") == cond)
        true = np.array(sub["run_len"].to_list(), float)
        null = cp.parse_run_lens(sub["null_run_lens"].to_list())
        pooled = np.array([v for x in null for v in x], float)
        assert get(cond, "true", "median")["estimate"] == np.median(true)
        assert get(cond, "true", "p90")["estimate"] == pytest.approx(np.quantile(true, 0.9))
        assert get(cond, "null", "median")["estimate"] == np.median(pooled)
        assert get(cond, "null", "median")["n"] == pooled.size == N_DOCS * PER_DOC * N_NULL
        for n in (2, 3):
            share = np.array([np.mean(np.array(x) >= n) for x in null])
            t = get(cond, "true", f"rate_ge_{n}")
            assert t["estimate"] == pytest.approx(np.mean(true >= n))
            assert t["ci_low"] <= t["estimate"] <= t["ci_high"]
            assert t["n_clusters"] == N_DOCS
            assert get(cond, "null", f"rate_ge_{n}")["estimate"] == pytest.approx(share.mean())
            assert get(cond, "excess", f"rate_ge_{n}")["estimate"] == pytest.approx(np.mean(true >= n) - share.mean())


def test_report_section_table_and_figure(runs, tmp_path):
    res, _ = runs
    spec = res.spec("copy")
    sections = cp.Copying().report_sections(spec, res.frame, tmp_path)
    assert len(sections) == 1
    sec = sections[0]
    t = sec.table
    assert t.height == 6  # 2 conditions x (true, null, excess)
    assert t.columns == ["condition", "contexts", "median run", "p90 run", "≥2 words", "≥3 words",
                         "quoted spans verbatim", "explanations", "docs"]
    free_true = t.row(0, named=True)
    free = res.frame.filter(pl.col("condition") == "free")
    true = np.array(free["run_len"].to_list())
    assert free_true["median run"].startswith(f"{np.median(true):g} [")
    assert free_true["≥2 words"].startswith(f"{100 * np.mean(true >= 2):.1f}% [")
    k, v = free["n_spans"].sum(), free["n_spans_verbatim"].sum()
    assert k > 0
    assert free_true["quoted spans verbatim"].startswith(f"{100 * v / k:.1f}% [")
    assert free_true["quoted spans verbatim"].endswith(f"({k} spans)")
    free_null = t.row(1, named=True)["quoted spans verbatim"]
    assert free_null.startswith(f"{100 * free['null_spans_verbatim'].sum() / k:.1f}% [")
    assert t.row(2, named=True)["median run"] == "—" and t.row(2, named=True)["quoted spans verbatim"] == "—"
    assert "share of quoted spans found verbatim" in sec.figures[0][1]
    assert sec.figures[0][0].is_file()
    res.write_report()
    assert "copy: copy detection" in res.report_path.read_text()


def test_window_limits_the_context(pair, tmp_path):
    res, data = _run(pair, tmp_path / "w", window=4)
    sub = res.frame.filter(pl.col("condition") == "free").sort("sample_id")
    true, null = _expected(sub, data, window=4)
    assert sub["run_len"].to_list() == true
    assert cp.parse_run_lens(sub["null_run_lens"].to_list()) == null
    assert max(sub["n_context_words"].to_list()) == 4
    # the quoted words end 2 words before the token: at most 2 of them fall into a 4-word window
    assert max(true) == 2


def test_missing_source_columns_raise(pair, tmp_path):
    frame, vecs = _data(_d_model(pair))
    with pytest.raises(InputError, match="source_text"):
        ablate(_spec(), pair, (frame.drop("source_text"), vecs), out=tmp_path / "o", report=False)


@pytest.mark.parametrize("change, pattern", [
    ({"params": {"ns": [0]}}, "params.ns"),
    ({"params": {"n_null": 0}}, "params.n_null"),
    ({"params": {"normalizer": {"punct": "strip"}}}, "unknown key"),
    ({"params": {"normalizer": {"punctuation": "drop"}}}, "punctuation"),
    ({"conditions": [{"name": "a", "transforms": [{"name": "prose_only"}]}]}, "not used by kind 'copying'"),
])
def test_spec_checks(change, pattern):
    d = _spec()
    d.update(change)
    with pytest.raises(SpecError, match=pattern):
        Spec.from_dict(d)


def test_spec_file():
    spec = load_spec("copying")
    assert spec.kind == "copying" and spec.params["n_null"] == 20 and spec.baseline == "quoting_freely"
    assert [c.name for c in spec.conditions] == ["quoting_freely", "quote_banned"]
    assert spec.conditions[0].hooks == ()
    (hook,) = spec.conditions[1].hooks
    assert hook["name"] == "ban_chars" and hook["families"] == ["quotes"]
    assert Spec.from_toml(spec.to_toml()) == spec
