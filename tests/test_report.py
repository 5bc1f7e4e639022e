"""Tests of nla_probe.ablate.markdown: tables with CIs and counts, figure links, definitions, provenance, BH."""

import json

import numpy as np
import polars as pl
import pytest
import scipy.stats
from PIL import Image

from nla_probe.ablate.markdown import CAVEATS, Definitions, Report, ReportSection, format_ci, markdown_table
from nla_probe.errors import InputError


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
    return path


def _summary():
    return pl.DataFrame({"condition": ["baseline", "spans_only"], "estimate": [0.775, 0.5],
                         "ci_low": [0.76, 0.4], "ci_high": [0.79, 0.6], "n": [400, 400], "n_clusters": [40, 40]})


def _comparison(ps):
    k = len(ps)
    return pl.DataFrame({"condition": [f"c{i}" for i in range(k)], "baseline": ["baseline"] * k,
                         "diff": [-0.1] * k, "ci_low": [-0.2] * k, "ci_high": [0.0] * k, "n": [100] * k,
                         "n_clusters": [10] * k, "statistic": [12.0] * k, "p": ps, "p_bh": [0.5] * k})


def _report(tmp_path, **kwargs):
    r = Report("Surgery", {"checkpoints": {"av": "sha256:abc123", "ar": "sha256:def456"}, "seed": 42},
               definitions=Definitions(denominator=0.7335, denominator_source="training set",
                                       recall_k=10, recall_pool=500), **kwargs)
    inside = _png(tmp_path / "out" / "figures" / "bars.png")
    outside = _png(tmp_path / "elsewhere" / "heat.png")
    r.add_section(ReportSection("Post-hoc surgery", "Edits after generation.", _summary(),
                                [inside], [CAVEATS["ar_ood"]], metric="fve_nrm"))
    r.add_section(ReportSection("Differences", "", _comparison([0.01, 0.04]), [(outside, "transfer matrix")]))
    r.add_section(ReportSection("More differences", "", _comparison([0.03, 0.2])))
    return r


def test_format_ci_hand_case():
    assert format_ci(0.5123, 0.47, 0.55, 400, 40) == "0.512 [0.470, 0.550] (n=400, 40 docs)"
    assert format_ci(float("nan"), 0.0, 1.0, 0, 0, "prompts") == "n/a [0.000, 1.000] (n=0, 0 prompts)"


def test_markdown_table_combines_ci_columns_and_escapes():
    t = _summary().with_columns(pl.Series("note", ["a|b", "x\ny"]))
    md = markdown_table(t, metric="fve_nrm, Var(v_nrm)=0.7335").splitlines()
    assert md[0] == "| condition | fve_nrm, Var(v_nrm)=0.7335: estimate [95% CI] (n, docs) | note |"
    assert md[2] == "| baseline | 0.775 [0.760, 0.790] (n=400, 40 docs) | a\\|b |"
    assert md[3].endswith("| x y |")
    assert len(md) == 4


def test_report_contains_tables_figures_definitions_provenance(tmp_path):
    path = _report(tmp_path).write(tmp_path / "out")
    text = path.read_text()
    assert path == tmp_path / "out" / "report.md"
    assert "## 1. Post-hoc surgery" in text and "## 3. More differences" in text
    assert "| spans_only | 0.500 [0.400, 0.600] (n=400, 40 docs) |" in text
    assert "fve_nrm, Var(v_nrm)=0.7335: estimate [95% CI] (n, docs)" in text
    assert "| c0 | baseline | -0.100 [-0.200, 0.000] (n=100, 10 docs) | 12 | 0.010 |" in text
    # figures: relative links; the outside one was copied in
    assert "](figures/bars.png)" in text and "](figures/heat.png)" in text
    assert (tmp_path / "out" / "figures" / "heat.png").is_file()
    assert "*Figure 2.1* — transfer matrix" in text
    assert CAVEATS["ar_ood"] in text
    assert "Var(v_nrm) = 0.7335 (training set)" in text and "pool of **500**" in text and "chance = 0.02" in text
    assert "```json" not in text  # the full provenance is a sidecar file, linked from a short summary
    assert "[provenance.json](provenance.json)" in text and "- seed: 42" in text
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["checkpoints"]["av"] == "sha256:abc123" and prov["seed"] == 42
    assert prov["versions"]["numpy"] == np.__version__
    assert (tmp_path / "out" / "tables" / "01_post_hoc_surgery.csv").is_file()
    assert "](tables/01_post_hoc_surgery.csv)" in text


def test_bh_is_applied_across_the_whole_report(tmp_path):
    _report(tmp_path).write(tmp_path / "out")
    expected = scipy.stats.false_discovery_control([0.01, 0.04, 0.03, 0.2])  # [.04, .0533, .0533, .2]
    got = np.concatenate([pl.read_csv(tmp_path / "out" / "tables" / f)["p_bh"].to_numpy()
                          for f in ("02_differences.csv", "03_more_differences.csv")])
    np.testing.assert_allclose(got, expected)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "over all 4 tests in this report" in text


def test_bh_scope_table_keeps_given_values(tmp_path):
    _report(tmp_path, bh_scope="table").write(tmp_path / "out")
    got = pl.read_csv(tmp_path / "out" / "tables" / "02_differences.csv")["p_bh"].to_list()
    assert got == [0.5, 0.5]


def test_write_refuses_to_overwrite_and_missing_figure_raises(tmp_path):
    r = _report(tmp_path)
    r.write(tmp_path / "out")
    with pytest.raises(InputError, match="already exists"):
        r.write(tmp_path / "out")
    r.write(tmp_path / "out", overwrite=True)
    bad = Report("x", {}).add_section(ReportSection("s", figures=[tmp_path / "nope.png"]))
    with pytest.raises(InputError, match="nope.png"):
        bad.write(tmp_path / "out2")


def test_bad_arguments_raise():
    with pytest.raises(InputError, match="title"):
        ReportSection("  ")
    with pytest.raises(InputError, match="bh_scope"):
        Report("x", {}, bh_scope="global")
    with pytest.raises(InputError, match="ReportSection"):
        Report("x", {}).add_section("not a section")


def test_definitions_without_denominator_say_so():
    lines = "\n".join(Definitions().lines(0, "report"))
    assert "Var(v_nrm) = not stated" in lines and "recall@" not in lines
    assert Definitions(recall_k=10, recall_pool=500).label("recall@10") == "recall@10, pool 500"
