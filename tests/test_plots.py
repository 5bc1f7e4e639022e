"""Tests of nla_probe.ablate.plots: every builder renders a real PNG; bad frames raise."""

import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from PIL import Image

from nla_probe.ablate import plots
from nla_probe.errors import InputError


def _summary() -> pl.DataFrame:
    return pl.DataFrame({
        "condition": ["baseline", "spans_only", "prose_only", "redacted"],
        "estimate": [0.775, 0.506, -0.09, -0.759],
        "ci_low": [0.76, 0.49, -0.11, -0.78],
        "ci_high": [0.79, 0.52, -0.07, -0.74],
        "n": [1000, 1000, 1000, 1000],
        "kind": ["free", "post-hoc", "post-hoc", "post-hoc"],
    })


def _curve() -> pl.DataFrame:
    rows = []
    for arm, base in (("best-of-N", 0.77), ("shuffled", -0.9)):
        for n in (1, 2, 4, 8):
            e = base + 0.01 * np.log2(n) * (arm == "best-of-N")
            rows.append({"arm": arm, "N": n, "estimate": e, "ci_low": e - 0.02, "ci_high": e + 0.02,
                         "metric": "fve_nrm"})
    return pl.DataFrame(rows)


def _check_png(path, width, height, dpi):
    assert path.is_file() and path.stat().st_size > 5_000
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert abs(im.size[0] - width * dpi) <= 2 and abs(im.size[1] - height * dpi) <= 2
        colours = im.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 50  # not a blank canvas


@pytest.mark.parametrize("horizontal, fill", [(True, None), (False, "kind")])
def test_condition_bars_renders(tmp_path, horizontal, fill):
    p = plots.condition_bars(_summary(), "condition", title="FVE by condition", fill=fill, horizontal=horizontal)
    out = plots.save_png(p, tmp_path / "bars.png", width=6, height=3.5, dpi=100)
    _check_png(out, 6, 3.5, 100)


def test_curve_renders_with_log_axis_references_and_facets(tmp_path):
    p = plots.curve(_curve(), "N", group="arm", logx=True, reference_lines={"greedy": 0.775},
                    reference_x={"N=4": 4})
    _check_png(plots.save_png(p, tmp_path / "curve.png", 5, 4, 100), 5, 4, 100)
    p = plots.curve(_curve(), "N", group="arm", facet="metric", ymin=None, ymax=None)
    _check_png(plots.save_png(p, tmp_path / "facet.png", 5, 4, 100), 5, 4, 100)
    single = _curve().filter(pl.col("arm") == "shuffled")
    _check_png(plots.save_png(plots.curve(single, "N"), tmp_path / "single.png", 4, 3, 100), 4, 3, 100)


def test_matrix_heatmap_renders(tmp_path):
    m = pl.DataFrame({"AV": ["gemma", "gemma", "qwen", "qwen"], "AR": ["qwen", "gemma", "qwen", "gemma"],
                      "fve": [0.592, 0.774, 0.752, 0.528]})
    p = plots.matrix_heatmap(m, "AV", "AR", "fve", title="transfer")
    _check_png(plots.save_png(p, tmp_path / "heat.png", 4, 4, 100), 4, 4, 100)
    m = m.with_columns(text=pl.format("{}\nnull -0.9", pl.col("fve")))
    p = plots.matrix_heatmap(m, "AV", "AR", "fve", label="text")
    _check_png(plots.save_png(p, tmp_path / "heat2.png", 4, 4, 100), 4, 4, 100)


def test_histogram_compare_renders(tmp_path):
    rng = np.random.default_rng(0)
    f = pl.DataFrame({"run": np.concatenate([rng.poisson(3, 300), rng.poisson(1, 300)]),
                      "source": ["true"] * 300 + ["shuffled"] * 300})
    p = plots.histogram_compare(f, "run", "source", bins=12, reference_lines={"6 words": 6})
    _check_png(plots.save_png(p, tmp_path / "hist.png", 5, 3, 100), 5, 3, 100)


def test_missing_column_empty_frame_and_bad_path_raise(tmp_path):
    with pytest.raises(InputError, match="ci_low"):
        plots.condition_bars(_summary().drop("ci_low"), "condition")
    with pytest.raises(InputError, match="non-empty"):
        plots.curve(_curve().head(0), "N")
    p = plots.curve(_curve(), "N", group="arm")
    with pytest.raises(InputError, match=".png"):
        plots.save_png(p, tmp_path / "x.pdf")


def test_import_does_not_load_plotnine():
    code = "import sys, nla_probe.ablate.plots; print('plotnine' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
