"""``layer_sweep``: every layer of the base model through the layer-K NLA pair.

For each layer L of the base model (``params.layers``, default all blocks), the activation v_L at
every evaluation position is re-extracted (:mod:`nla_probe.nla.layers`; for L = K the file's own
vectors are used) and each condition's *arm* is scored against the layer-L truth v_L:

* ``nla`` — AV(v_L) → explanation → AR → reconstruction r_L.
* ``random`` — AV(g) with g a Gaussian row (seed ``[spec seed, L, sample_id]``) rescaled to the
  layer's median norm; the injection renormalises every vector, so the norm is cosmetic.
* ``shuffled`` — the ``nla`` reconstruction of another sample: r_L[π(i)] scored against v_L[i],
  with π a permutation pairing rows of different documents (:func:`shuffle_pairs`).
* ``mean`` — the mean direction of the layer's unit rows (no decode).

Metrics per row: ``cos``, ``mse_nrm`` (= 2(1 − cos)), ``fve_nrm = 1 − mse_nrm / B_L`` with
``B_L = Var(v_nrm)`` of the layer-L vectors of the evaluation selection (column ``denominator``),
``nrmse`` (relative L2 error of unit vectors, √(2(1 − cos))), ``recall_hit`` (recall@k against a
pool of ``recall_pool`` gold rows of the same layer, :func:`nla_probe.analysis.metrics.recall_at_k`) and
the control ``cos_to_k = cos(v_L, v_K)``.

**Cross-layer consistency** (``params.clc``): ``CLC[i, j] = mean_s cos(AR(AV(v_i[s])), v_j[s])`` —
the layer-i explanation replayed through the AR against the layer-j truth (rows with arm ``clc``,
``layer = i``, ``target_layer = j``; the diagonal is the ``nla`` arm).  Prior work plotted
``mean_s cos(r_i[s], r_j[s])`` instead (cosine between two reconstructions, no ground truth,
diagonal 1); that quantity is kept in column ``cos_recon`` and shown next to CLC, together with
``cos_gold = cos(v_i, v_j)``, so the two definitions can be compared.

Row conditions are ``<condition>@L<layer>`` (and ``clc@L<i>>L<j>``); the generic summary thus has
one CI per arm and layer.  Per-layer Wilcoxon tests (``nla`` vs ``random`` and vs ``shuffled``, on
per-sample cosine, alternative "greater") with Benjamini–Hochberg correction are in
:func:`sweep_tests`.  For a fixed layer the per-sample FVE is an increasing affine function of
cos with the same ``B_L`` for both arms, so the test is the same on either metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nla_probe.ablate.kinds import ExperimentKind, register_experiment
from nla_probe.ablate.spec import REQUIRED, Field
from nla_probe.errors import InputError, SpecError
from nla_probe.experiments.vector_common import (
    chunk_frame,
    decode_fields,
    empty_decode_fields,
    gaussian_rows,
    reconstruct_cached,
    rows_block,
    rowwise_cos,
    shuffle_pairs,
    spec_sampling,
    sub_chunk,
    unit,
)
from nla_probe.nla.layers import LazyBase

ARMS = ("nla", "random", "shuffled", "mean")
_DECODED = ("nla", "random")


# ------------------------------------------------------------------------------------------ the kind


def _layers_check(v: Any) -> str | None:
    if v == "all":
        return None
    if isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return None
    return "expected 'all' or a non-empty array of block indices"


LAYER_PARAMS: dict[str, Field] = {
    "base_model": Field((str,), "auto", "base LM directory ('auto' = <av_dir>/../base)"),
    "extract_batch": Field((int,), 8, "documents per forward pass of the base model",
                           lambda v: None if v >= 1 else "expected an integer >= 1"),
}


@register_experiment
class LayerSweep(ExperimentKind):
    """Every base-model layer through the layer-K pair, with baselines and the CLC matrix (module doc)."""

    name = "layer_sweep"
    description = "activations of every layer through the layer-K pair vs random/shuffled baselines, plus CLC"
    condition_keys = ("params",)
    params = {
        **LAYER_PARAMS,
        "layers": Field((str, list), "all", "block indices to sweep ('all' or a list; K is always added)",
                        _layers_check),
        "recall_k": Field((int,), 10, "k of recall@k", lambda v: None if v >= 1 else "expected an integer >= 1"),
        "recall_pool": Field((int,), 500, "pool size of recall@k (gold row + pool−1 others; clipped to n)",
                             lambda v: None if v >= 2 else "expected an integer >= 2"),
        "clc": Field((bool,), True, "compute the cross-layer consistency rows"),
    }
    condition_params = {
        "arm": Field((str,), REQUIRED, f"one of {list(ARMS)}",
                     lambda v: None if v in ARMS else f"expected one of {list(ARMS)}"),
    }
    columns = {"arm": "Utf8", "layer": "Int64", "target_layer": "Int64", "denominator": "Float64",
               "nrmse": "Float64", "recall_hit": "Float64", "cos_to_k": "Float64", "cos_recon": "Float64",
               "cos_gold": "Float64", "reextract_cos": "Float64"}
    column_docs = {
        "arm": "nla (AV on v_L), random (Gaussian input), shuffled (another document's reconstruction), "
               "mean (mean direction), clc (layer-i explanation vs layer-j truth).",
        "denominator": "the FVE denominator of the row: Var(v_nrm) of the target layer's evaluation vectors.",
        "nrmse": "relative L2 error of unit vectors, sqrt(2(1 − cos)).",
        "recall": "recall@k hit rate (pool size in the section text).",
        "cos_to_k": "cos(v_L, v_K): how close layer L's truth is to the trained layer's.",
        "cos_recon": "clc rows: cos(r_i, r_j) between the reconstructions of layers i and j (prior work's CLC).",
        "cos_gold": "clc rows: cos(v_i, v_j) between the truths of layers i and j.",
        "reextract_cos": "layer-K rows: cos between the re-extracted v_K and the file's vector (a check, ≈ 1).",
    }
    summary_means = {"recall": "recall_hit", "nrmse": "nrmse", "cos_to_k": "cos_to_k"}

    @classmethod
    def validate(cls, spec: Any) -> None:
        arms = [c.params["arm"] for c in spec.conditions]
        dup = sorted({a for a in arms if arms.count(a) > 1})
        if dup:
            raise SpecError(f"conditions: arm(s) {dup} appear more than once (one condition per arm)")
        if "shuffled" in arms and "nla" not in arms:
            raise SpecError("conditions: the 'shuffled' arm reuses the 'nla' reconstructions; add an 'nla' condition")
        if spec.params["clc"] and "nla" not in arms:
            raise SpecError("params.clc needs an 'nla' condition")

    def run(self, spec: Any, ctx: Any) -> Iterator[dict[str, list]]:
        from nla_probe.analysis.metrics import variance_baseline
        from nla_probe.nla.layers import cached_layers, parse_layers

        p = spec.params
        base = LazyBase(p["base_model"], ctx.handle.av_dir)
        K = ctx.handle.contract.layer
        layers = sorted(set(parse_layers(p["layers"], base.n_blocks, "params.layers")) | {K})
        n = ctx.data.vectors.shape[0]
        if n < 2:
            raise InputError(f"layer_sweep needs at least 2 activations, found {n}")
        chunks = list(ctx.chunks())
        gold: dict[int, list] = {L: [] for L in layers}
        again: list[np.ndarray] = []  # layer K re-extracted: a check against the file's vectors
        for chunk in chunks:
            got = cached_layers(ctx.cached, base, chunk_frame(ctx, chunk), layers, batch_size=p["extract_batch"])
            for L in layers:
                gold[L].append(chunk.vectors if L == K else got[L])
            again.append(got[K])
        V = {L: np.concatenate(gold[L]) for L in layers}
        reextract_cos = rowwise_cos(np.concatenate(again), V[K])
        denom = {L: variance_baseline(V[L]) for L in layers}
        median_norm = {L: float(np.median(np.linalg.norm(V[L], axis=1))) for L in layers}
        frame = ctx.data.frame
        sids, docs = frame["sample_id"].to_list(), frame["doc_id"].to_list()
        pos = frame["position"].to_list() if "position" in frame.columns else [None] * n
        arms = {c.params["arm"]: c.name for c in spec.conditions}
        sampling = spec_sampling(spec)
        pool = min(p["recall_pool"], n)
        k = min(p["recall_k"], pool)
        perm = shuffle_pairs(docs, spec.seed)
        recon: dict[tuple[str, int], dict] = {}
        for arm in (a for a in _DECODED if a in arms):
            for L in layers:
                parts = []
                for chunk in chunks:
                    s = chunk.index * ctx.batch_size
                    if arm == "nla":
                        vin = V[L][s:s + len(chunk)]
                    else:
                        vin = gaussian_rows(chunk.sample_ids, V[L].shape[1], median_norm[L], spec.seed, L)
                    decodes = ctx.decode(sub_chunk(chunk, vin), (), sampling)
                    texts = [d["explanation"] for d in decodes]
                    r = reconstruct_cached(ctx, texts)
                    parts.append({**decode_fields(decodes), "text": texts, "vectors": r["vectors"],
                                  "ar_tokens": r["ar_tokens"], "overflow": r["overflow"]})
                recon[(arm, L)] = {key: (np.concatenate([q[key] for q in parts]) if key == "vectors"
                                         else [x for q in parts for x in q[key]]) for key in parts[0]}
        for L in layers:
            cos_k = rowwise_cos(V[L], V[K])
            for arm, cname in arms.items():
                if arm == "mean":
                    pred = np.broadcast_to(unit(V[L]).mean(0), V[L].shape)
                    r = {**empty_decode_fields(n), "text": [""] * n, "ar_tokens": [0] * n, "overflow": [""] * n}
                elif arm == "shuffled":
                    src = recon[("nla", L)]
                    pred = src["vectors"][perm]
                    r = {key: [src[key][j] for j in perm] for key in src if key != "vectors"}
                else:
                    r = recon[(arm, L)]
                    pred = r["vectors"]
                cos = rowwise_cos(pred, V[L])
                mse = 2.0 * (1.0 - cos)
                hits = _recall(pred, V[L], k, pool, spec.seed)
                yield rows_block(spec, f"{cname}@L{L}", sids, docs, pos, r, r["text"], r["ar_tokens"], r["overflow"],
                                 mse, cos, denom[L],
                                 {"arm": [arm] * n, "layer": [L] * n, "target_layer": [L] * n,
                                  "nrmse": np.sqrt(np.maximum(mse, 0.0)).tolist(), "recall_hit": hits.tolist(),
                                  "cos_to_k": cos_k.tolist(),
                                  "cos_recon": [math.nan] * n, "cos_gold": [math.nan] * n,
                                  "reextract_cos": (reextract_cos if L == K else np.full(n, math.nan)).tolist()})
        if p["clc"]:
            for i in layers:
                src = recon[("nla", i)]
                for j in layers:
                    if i == j:
                        continue
                    cos = rowwise_cos(src["vectors"], V[j])
                    mse = 2.0 * (1.0 - cos)
                    yield rows_block(spec, f"clc@L{i}>L{j}", sids, docs, pos, src, src["text"], src["ar_tokens"],
                                     src["overflow"], mse, cos, denom[j],
                                     {"arm": ["clc"] * n, "layer": [i] * n, "target_layer": [j] * n,
                                      "nrmse": np.sqrt(np.maximum(mse, 0.0)).tolist(),
                                      "recall_hit": [math.nan] * n, "cos_to_k": rowwise_cos(V[j], V[K]).tolist(),
                                      "cos_recon": rowwise_cos(src["vectors"], recon[("nla", j)]["vectors"]).tolist(),
                                      "cos_gold": rowwise_cos(V[i], V[j]).tolist(), "reextract_cos": [math.nan] * n})

    def section_text(self, spec: Any, summary: Any) -> str:
        p = spec.params
        return ("Rows are `<condition>@L<layer>`: the arm applied to layer-L activations and scored against the "
                "layer-L truth; **fve_nrm of each row uses the target layer's own Var(v_nrm) on the evaluation "
                "selection** (column `denominator`), not the denominator stated above. "
                f"recall@{p['recall_k']}: pool of {p['recall_pool']} gold rows of the same layer (clipped to n; "
                f"chance = k/pool). `clc@L<i>>L<j>`: the layer-i explanation's reconstruction against the "
                "layer-j truth.")

    def caveats(self, spec: Any) -> list[str]:
        from nla_probe.ablate.markdown import CAVEATS

        out = [CAVEATS["greedy"]] if not spec.sampling.do_sample else []
        return out + [
                "One AR (trained on layer K) reconstructs every layer: off-layer scores mix 'the AV reads layer L' "
                "with 'the AR emits layer-K geometry'; compare with the cos_to_k control.",
                "The random arm's norm rescaling is cosmetic: the injection normalises every vector to the "
                "contract's injection_scale."]

    def report_sections(self, spec: Any, frame: Any, out_dir: Path) -> list:
        """Per-layer table and figure, per-layer tests, and the CLC matrices (see :func:`sweep_report`)."""
        return sweep_report(spec, frame, out_dir)


def _recall(pred: np.ndarray, gold: np.ndarray, k: int, pool: int, seed: int) -> np.ndarray:
    from nla_probe.analysis.metrics import recall_at_k

    ok = np.isfinite(pred).all(1)
    out = np.full(len(pred), np.nan)
    if ok.sum() >= pool:
        out[ok] = recall_at_k(pred[ok], gold[ok], k=k, pool_size=pool, seed=seed)
    return out


# ------------------------------------------------------------------------------------------ report


def _settings(spec: Any) -> dict:
    m = spec.metrics
    return {"n_boot": m.n_boot, "level": m.level, "seed": spec.seed}


def sweep_summary(frame: Any, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Any:
    """Long table ``metric, arm, layer, estimate, ci_low, ci_high, n, n_clusters`` for fve_nrm, cos,
    recall (``recall_hit``) and nrmse of every arm except ``clc`` (clustered bootstrap by document)."""
    import warnings

    import polars as pl

    from nla_probe.analysis.stats import summarize

    f = frame.filter(pl.col("arm") != "clc")
    parts = []
    for metric, col in (("fve_nrm", "fve_nrm"), ("cos", "cos"), ("recall", "recall_hit"), ("nrmse", "nrmse")):
        g = f.select("arm", "layer", "doc_id", pl.col(col).cast(pl.Float64).fill_nan(None).alias("value"))
        g = g.drop_nulls("value")
        if g.height == 0:
            continue
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="bootstrap over only")
            s = summarize(g, "value", by=["arm", "layer"], cluster="doc_id", n_boot=n_boot, level=level, seed=seed)
        parts.append(s.select(pl.lit(metric).alias("metric"), pl.all()))
    return pl.concat(parts, how="vertical_relaxed")


def sweep_tests(frame: Any, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Any:
    """Per layer and baseline arm: paired difference of per-sample cosine (``nla`` − baseline), its
    clustered CI, one-sided Wilcoxon p (alternative "greater") and BH-adjusted ``p_bh`` over the table."""
    import warnings

    import polars as pl

    from nla_probe.analysis.stats import bh_adjust, paired_difference

    rows = []
    nla = frame.filter(pl.col("arm") == "nla")
    for base_arm in ("random", "shuffled"):
        other = frame.filter(pl.col("arm") == base_arm)
        if other.height == 0:
            continue
        for L in sorted(nla["layer"].unique().to_list()):
            a = nla.filter(pl.col("layer") == L).select("sample_id", "doc_id", pl.col("cos").alias("a"))
            b = other.filter(pl.col("layer") == L).select("sample_id", pl.col("cos").alias("b"))
            j = a.join(b, on="sample_id", how="inner").drop_nulls().filter(pl.col("a").is_not_nan()
                                                                         & pl.col("b").is_not_nan())
            if j.height < 2:
                continue
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="bootstrap over only")
                c = paired_difference(j["a"].to_numpy(), j["b"].to_numpy(), j["doc_id"].to_numpy(), n_boot=n_boot,
                                      level=level, seed=seed, alternative="greater")
            rows.append({"layer": L, "baseline": base_arm, "diff": c.diff.estimate, "ci_low": c.diff.low,
                         "ci_high": c.diff.high, "n": c.n, "n_clusters": c.diff.n_clusters,
                         "statistic": c.statistic, "p": c.p_value})
    t = pl.DataFrame(rows)
    if t.height:
        t = t.with_columns(pl.Series("p_bh", bh_adjust(t["p"].to_numpy())))
    return t


def clc_table(frame: Any) -> Any:
    """``layer_i, layer_j, clc, cos_recon, cos_gold`` (means over samples) for every pair of swept layers;
    the diagonal ``clc`` is the ``nla`` arm's cosine, ``cos_recon``/``cos_gold`` are 1 there."""
    import polars as pl

    off = frame.filter(pl.col("arm") == "clc").group_by("layer", "target_layer").agg(
        pl.col("cos").mean().alias("clc"), pl.col("cos_recon").mean(), pl.col("cos_gold").mean())
    diag = frame.filter(pl.col("arm") == "nla").group_by("layer").agg(pl.col("cos").mean().alias("clc")).with_columns(
        pl.col("layer").alias("target_layer"), pl.lit(1.0).alias("cos_recon"), pl.lit(1.0).alias("cos_gold"))
    t = pl.concat([off, diag.select(off.columns)], how="vertical_relaxed")
    return t.rename({"layer": "layer_i", "target_layer": "layer_j"}).sort("layer_i", "layer_j")


def trained_layer(frame: Any) -> int:
    """The pair's layer K: the layer whose ``cos_to_k`` is 1 (it is compared with itself)."""
    import polars as pl

    g = frame.filter(pl.col("arm") != "clc").group_by("layer").agg(pl.col("cos_to_k").mean()).sort("cos_to_k")
    return int(g["layer"][-1])


def sweep_report(spec: Any, frame: Any, out_dir: Path) -> list:
    """Report sections: per-layer metrics (table + 2×2 figure), tests, CLC matrices (table + heatmaps)."""
    import warnings

    import polars as pl

    from nla_probe.ablate.markdown import ReportSection
    from nla_probe.ablate.plots import curve, matrix_heatmap, save_png

    st = _settings(spec)
    out_dir = Path(out_dir)
    K = trained_layer(frame)
    summ = sweep_summary(frame, **st)
    means = frame.filter(pl.col("arm") != "clc").group_by("arm", "layer").agg(
        pl.col("cos").mean(), pl.col("recall_hit").mean().alias("recall"), pl.col("nrmse").mean(),
        pl.col("cos_to_k").mean(), pl.col("denominator").first().alias("Var(v_nrm)"))
    table = summ.filter(pl.col("metric") == "fve_nrm").drop("metric").join(means, on=["arm", "layer"], how="left")
    table = table.sort("layer", maintain_order=True)
    p = spec.params
    recheck = float(frame["reextract_cos"].drop_nans().min() or float("nan"))
    pool = min(p["recall_pool"], int(frame.filter(pl.col("arm") == "nla")["sample_id"].n_unique() or 0))
    figs = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        fig = curve(summ.with_columns(pl.col("layer").cast(pl.Float64)), x="layer", group="arm", facet="metric",
                    title=f"{spec.name}: metrics by layer (layer-{K} pair)", xlabel="layer L (output of block L)",
                    ylabel="value", reference_x={f"K={K}": K})
        figs.append((save_png(fig, out_dir / "figures" / f"{spec.name}_layers.png", width=8, height=6),
                     f"fve_nrm (own-layer denominator), cos, recall@{p['recall_k']} (pool {pool}) and nRMSE by "
                     f"layer; ribbons are {spec.metrics.level * 100:g}% clustered CIs; dotted line = trained layer."))
    sections = [ReportSection(
        title=f"{spec.name}: per-layer metrics",
        text=(f"Each arm at each layer L, scored against the layer-L truth. recall = recall@{p['recall_k']} with "
              f"a pool of {pool} (chance {p['recall_k'] / max(pool, 1):.3g}); nrmse = sqrt(2(1 − cos)); "
              "cos_to_k = cos(v_L, v_K) (the trained-layer control); Var(v_nrm) = the layer's denominator. "
              f"Re-extraction check: the smallest cos between re-extracted and stored v_K is {recheck:.6f}."),
        table=table, figures=figs, metric="FVE (each layer's own Var(v_nrm), column Var(v_nrm))")]
    tests = sweep_tests(frame, **st)
    if tests.height:
        sections.append(ReportSection(
            title=f"{spec.name}: nla vs baselines per layer",
            text=("Paired per-sample cosine difference nla − baseline at each layer; Wilcoxon signed-rank, "
                  "alternative 'greater'; p_bh over every test of the report."),
            table=tests, metric="Δcos"))
    if (frame["arm"] == "clc").any():
        clc = clc_table(frame)
        figs = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            lab = clc.with_columns(pl.format("L{}", "layer_i").alias("explanation of"),
                                   pl.format("L{}", "layer_j").alias("scored against"))
            figs.append((save_png(matrix_heatmap(lab, "explanation of", "scored against", "clc",
                                                 title="CLC: cos(AR(explanation of v_i), v_j)", fill_label="cos",
                                                 midpoint=0.0), out_dir / "figures" / f"{spec.name}_clc.png"),
                         "Cross-layer consistency as defined: layer-i explanation replayed through the AR vs the "
                         "layer-j truth."))
            lab2 = lab.with_columns(pl.format("L{}", "layer_j").alias("reconstruction of"))
            figs.append((save_png(matrix_heatmap(lab2, "explanation of", "reconstruction of", "cos_recon",
                                                 title="Prior work's matrix: cos(r_i, r_j)", fill_label="cos",
                                                 midpoint=0.0), out_dir / "figures" / f"{spec.name}_recon_cos.png"),
                         "What prior work computed instead: cosine between the reconstructions of layers i and j "
                         "(no ground truth; diagonal 1)."))
        sections.append(ReportSection(
            title=f"{spec.name}: cross-layer consistency",
            text=("clc[i, j] = mean over samples of cos(AR(AV(v_i)), v_j); cos_recon = mean cos(r_i, r_j) (prior "
                  "work's version); cos_gold = mean cos(v_i, v_j) (how similar the truths themselves are)."),
            table=clc, figures=figs))
    return sections
