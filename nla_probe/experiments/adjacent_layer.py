"""``adjacent_layer``: activations of layers K−1 and K+1 fed into the layer-K pair.

Each condition has a layer ``offset`` o (``params.offset``; the baseline must have o = 0).  For
every evaluation position the base model's activation at layer K+o is re-extracted
(:mod:`nla_probe.nla.layers`; o = 0 uses the file's own vector v_K), verbalized by the AV,
reconstructed by the AR and scored against the layer-K truth v_K with the pair's own FVE
denominator.

Per row (all on vectors scaled to √d, so ``mse_nrm = 2(1 − cos)``):

* ``cos_in = cos(v_{K+o}, v_K)`` and ``mse_offset = mse_nrm(v_{K+o}, v_K)`` — the inter-layer offset;
* ``mse_intrinsic`` — the same sample's ``mse_nrm`` at o = 0 (the pair's own error at layer K);
* ``bound_add = mse_intrinsic + mse_offset`` — the **additive bound** of the seed report: the error
  expected if the NLA reconstructed v_{K+o} as well as it reconstructs v_K and the two error
  vectors were uncorrelated (``‖e + δ‖² = ‖e‖² + ‖δ‖²``).  It is not a worst case: the triangle
  inequality gives ``bound_tri = (√mse_intrinsic + √mse_offset)²``, which no configuration of the
  errors can exceed *if* the intrinsic error on v_{K+o} equals that on v_K;
* ``excess_add = mse_nrm − bound_add`` and ``below_add = mse_nrm <= bound_add``.

Verdict (:func:`bound_verdict`): the clustered CI of mean ``excess_add`` lies below 0 → "below the
bound"; contains 0 → "at the bound"; above 0 → "above the bound".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nla_probe.ablate.kinds import ExperimentKind, register_experiment
from nla_probe.ablate.spec import REQUIRED, Field
from nla_probe.errors import InputError, SpecError
from nla_probe.experiments.layer_sweep import LAYER_PARAMS
from nla_probe.experiments.vector_common import rowwise_cos, spec_sampling, sub_chunk
from nla_probe.nla.layers import LazyBase


def additive_bound(mse_intrinsic: Any, mse_offset: Any) -> np.ndarray:
    """``mse_intrinsic + mse_offset`` (the expected error under uncorrelated errors, module doc)."""
    return np.asarray(mse_intrinsic, dtype=np.float64) + np.asarray(mse_offset, dtype=np.float64)


def triangle_bound(mse_intrinsic: Any, mse_offset: Any) -> np.ndarray:
    """``(√mse_intrinsic + √mse_offset)²`` — the triangle-inequality bound on ``mse_nrm``."""
    a = np.sqrt(np.maximum(np.asarray(mse_intrinsic, dtype=np.float64), 0.0))
    b = np.sqrt(np.maximum(np.asarray(mse_offset, dtype=np.float64), 0.0))
    return (a + b) ** 2


def bound_verdict(ci_low: float, ci_high: float) -> str:
    """"below the bound" / "at the bound" / "above the bound" from the CI of mean (observed − bound)."""
    if math.isnan(ci_low) or math.isnan(ci_high):
        return "n/a"
    if ci_high < 0:
        return "below the bound"
    if ci_low > 0:
        return "above the bound"
    return "at the bound"


@register_experiment
class AdjacentLayer(ExperimentKind):
    """Layers K±o through the layer-K pair, scored against v_K, with the additive bound (module doc)."""

    name = "adjacent_layer"
    description = "activations of neighbouring layers through the layer-K pair, vs the additive error bound"
    condition_keys = ("params",)
    params = LAYER_PARAMS
    condition_params = {
        "offset": Field((int,), REQUIRED, "layer offset o: the AV reads layer K+o"),
    }
    columns = {"layer": "Int64", "offset": "Int64", "cos_in": "Float64", "mse_offset": "Float64",
               "mse_intrinsic": "Float64", "bound_add": "Float64", "bound_tri": "Float64", "excess_add": "Float64",
               "below_add": "Boolean", "reextract_cos": "Float64"}
    column_docs = {
        "cos_in": "cos(v_{K+o}, v_K): how far the input layer is from the trained layer.",
        "mse_offset": "mse_nrm(v_{K+o}, v_K) = 2(1 − cos_in), the inter-layer offset.",
        "mse_intrinsic": "the same sample's mse_nrm at offset 0 (the pair's own error).",
        "bound_add": "additive bound mse_intrinsic + mse_offset (uncorrelated errors).",
        "excess_add": "mse_nrm − bound_add (< 0: below the additive bound).",
        "below_add": "share of samples with mse_nrm <= bound_add.",
    }
    summary_means = {"mse_nrm": "mse_nrm", "cos_in": "cos_in", "mse_offset": "mse_offset",
                     "bound_add": "bound_add", "excess_add": "excess_add", "below_add": "below_add"}

    @classmethod
    def validate(cls, spec: Any) -> None:
        offsets = [c.params["offset"] for c in spec.conditions]
        if spec.condition(spec.baseline).params["offset"] != 0:
            raise SpecError(f"baseline: condition {spec.baseline!r} must have params.offset = 0 (the trained "
                            f"layer), found {spec.condition(spec.baseline).params['offset']}")
        dup = sorted({o for o in offsets if offsets.count(o) > 1})
        if dup:
            raise SpecError(f"conditions: offset(s) {dup} appear more than once")

    def run(self, spec: Any, ctx: Any) -> Iterator[dict[str, list]]:
        from nla_probe.analysis.metrics import mse_nrm
        from nla_probe.experiments.vector_common import chunk_frame
        from nla_probe.nla.layers import cached_layers

        base = LazyBase(spec.params["base_model"], ctx.handle.av_dir)
        K = ctx.handle.contract.layer
        conds = sorted(spec.conditions, key=lambda c: c.params["offset"] != 0)  # offset 0 first
        layers = sorted({K + c.params["offset"] for c in conds})
        bad = [L for L in layers if not 0 <= L < base.n_blocks]
        if bad:
            raise InputError(f"conditions: layers {bad} (K={K} + offset) are outside the base model's blocks "
                             f"[0, {base.n_blocks - 1}] ({base.path})")
        sampling = spec_sampling(spec)
        scale = ctx.handle.contract.mse_scale
        for chunk in ctx.chunks():
            got = cached_layers(ctx.cached, base, chunk_frame(ctx, chunk), layers,
                                batch_size=spec.params["extract_batch"])
            recheck = rowwise_cos(got[K], chunk.vectors)
            batch: dict[str, list] = {}
            intrinsic = None
            for cond in conds:
                o = cond.params["offset"]
                vin = chunk.vectors if o == 0 else got[K + o]
                decodes = ctx.decode(sub_chunk(chunk, vin), (), sampling)
                texts = [d["explanation"] for d in decodes]
                scores = ctx.score(chunk, texts)
                rows = ctx.base_rows(chunk, cond.name, decodes, texts, scores)
                mse = np.asarray(scores["mse_nrm"], dtype=np.float64)
                if o == 0:
                    intrinsic = mse
                off = mse_nrm(vin, chunk.vectors, scale)
                badd = additive_bound(intrinsic, off)
                rows.update(layer=[K + o] * len(chunk), offset=[o] * len(chunk),
                            cos_in=rowwise_cos(vin, chunk.vectors).tolist(), mse_offset=off.tolist(),
                            mse_intrinsic=intrinsic.tolist(), bound_add=badd.tolist(),
                            bound_tri=triangle_bound(intrinsic, off).tolist(), excess_add=(mse - badd).tolist(),
                            below_add=(mse <= badd).tolist(), reextract_cos=recheck.tolist())
                for k, v in rows.items():
                    batch.setdefault(k, []).extend(v)
            yield batch

    def section_text(self, spec: Any, summary: Any) -> str:
        if summary.height == 0 or "excess_add" not in summary.columns:
            return ""
        lines = ["**Additive bound** (observed mse_nrm vs intrinsic error at K + inter-layer offset, means):", ""]
        for r in summary.iter_rows(named=True):
            lines.append(f"- `{r['condition']}`: mse_nrm {r['mse_nrm']:.4f} vs bound {r['bound_add']:.4f} "
                         f"(offset {r['mse_offset']:.4f}, cos_in {r['cos_in']:.4f}); "
                         f"{r['below_add']:.0%} of samples at or below")
        return "\n".join(lines)

    def caveats(self, spec: Any) -> list[str]:
        from nla_probe.ablate.markdown import CAVEATS

        return ([CAVEATS["greedy"]] if not spec.sampling.do_sample else []) + [
            "The additive bound assumes the NLA's error on v_{K±1} equals its error on v_K and is uncorrelated "
            "with the inter-layer offset; it is an expectation, not a worst case (see bound_tri)."]

    def report_sections(self, spec: Any, frame: Any, out_dir: Path) -> list:
        return adjacent_report(spec, frame, out_dir)


def adjacent_table(frame: Any, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Any:
    """One row per condition: input layer, mean cos_in, mse_nrm [CI], fve_nrm [CI], intrinsic, offset,
    additive and triangle bounds, observed − additive bound [CI] and its verdict, share below."""
    import polars as pl

    from nla_probe.analysis.stats import cluster_bootstrap_ci

    rows = []
    for (cond,), g in frame.group_by(["condition"], maintain_order=True):
        docs = g["doc_id"].to_numpy()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="bootstrap over only")
            mse = cluster_bootstrap_ci(g["mse_nrm"].to_numpy(), docs, n_boot=n_boot, level=level, seed=seed)
            fve = cluster_bootstrap_ci(g["fve_nrm"].to_numpy(), docs, n_boot=n_boot, level=level, seed=seed)
            exc = cluster_bootstrap_ci(g["excess_add"].to_numpy(), docs, n_boot=n_boot, level=level, seed=seed)
        rows.append({
            "condition": cond, "layer": int(g["layer"][0]), "offset": int(g["offset"][0]),
            "cos_in": float(g["cos_in"].mean()), "mse_nrm": mse.estimate, "mse_low": mse.low, "mse_high": mse.high,
            "estimate": fve.estimate, "ci_low": fve.low, "ci_high": fve.high, "n": fve.n, "n_clusters": fve.n_clusters,
            "intrinsic": float(g["mse_intrinsic"].mean()), "offset_mse": float(g["mse_offset"].mean()),
            "bound_add": float(g["bound_add"].mean()), "bound_tri": float(g["bound_tri"].mean()),
            "excess": exc.estimate, "excess_low": exc.low, "excess_high": exc.high,
            "verdict": "—" if int(g["offset"][0]) == 0 else bound_verdict(exc.low, exc.high),
            "share_below": float(g["below_add"].cast(pl.Float64).mean()),
            "reextract_cos_min": float(g["reextract_cos"].min()),
        })
    return pl.DataFrame(rows).sort("offset")


def adjacent_report(spec: Any, frame: Any, out_dir: Path) -> list:
    """Report section: the bound table and a figure of observed − bound per condition."""
    import polars as pl

    from nla_probe.ablate.markdown import ReportSection
    from nla_probe.ablate.plots import condition_bars, save_png

    m = spec.metrics
    t = adjacent_table(frame, m.n_boot, m.level, spec.seed)
    shown = t.with_columns(
        pl.format("{} [{}, {}]", pl.col("mse_nrm").round(4), pl.col("mse_low").round(4),
                  pl.col("mse_high").round(4)).alias("mse_nrm [CI]"),
        pl.format("{} [{}, {}]", pl.col("excess").round(4), pl.col("excess_low").round(4),
                  pl.col("excess_high").round(4)).alias("observed − bound_add [CI]"),
    ).select("condition", "layer", "cos_in", "mse_nrm [CI]", "estimate", "ci_low", "ci_high", "n", "n_clusters",
             "intrinsic", "offset_mse", "bound_add", "bound_tri", "observed − bound_add [CI]", "verdict",
             "share_below", "reextract_cos_min")
    figs = []
    sub = t.filter(pl.col("offset") != 0).select("condition", pl.col("excess").alias("estimate"),
                                                 pl.col("excess_low").alias("ci_low"),
                                                 pl.col("excess_high").alias("ci_high"), "n")
    if sub.height:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            fig = condition_bars(sub, x="condition", title=f"{spec.name}: observed mse_nrm − additive bound",
                                 ylabel="Δ mse_nrm (< 0: below the bound)", reference_lines={"additive bound": 0.0})
            figs.append((save_png(fig, Path(out_dir) / "figures" / f"{spec.name}_bound.png", width=7, height=3),
                         f"Observed error minus (intrinsic error at K + inter-layer offset), {m.level * 100:g}% "
                         "clustered CI."))
    return [ReportSection(
        title=f"{spec.name}: additive bound",
        text=("Inputs from layer K+o scored against v_K. cos_in = cos(v_{K+o}, v_K); intrinsic = mean mse_nrm at "
              "o = 0; offset_mse = mean mse_nrm(v_{K+o}, v_K); bound_add = intrinsic + offset (seed report's "
              "bound); bound_tri = (√intrinsic + √offset)² per sample (triangle inequality); verdict from the "
              "CI of observed − bound_add; reextract_cos_min = smallest cos between the re-extracted v_K and "
              "the file's (a pipeline check, should be ≈ 1)."),
        table=shown, figures=figs, metric="fve_nrm")]
