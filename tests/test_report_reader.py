"""What a reader of report.md is told: toy runs, CI-vs-p disagreements, the length floor, file names,
test counts, a portable provenance sidecar, and copy-detection rates with CIs."""

import json

import polars as pl
import pytest

from nla_probe.ablate.markdown import (
    Definitions,
    Report,
    ReportSection,
    _slug,
    relative_paths,
)
from nla_probe.ablate.report import (
    ci_p_disagreements,
    provenance_summary,
    toy_family,
    toy_preface,
)
from nla_probe.ablate.spec import Spec
from nla_probe.errors import InputError


def test_slug_cuts_at_a_word_boundary():
    assert _slug("quote_ban: leak audit and substitution matrix") == "quote_ban_leak_audit_and_substitution"
    assert _slug("Post-hoc surgery") == "post_hoc_surgery"
    assert _slug("x" * 50) == "x" * 40  # a single long word is cut inside
    assert _slug("!!!") == "section"


@pytest.mark.parametrize(("n", "phrase"), [(1, "over the one test in this report"),
                                           (4, "over all 4 tests in this report"),
                                           (0, "over no tests in this report")])
def test_the_number_of_tests_reads_right(n, phrase):
    assert phrase in "\n".join(Definitions().lines(n, "report"))


def test_definitions_explain_a_ci_that_excludes_zero_with_a_large_p():
    text = "\n".join(Definitions().lines(3, "report"))
    assert "when the CI and p disagree" in text and "*mean*" in text and "ranks" in text


def test_provenance_goes_to_a_sidecar_with_relative_paths(tmp_path):
    out = tmp_path / "run"
    (out / "results").mkdir(parents=True)
    prov = {"pair": {"av": {"path": str(tmp_path / "models" / "av")}}, "data": {"path": str(out / "acts.parquet")},
            "note": "not a path", "seed": 3}
    Report("t", prov).add_section(ReportSection("s", "text")).write(out)
    side = json.loads((out / "provenance.json").read_text())
    assert side["pair"]["av"]["path"] == "../models/av" and side["data"]["path"] == "acts.parquet"
    assert side["note"] == "not a path" and side["seed"] == 3 and "numpy" in side["versions"]
    text = (out / "report.md").read_text()
    assert str(tmp_path) not in text  # no absolute path left in the report
    assert "- seed: 3" in text and "[provenance.json](provenance.json)" in text


def test_relative_paths_leaves_non_paths_alone(tmp_path):
    obj = {"a": [str(tmp_path / "x" / "y"), "rel/path", 3, None], "b": {"c": "/"}}
    assert relative_paths(obj, tmp_path / "x") == {"a": ["y", "rel/path", 3, None],
                                                    "b": {"c": relative_paths("/", tmp_path / "x")}}


def test_toy_runs_are_recognised_and_get_the_preface(tmp_path):
    info = {"pair": {"av": {"path": "/anywhere/data/toy/qwen_small/av"}}}
    assert toy_family(info) == "qwen_small"
    assert toy_family({"pair": {"av": {"path": "/models/nla-qwen2.5-7b-L20-av"}}}) is None
    assert toy_family({}) is None
    text = toy_preface("qwen_small")
    assert "can show" in text and "cannot show" in text and "docs/toy.md" in text and "3 words" in text
    out = tmp_path / "run"
    out.mkdir()
    Report("t", {}, preface=[text]).add_section(ReportSection("s", "body")).write(out)
    md = (out / "report.md").read_text()
    assert md.index("embedded toy pair") < md.index("## 1. s")  # up front


def test_ci_p_disagreements_hand_cases():
    s = pl.DataFrame({"condition": ["base", "mean_only", "both", "rank_only", "neither"],
                      "diff": [None, -0.038, -0.5, -0.01, 0.01], "diff_low": [None, -0.078, -0.6, -0.03, -0.02],
                      "diff_high": [None, -0.001, -0.4, 0.005, 0.04], "p": [None, 0.081, 1e-6, 0.01, 0.6]})
    notes = ci_p_disagreements(s, 0.95)
    assert len(notes) == 2
    assert notes[0].startswith("`mean_only`: the 95% CI of Δ [-0.078, -0.001] excludes 0 but the Wilcoxon p = 0.081")
    assert notes[1].startswith("`rank_only`: the Wilcoxon p = 0.01 is below 0.05 but the 95% CI of Δ [-0.030, +0.005]")


def test_provenance_summary_is_short_and_relative(tmp_path):
    info = {"pair": {"av": {"path": str(tmp_path / "av"), "fingerprint": "f1"},
                     "ar": {"path": str(tmp_path / "ar"), "fingerprint": "f2"}, "layer": 2, "d_model": 128,
                     "backend": "hf", "device": "cpu", "dtype": "float32"},
            "data": {"path": str(tmp_path / "d.parquet"), "n_rows": 10, "n_docs": 4, "digest": "ab" * 32},
            "spec_hashes": {"x": "cd" * 32}, "batch_size": 8, "limit": 5, "elapsed_s": 1.5,
            "created": "2026-01-01T00:00:00Z"}
    lines = provenance_summary(info, tmp_path / "run")
    assert lines == [
        "- pair: AV `../av` (fingerprint f1), AR `../ar` (fingerprint f2); layer 2, d_model 128; backend hf, cpu, "
        "float32",
        "- data: `../d.parquet`, 10 activations from 4 documents (sha256 abababababab…)",
        "- specs: `x` (cdcdcdcdcdcd…) (spec files: `specs/` of the run directory)",
        "- run: batch size 8, limit 5, 1.5 s, finished 2026-01-01T00:00:00Z",
    ]


def _quote_ban_spec():
    floor = {"name": "min_new_tokens", "n": 30}
    ban = {"name": "ban_chars", "families": ["all"]}
    return Spec.from_dict({"experiment": {"name": "qb", "kind": "quote_ban"}, "baseline": "no_ban", "conditions": [
        {"name": "no_ban"}, {"name": "ban_all", "hooks": [ban]}, {"name": "ban_all_floor", "hooks": [ban, floor]},
        {"name": "floor_only", "hooks": [floor]}]})


def test_floor_note_explains_why_floor_only_equals_no_ban():
    from nla_probe.experiments.quote_ban import floor_note

    s = pl.DataFrame({"condition": ["no_ban", "ban_all", "ban_all_floor", "floor_only"],
                      "estimate": [0.568, -0.768, -0.771, 0.568], "n_tokens": [30.105, 27.215, 38.725, 35.915]})
    text = floor_note(_quote_ban_spec(), s)
    assert "does not block `</explanation>`" in text
    assert ("- `floor_only` equals `no_ban`: fve_nrm 0.568 in both, the same explanations scored; generated tokens "
            "35.9 vs 30.1 (the extra tokens follow the closing tag).") in text
    assert "- `ban_all_floor` vs `ban_all`: fve_nrm -0.771 vs -0.768; the floor changed some explanations" in text
    assert floor_note(_quote_ban_spec(), s.head(0)) == ""


def test_span_verbatim_rate_pools_spans_with_a_document_ci():
    from nla_probe.copying import summarize_span_counts

    f = pl.DataFrame({"condition": ["a"] * 4 + ["b"], "doc_id": ["d1", "d1", "d2", "d3", "d1"],
                      "n_spans": [2, 0, 3, 1, 0], "n_spans_verbatim": [1, 0, 3, 0, 0],
                      "null_spans_verbatim": [0.5, 0.0, 0.3, 0.0, 0.0]})
    with pytest.warns(UserWarning, match="only 3 clusters"):
        out = summarize_span_counts(f, n_boot=500, seed=1)
    assert out["condition"].to_list() == ["a", "a"]  # "b" has no spans
    true, null = out.row(0, named=True), out.row(1, named=True)
    assert true["statistic"] == "spans_verbatim" and true["source"] == "true" and null["source"] == "null"
    assert true["estimate"] == pytest.approx(4 / 6) and true["n"] == 6 and true["n_clusters"] == 3
    assert null["estimate"] == pytest.approx(0.8 / 6)
    assert 0 <= true["ci_low"] <= 4 / 6 <= true["ci_high"] <= 1
    with pytest.raises(InputError, match="must lie in"):
        summarize_span_counts(f.with_columns(pl.lit(9).alias("n_spans_verbatim")), n_boot=10)


def test_all_zero_copy_rates_say_why():
    from nla_probe.experiments.copying import all_zero_note

    spec = Spec.from_dict({"experiment": {"name": "c", "kind": "copying"}, "params": {"ns": [4, 6]},
                           "conditions": [{"name": "free"}]})
    frame = pl.DataFrame({"text": ['Token "belief" after "ment or".', 'Token "a b c" here.'],
                          "run_len": [2, 3], "null_max": [1, 2]})
    zero = pl.DataFrame({"condition": ["free"] * 3, "source": ["true", "null", "excess"],
                         "statistic": ["rate_ge_4"] * 3, "estimate": [0.0, 0.0, 0.0],
                         "ci_low": [0.0] * 3, "ci_high": [0.0, 0.0, 0.0]})
    note = all_zero_note(frame, zero, spec)
    assert note["short"] == ("no explanation shares a run of 4+ words with any context (longest shared run 3 words; "
                             "longest quoted span 3 words)")
    assert "smallest n reported is 4 words" in note["long"]
    nonzero = zero.with_columns(pl.Series("estimate", [0.02, 0.0, 0.02]), pl.Series("ci_high", [0.05, 0.0, 0.05]))
    assert all_zero_note(frame, nonzero, spec) is None
