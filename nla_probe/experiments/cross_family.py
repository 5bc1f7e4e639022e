"""``cross_family``: the 2×2 transfer matrix between two NLA families with different tokenizers.

Family A is the run's pair and data (its evaluation activations v_A at layer K_A); family B is
given by ``params.other_av`` / ``params.other_ar`` and its base LM.  Every evaluation position is
mapped to B's tokenization by character offset (:mod:`nla_probe.analysis.alignment`: the B token whose span
contains the A token's last character; ``align_error`` = |end difference| in characters), and v_B
is extracted there at B's layer K_B (:mod:`nla_probe.nla.layers`).  Positions whose aligned B index
exceeds ``params.max_other_position`` (>= 0; e.g. the B base model's training context) are dropped
and counted.

Cell (row AV X, column AR Y): AV_X(v_X) → explanation → AR_Y → reconstruction, scored against the
column family's own gold v_Y with the column family's FVE denominator B_Y (A: the run's
denominator; B: ``params.other_denominator``; ``"auto"`` = the training-set Var(v_nrm) in
``<other_av>/../metrics.json`` (toy layout) when present, else Var(v_nrm) of the selected v_B).
Diagonal cells are the within-family round trips; off-diagonal cells are the transfers.

Null per cell: the reconstruction of sample π(i) scored against gold i, π from
:func:`nla_probe.experiments.vector_common.shuffle_pairs` (rows of other documents), seed = the
spec's seed.  Rows of the null have condition ``<condition>:null`` and ``null = True``.  A row's
``position`` is the token index in the scored (column) family's tokenization; ``tgt_position`` is
always B's.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nla_probe.ablate.kinds import ExperimentKind, register_experiment
from nla_probe.ablate.spec import REQUIRED, Field
from nla_probe.errors import InputError, SpecError
from nla_probe.experiments.vector_common import (
    decode_fields,
    reconstruct_cached,
    rows_block,
    rowwise_cos,
    shuffle_pairs,
    spec_sampling,
)
from nla_probe.nla.layers import LazyBase

SIDES = ("self", "other")


def _denominator_check(v: Any) -> str | None:
    if isinstance(v, str):
        return None
    return None if math.isfinite(v) and v > 0 else "expected 'auto', a registered name or a positive number"


def _default_other(role: str) -> str:
    from nla_probe.defaults import TOY_SECOND_FAMILY

    return f"data/toy/{TOY_SECOND_FAMILY}/{role}"


FAMILY_PARAMS: dict[str, Field] = {
    "base_model": Field((str,), "auto", "family A's base LM ('auto' = <av_dir>/../base)"),
    "other_av": Field((str,), _default_other("av"), "family B's AV directory"),
    "other_ar": Field((str,), _default_other("ar"), "family B's AR directory"),
    "other_base_model": Field((str,), "auto", "family B's base LM ('auto' = <other_av>/../base)"),
    "other_denominator": Field((str, float), "auto", "family B's FVE denominator: 'auto' (the training-set value "
                               "in <other_av>/../metrics.json if present, else Var(v_nrm) of the selected v_B), a "
                               "registered name or a number", _denominator_check),
    "max_other_position": Field((int,), -1, "drop positions whose aligned B token index exceeds this (-1: keep all)"),
    "extract_batch": Field((int,), 8, "documents per forward pass of a base model",
                           lambda v: None if v >= 1 else "expected an integer >= 1"),
}


def _resolve_dir(value: str, where: str) -> Path:
    from nla_probe.defaults import REPO_ROOT

    p = Path(value)
    for c in ([p] if p.is_absolute() else [p, REPO_ROOT / p]):
        if c.is_dir():
            return c
    raise InputError(f"{where}: expected an existing checkpoint directory, found none at {value!r}")


def family_name(av_dir: Any) -> str:
    """A family's display name: the directory holding its ``av/`` (e.g. ``qwen_small``), else the AV dir name."""
    p = Path(av_dir).resolve()
    return p.parent.name if p.name in ("av", "actor") else p.name


@dataclass
class TwoFamilies:
    """Both families' vectors at the aligned positions of the evaluation selection.

    Attributes:
        names: ``{"self": name of A, "other": name of B}``.
        ctx: ``{"self": the run context, "other": a context of B's pair on the same store}``.
        gold: ``{"self": v_A [n, d_A], "other": v_B [n, d_B]}`` of the kept rows.
        denominator: ``{"self": B_A, "other": B_B}`` and ``denominator_source`` likewise.
        frame: the kept selection rows with ``tgt_position``, ``align_error``, ``align_fallback``.
        n_dropped: rows dropped because the aligned B position exceeded ``max_other_position``.
    """

    names: dict
    ctx: dict
    gold: dict
    denominator: dict
    denominator_source: dict
    frame: Any
    n_dropped: int

    def chunks(self, side: str) -> list:
        """Chunks of the kept rows (batch_size rows each) carrying that side's vectors and positions."""
        from nla_probe.ablate.engine import Chunk, vectors_hash

        bs = self.ctx["self"].batch_size
        f = self.frame
        ids, docs = f["sample_id"].to_list(), f["doc_id"].to_list()
        pos = f["position" if side == "self" else "tgt_position"].to_list()
        out = []
        for k, s in enumerate(range(0, f.height, bs)):
            v = np.ascontiguousarray(self.gold[side][s:s + bs], dtype=np.float32)
            out.append(Chunk(k, tuple(ids[s:s + bs]), tuple(docs[s:s + bs]), tuple(pos[s:s + bs]), v,
                             vectors_hash(v)))
        return out


def auto_denominator(av_dir: Path, vectors: np.ndarray) -> tuple[float, str]:
    """Family B's ``"auto"`` denominator: ``denominator`` of ``<av_dir>/../metrics.json`` (the toy layout's
    training-set Var(v_nrm)) when present, else Var(v_nrm) of ``vectors`` (the selected evaluation rows)."""
    from nla_probe.analysis.metrics import variance_baseline

    path = Path(av_dir).parent / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        value = float(metrics["denominator"])
        source = metrics.get("denominator_source") or "training activations"
        return value, f"{family_name(av_dir)}: {source} ({path})"
    except (OSError, ValueError, KeyError, TypeError):
        return variance_baseline(vectors), (f"Var(v_nrm) of the {len(vectors)} selected family-B vectors at the "
                                            "aligned positions (evaluation data, not the training set)")


def setup_two_families(spec: Any, ctx: Any) -> TwoFamilies:
    """Align the selection to family B, extract v_B, open B's pair on the run's store (module doc)."""
    import polars as pl

    from nla_probe.ablate.engine import ActivationData, PairHandle, RunContext, resolve_denominator
    from nla_probe.analysis.alignment import align_frame
    from nla_probe.nla.layers import cached_layers

    p = spec.params
    other_av, other_ar = _resolve_dir(p["other_av"], "params.other_av"), _resolve_dir(p["other_ar"], "params.other_ar")
    h = ctx.handle
    hb = PairHandle(None, other_av, other_ar, backend=h.backend, device=h.device, dtype=h.dtype,
                    backend_options=h.backend_options)
    base_b = LazyBase(p["other_base_model"], other_av, "params.other_base_model")
    if base_b.n_blocks <= hb.contract.layer:
        raise InputError(f"params.other_base_model: {base_b.path} has {base_b.n_blocks} blocks, the B pair reads "
                         f"layer {hb.contract.layer}")
    frame = align_frame(ctx.data.frame, base_b.tokenizer)
    keep = np.ones(frame.height, dtype=bool)
    if p["max_other_position"] >= 0:
        keep = frame["tgt_position"].to_numpy() <= p["max_other_position"]
    kept = frame.filter(pl.Series(keep))
    if kept.height < 2:
        raise InputError(f"cross-family alignment kept {kept.height} of {frame.height} rows "
                         f"(params.max_other_position = {p['max_other_position']})")
    v_a = ctx.data.vectors[keep]
    bs = ctx.batch_size
    parts = []
    for s in range(0, kept.height, bs):
        got = cached_layers(ctx.cached, base_b, kept.slice(s, bs), [hb.contract.layer], position_col="tgt_position",
                            check_tokens=False, batch_size=p["extract_batch"])
        parts.append(got[hb.contract.layer])
    v_b = np.concatenate(parts)
    data_b = ActivationData(kept, v_b, {"path": "<aligned to family A's selection>"})
    if p["other_denominator"] == "auto":
        den_b = auto_denominator(other_av, v_b)
    else:
        den_b = resolve_denominator(p["other_denominator"], None, data_b)
    ctx_b = RunContext(spec, hb, ctx.store, data_b, bs, den_b, progress=False)
    ctx_b.counts = ctx.counts  # one tally for the run's info.json
    return TwoFamilies({"self": family_name(h.av_dir), "other": family_name(other_av)}, {"self": ctx, "other": ctx_b},
                       {"self": v_a, "other": v_b}, {"self": ctx.denominator[0], "other": den_b[0]},
                       {"self": ctx.denominator[1], "other": den_b[1]}, kept, int((~keep).sum()))


def family_roundtrips(spec: Any, fam: TwoFamilies, cells: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """For each (av side, ar side): decodes of the AV side's gold, reconstructed by the AR side.

    Returns ``{(av, ar): {"vectors", "explanation", "tag_status", "n_tokens", "finish_reason",
    "text", "ar_tokens", "overflow"}}`` over all kept rows (decodes and reconstructions cached).
    """
    sampling = spec_sampling(spec)
    decodes: dict[str, dict] = {}
    for av in sorted({a for a, _ in cells}):
        c = fam.ctx[av]
        rows: list = []
        for chunk in fam.chunks(av):
            rows += c.decode(chunk, (), sampling)
        decodes[av] = decode_fields(rows)
    out = {}
    ctx = fam.ctx["self"]
    bs = ctx.batch_size
    for av, ar in cells:
        texts = decodes[av]["explanation"]
        parts = [reconstruct_cached(ctx, texts[s:s + bs], handle=fam.ctx[ar].handle) for s in range(0, len(texts), bs)]
        out[(av, ar)] = {**decodes[av], "text": list(texts),
                         "vectors": np.concatenate([q["vectors"] for q in parts]),
                         "ar_tokens": [x for q in parts for x in q["ar_tokens"]],
                         "overflow": [x for q in parts for x in q["overflow"]]}
    return out


@register_experiment
class CrossFamily(ExperimentKind):
    """2×2 transfer matrix between two families, with shuffled-pair nulls (module doc)."""

    name = "cross_family"
    description = "row AV's explanation → column AR, scored against the column family's gold, with nulls"
    condition_keys = ("params",)
    params = FAMILY_PARAMS
    condition_params = {
        "av": Field((str,), REQUIRED, "whose AV explains: 'self' (the run's pair) or 'other'",
                    lambda v: None if v in SIDES else f"expected one of {list(SIDES)}"),
        "ar": Field((str,), REQUIRED, "whose AR reconstructs (and whose gold scores): 'self' or 'other'",
                    lambda v: None if v in SIDES else f"expected one of {list(SIDES)}"),
    }
    columns = {"av_family": "Utf8", "ar_family": "Utf8", "cell": "Utf8", "null": "Boolean", "tgt_position": "Int64",
               "align_error": "Int64", "align_fallback": "Boolean", "denominator": "Float64", "dropped_rows": "Int64"}
    column_docs = {
        "cell": "within (AV and AR of one family) or cross (transfer).",
        "null": "shuffled-pair null: another document's reconstruction scored against this gold.",
        "align_error": "|B token end − A token end| in characters at the aligned position.",
        "denominator": "FVE denominator of the row: the column (AR) family's Var(v_nrm).",
        "dropped_rows": "evaluation rows dropped because their aligned B position exceeded max_other_position.",
    }
    summary_means = {"align_error": "align_error"}

    @classmethod
    def validate(cls, spec: Any) -> None:
        cells = [(c.params["av"], c.params["ar"]) for c in spec.conditions]
        dup = sorted({x for x in cells if cells.count(x) > 1})
        if dup:
            raise SpecError(f"conditions: cell(s) {dup} appear more than once")

    def run(self, spec: Any, ctx: Any) -> Iterator[dict[str, list]]:
        fam = setup_two_families(spec, ctx)
        cells = [(c.params["av"], c.params["ar"]) for c in spec.conditions]
        rt = family_roundtrips(spec, fam, cells)
        f = fam.frame
        sids, docs = f["sample_id"].to_list(), f["doc_id"].to_list()
        perm = shuffle_pairs(docs, spec.seed)
        n = f.height
        for cond, (av, ar) in zip(spec.conditions, cells):
            r = rt[(av, ar)]
            gold = fam.gold[ar]
            pos = f["position" if ar == "self" else "tgt_position"].to_list()
            extra = {"av_family": [fam.names[av]] * n, "ar_family": [fam.names[ar]] * n,
                     "cell": ["within" if av == ar else "cross"] * n, "tgt_position": f["tgt_position"].to_list(),
                     "align_error": f["align_error"].to_list(), "align_fallback": f["align_fallback"].to_list(),
                     "dropped_rows": [fam.n_dropped] * n}
            for null in (False, True):
                idx = perm if null else np.arange(n)
                pred = r["vectors"][idx]
                cos = rowwise_cos(pred, gold)
                dec = {k: [r[k][j] for j in idx] for k in ("explanation", "tag_status", "n_tokens", "finish_reason",
                                                           "text", "ar_tokens", "overflow")}
                yield rows_block(spec, cond.name + (":null" if null else ""), sids, docs, pos, dec, dec["text"],
                                 dec["ar_tokens"], dec["overflow"], 2.0 * (1.0 - cos), cos, fam.denominator[ar],
                                 {**extra, "null": [null] * n})

    def section_text(self, spec: Any, summary: Any) -> str:
        return ("Each condition is one cell of the transfer matrix (row AV → column AR); `:null` rows pair each "
                "gold with another document's reconstruction. **fve_nrm uses the column (AR) family's "
                "denominator** (column `denominator`), so rows scored against family B do not use the denominator "
                "stated above.")

    def caveats(self, spec: Any) -> list[str]:
        from nla_probe.ablate.markdown import CAVEATS

        return ([CAVEATS["greedy"]] if not spec.sampling.do_sample else []) + [
            "Cross cells feed one family's explanations to the other family's AR, which never saw them in "
            "training: out of distribution, so a lower bound on what the text carries."]

    def report_sections(self, spec: Any, frame: Any, out_dir: Path) -> list:
        return transfer_report(spec, frame, out_dir)


def transfer_matrix(frame: Any, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Any:
    """One row per cell: ``av_family, ar_family, cell``, fve_nrm [CI] (``estimate, ci_low, ci_high, n,
    n_clusters``), the null's mean FVE and CI, the within-family ceiling of the column family and the
    cell's share of it (null when the ceiling is <= 0), mean cos, and the mean/max alignment error in
    characters."""
    import polars as pl

    from nla_probe.analysis.stats import cluster_bootstrap_ci

    rows = []
    for (av, ar, null), g in frame.group_by(["av_family", "ar_family", "null"], maintain_order=True):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="bootstrap over only")
            ci = cluster_bootstrap_ci(g["fve_nrm"].to_numpy(), g["doc_id"].to_numpy(), n_boot=n_boot, level=level,
                                      seed=seed, nan_policy="omit")
        rows.append({"av_family": av, "ar_family": ar, "null": null, "cell": g["cell"][0], "estimate": ci.estimate,
                     "ci_low": ci.low, "ci_high": ci.high, "n": ci.n, "n_clusters": ci.n_clusters,
                     "cos": float(g["cos"].mean()), "denominator": float(g["denominator"][0]),
                     "align_error_mean": float(g["align_error"].mean()), "align_error_max": int(g["align_error"].max())})
    t = pl.DataFrame(rows)
    real, null = t.filter(~pl.col("null")), t.filter(pl.col("null"))
    null = null.select("av_family", "ar_family", pl.col("estimate").alias("null_fve"),
                       pl.format("[{}, {}]", pl.col("ci_low").round(3), pl.col("ci_high").round(3)).alias("null_ci"))
    ceiling = real.filter(pl.col("cell") == "within").select(pl.col("ar_family"), pl.col("estimate").alias("ceiling"))
    out = real.join(null, on=["av_family", "ar_family"], how="left").join(ceiling, on="ar_family", how="left")
    share = pl.when(pl.col("ceiling") > 0).then(pl.col("estimate") / pl.col("ceiling")).otherwise(None)
    return out.with_columns(share.alias("share_of_ceiling")).drop("null")


def transfer_report(spec: Any, frame: Any, out_dir: Path) -> list:
    """Report section: the transfer matrix table and heatmap."""
    import polars as pl

    from nla_probe.ablate.markdown import ReportSection
    from nla_probe.ablate.plots import matrix_heatmap, save_png

    m = spec.metrics
    t = transfer_matrix(frame, m.n_boot, m.level, spec.seed)
    lab = t.with_columns(pl.format("AV {}", "av_family").alias("explanation from"),
                         pl.format("AR {}", "ar_family").alias("reconstructed by"),
                         pl.format("{} [{}, {}]\n{} · null {}", pl.col("estimate").round(3), pl.col("ci_low").round(3),
                                   pl.col("ci_high").round(3), "cell", pl.col("null_fve").round(2)).alias("label"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        fig = save_png(matrix_heatmap(lab, "explanation from", "reconstructed by", "estimate", label="label",
                                      title=f"{spec.name}: transfer matrix (fve_nrm)"),
                       Path(out_dir) / "figures" / f"{spec.name}_matrix.png", width=6.5, height=4)
    sub = frame.filter(~pl.col("null"))
    err = sub.group_by("sample_id").agg(pl.col("align_error").first(), pl.col("align_fallback").first())
    text = (f"Positions aligned across tokenizers by character offset: mean error "
            f"{err['align_error'].mean():.2f} characters, {float((err['align_error'] == 0).mean()):.1%} exact, "
            f"max {err['align_error'].max()}, {int(err['align_fallback'].sum())} fallbacks (no B span contained the "
            "A token's last character); "
            f"{int(sub['dropped_rows'].max() or 0)} evaluation rows dropped beyond max_other_position. Each cell is scored against the column family's own gold with that "
            "family's denominator; share_of_ceiling = cell FVE / the column family's within-family FVE.")
    return [ReportSection(title=f"{spec.name}: transfer matrix", text=text, table=t,
                          figures=[(fig, "Row AV → column AR; cell text: FVE [CI], cell type and shuffled-pair null.")],
                          metric="FVE (column family's Var(v_nrm), column denominator)")]
