"""``corroborate``: the round-trip FVE of an NLA pair with its CI, its denominator, and three nulls.

One unedited decode per activation (the spec's ``[sampling]``, no hooks).  Each condition chooses
the text the AR reads against the activation's gold vector (``[conditions.params] text``):

* ``"explanation"`` — the activation's own explanation: the round trip (make it the baseline).
* ``"shuffled"`` — the explanation of another activation of the evaluated set (**shuffled
  explanation null**).  The partner is a seeded derangement: a permutation with no fixed point,
  which also never pairs two positions of the same document whenever no document holds more than
  half of the rows (see :func:`nla_probe.copying.nulls.rotation_derangement`).  The ``partner`` column holds the
  ``sample_id`` whose explanation was scored.
* ``"empty"`` — the empty string (the AR template around nothing): the **empty-explanation null**.
* ``"source"`` — the raw document text up to and including the activation's token
  (``source_text[:char_end]``), or only its last ``window_chars`` characters (**raw-source
  control**: the AR reads the context itself instead of an explanation).  Needs the data file's
  ``source_text`` and ``char_end`` columns.  An AR prompt longer than the AR's context is cut by
  the spec's ``metrics.on_overflow`` policy, which keeps the *beginning* of the text; use
  ``window_chars`` so that the end of the context, next to the activation, is what the AR reads.

Extra columns (per row):

* ``fve_eval_var`` — ``1 − mse_nrm / Var_eval`` with ``Var_eval`` = Var(v_nrm) of the evaluated
  activations (this run's selection), next to ``fve_nrm`` computed with the spec's denominator
  (for a corroboration: the registered training-set constant).
* ``var_eval`` — that ``Var_eval`` (the same on every row of a run).
* ``fve_above`` — ``fve_nrm > params.fve_threshold`` (default 0.5); its mean is the share of
  samples above the threshold.
* ``partner`` — the ``sample_id`` whose text was scored (``shuffled``: the partner; otherwise the
  row's own id).

Parameters (``[params]``): ``fve_threshold`` (0.5) and ``reference = {fve = ..., source = "..."}``
(a published round-trip FVE to compare with, e.g. a model card's figure; optional).  The
derangement is drawn with the spec's ``seed``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nla_probe.ablate.kinds import ExperimentKind, register_experiment
from nla_probe.ablate.spec import Field
from nla_probe.copying.nulls import rotation_derangement, source_context
from nla_probe.errors import InputError, SpecError

TEXT_MODES = ("explanation", "shuffled", "empty", "source")


def _reference_check(v: dict) -> str | None:
    if not v:
        return None
    if set(v) != {"fve", "source"}:
        return "expected a table with exactly the keys 'fve' and 'source'"
    if isinstance(v["fve"], bool) or not isinstance(v["fve"], (int, float)) or not math.isfinite(v["fve"]):
        return "expected reference.fve to be a finite number"
    if not isinstance(v["source"], str) or not v["source"]:
        return "expected reference.source to be a non-empty string"
    return None


def _mode_check(v: str) -> str | None:
    return None if v in TEXT_MODES else f"expected one of {list(TEXT_MODES)}"


def _finite(v: float) -> str | None:
    return None if math.isfinite(v) else "expected a finite number"


@register_experiment
class Corroborate(ExperimentKind):
    """Round trip, denominator check and nulls (see module doc)."""

    name = "corroborate"
    description = ("round-trip FVE with CI, evaluation-set vs reference denominator, share above a threshold, "
                   "tag failures; shuffled-explanation, empty-explanation and raw-source nulls")
    condition_keys = ("params",)
    params = {
        "fve_threshold": Field((float,), 0.5, "fve_above = fve_nrm > this", _finite),
        "reference": Field((dict,), dict, "a published round-trip FVE to compare with: {fve = 0.752, source = "
                           "\"...\"} (empty: none)", _reference_check),
    }
    condition_params = {
        "text": Field((str,), "explanation", f"what the AR reads: one of {list(TEXT_MODES)}", _mode_check),
        "window_chars": Field((int,), 0, "text = 'source': keep the last this many characters (0 = all)",
                              lambda v: None if v >= 0 else "expected an integer >= 0"),
    }
    columns = {"fve_eval_var": "Float64", "var_eval": "Float64", "fve_above": "Boolean", "partner": "Int64"}
    column_docs = {
        "fve_eval_var": "1 − mse_nrm / Var_eval, Var_eval = Var(v_nrm) of the evaluated activations.",
        "var_eval": "Var(v_nrm) of the evaluated activations (this run's selection).",
        "fve_above": "share of samples whose fve_nrm exceeds params.fve_threshold (default 0.5).",
        "partner": "sample_id whose text was scored against the row's gold vector (shuffled null: another "
                   "activation's explanation).",
    }
    summary_means = {"fve_eval_var": "fve_eval_var", "var_eval": "var_eval", "fve_above": "fve_above"}

    @classmethod
    def validate(cls, spec: Any) -> None:
        base = spec.condition(spec.baseline)
        if base.params["text"] != "explanation":
            raise SpecError(f"baseline: condition {spec.baseline!r} must read the explanation (params.text = "
                            f"'explanation') for kind 'corroborate', found {base.params['text']!r}")
        for c in spec.conditions:
            if c.params["window_chars"] and c.params["text"] != "source":
                raise SpecError(f"conditions ({c.name!r}).params.window_chars: only used with text = 'source', "
                                f"found text = {c.params['text']!r}")

    # ------------------------------------------------------------------------------------ run

    def run(self, spec: Any, ctx: Any) -> Iterator[dict[str, list]]:
        from nla_probe.analysis.metrics import variance_baseline

        modes = [(c, c.params["text"]) for c in spec.conditions]
        frame = ctx.data.frame
        has_source = any(m == "source" for _, m in modes)
        if has_source:
            missing = [c for c in ("source_text", "char_end") if c not in frame.columns]
            if missing:
                raise InputError(f"data ({ctx.data.info.get('path')}): the 'source' condition needs column(s) "
                                 f"{missing}; found {frame.columns}")
        var_eval = float(variance_baseline(ctx.data.vectors))
        row_of = {int(s): i for i, s in enumerate(frame["sample_id"].to_list())}
        sources = frame["source_text"].to_list() if has_source else []
        ends = frame["char_end"].to_list() if has_source else []
        sampling = {**spec.sampling.to_dict(), "seed": spec.seed}
        threshold = spec.params["fve_threshold"]
        need_shuffle = any(m == "shuffled" for _, m in modes)
        decodes_all: list[dict] = []
        chunks = []

        def rows_for(chunk: Any, cond: Any, decodes: list, texts: list, partners: list) -> dict[str, list]:
            scores = ctx.score(chunk, texts)
            rows = ctx.base_rows(chunk, cond.name, decodes, texts, scores)
            rows["fve_eval_var"] = [1.0 - m / var_eval for m in scores["mse_nrm"]]
            rows["var_eval"] = [var_eval] * len(chunk)
            rows["fve_above"] = [f > threshold for f in rows["fve_nrm"]]
            rows["partner"] = partners
            return rows

        for chunk in ctx.chunks():
            decodes = ctx.decode(chunk, (), sampling)
            if need_shuffle:
                decodes_all.extend(decodes)
                chunks.append(chunk)
            own = [int(s) for s in chunk.sample_ids]
            batch: dict[str, list] = {}
            for cond, mode in modes:
                if mode == "shuffled":
                    continue
                if mode == "explanation":
                    texts = [d["explanation"] for d in decodes]
                elif mode == "empty":
                    texts = [""] * len(chunk)
                else:
                    texts = [source_context(sources[row_of[s]], int(ends[row_of[s]]),
                                             window_chars=cond.params["window_chars"] or None)
                             for s in own]
                for k, v in rows_for(chunk, cond, decodes, texts, own).items():
                    batch.setdefault(k, []).extend(v)
            if batch:
                yield batch
        if not need_shuffle:
            return
        partner, n_same = rotation_derangement(frame["doc_id"].to_list(), spec.seed)
        if n_same:
            warnings.warn(f"shuffled-explanation null: {n_same} of {len(partner)} rows are paired with another "
                          "position of their own document (one document holds more than half of the rows)",
                          stacklevel=2)
        ids = frame["sample_id"].to_list()
        for chunk in chunks:
            batch = {}
            rows = [row_of[int(s)] for s in chunk.sample_ids]
            src = [int(partner[r]) for r in rows]
            decodes = [decodes_all[i] for i in src]
            texts = [d["explanation"] for d in decodes]
            for cond, mode in modes:
                if mode != "shuffled":
                    continue
                for k, v in rows_for(chunk, cond, decodes, texts, [int(ids[i]) for i in src]).items():
                    batch.setdefault(k, []).extend(v)
            yield batch

    # ------------------------------------------------------------------------------------ report

    def section_text(self, spec: Any, summary: Any) -> str:
        if summary.height == 0:
            return ""
        rows = {r["condition"]: r for r in summary.iter_rows(named=True)}
        base = rows.get(spec.baseline)
        if base is None:
            return ""
        n = base["n"]
        thr = spec.params["fve_threshold"]
        lines = [
            f"**Round trip.** FVE {base['estimate']:.3f} [{base['ci_low']:.3f}, {base['ci_high']:.3f}] (n={n}, "
            f"{base['n_clusters']} docs); with the evaluation set's own Var(v_nrm) = {base['var_eval']:.4g} as the "
            f"denominator: {base['fve_eval_var']:.3f}. Share of samples with FVE > {thr:g}: "
            f"{round(base['fve_above'] * n)}/{n} ({base['fve_above']:.1%}). Decodes without both explanation "
            f"tags: {round((1 - base['tag_ok']) * n)}/{n}.",
        ]
        if spec.params["reference"]:
            ref, where = float(spec.params["reference"]["fve"]), spec.params["reference"]["source"]
            inside = base["ci_low"] <= ref <= base["ci_high"]
            lines.append(f"Reference round-trip FVE {ref:.3f} ({where}): {'inside' if inside else 'outside'} "
                         "the CI above.")
        return "\n\n".join(lines)

    def report_sections(self, spec: Any, frame: Any, out_dir: Path) -> list:
        """A section with the denominator check, the share above the threshold per condition (clustered
        CIs), the tag status of the decodes and a histogram of per-sample FVE by condition."""
        import warnings

        import polars as pl
        from plotnine import guide_legend, guides

        from nla_probe.ablate.markdown import ReportSection
        from nla_probe.ablate.plots import histogram_compare, save_png
        from nla_probe.analysis.stats import summarize

        if frame.height == 0:
            return []
        m = spec.metrics
        thr = spec.params["fve_threshold"]
        base = frame.filter(pl.col("condition") == spec.baseline)
        var_eval = float(base["var_eval"][0]) if base.height else float("nan")
        # fve_nrm = 1 − mse_nrm / B on every row, so B = mse_nrm / (1 − fve_nrm) recovers the denominator used.
        ok = base.filter((pl.col("fve_nrm") < 1.0) & pl.col("fve_nrm").is_not_nan())
        used = float((ok["mse_nrm"] / (1.0 - ok["fve_nrm"])).median()) if ok.height else float("nan")
        text = [f"Var(v_nrm) of the {base.height} evaluated activations = {var_eval:.4g}; the denominator of "
                f"fve_nrm = {used:.4g} (its source is stated in the setup above); ratio evaluation / used = "
                f"{var_eval / used:.3f}. Table: share of samples with fve_nrm > {thr:g} per condition (mean of an "
                "indicator, clustered CI)."]
        if base.height:
            tags = base.group_by("tag_status").len().sort("tag_status")
            text.append("Tag status of the decodes (`ok` = both explanation tags): " +
                        ", ".join(f"{r['tag_status']} {r['len']}/{base.height}" for r in tags.iter_rows(named=True))
                        + ".")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="bootstrap over only")
            above = summarize(frame.with_columns(pl.col("fve_above").cast(pl.Float64)), "fve_above",
                              by=["condition"], n_boot=m.n_boot, level=m.level, seed=spec.seed)
        order = {c.name: i for i, c in enumerate(spec.conditions)}
        above = above.sort(pl.col("condition").replace_strict(order, default=len(order), return_dtype=pl.Int64))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            plot = histogram_compare(frame.select("fve_nrm", "condition").drop_nulls().drop_nans(), "fve_nrm",
                                     "condition", title=f"{spec.name}: per-sample fve_nrm by condition",
                                     xlabel=f"fve_nrm (Var(v_nrm) = {used:.4g})",
                                     reference_lines={"predict-the-mean": 0.0, "threshold": thr})
            plot += guides(fill=guide_legend(nrow=2))
            path = save_png(plot, Path(out_dir) / "figures" / f"{spec.name}_fve_hist.png", width=7.0, height=4.0)
        return [ReportSection(
            title=f"{spec.name}: denominator, share above {thr:g}, tags", text="\n\n".join(text), table=above,
            figures=[(path, "per-sample fve_nrm by condition (dashed: condition means; dotted: 0 and the "
                            f"{thr:g} threshold).")],
            metric=f"share fve_nrm > {thr:g}")]

    def caveats(self, spec: Any) -> list[str]:
        from nla_probe.ablate.markdown import CAVEATS

        out = []
        if not spec.sampling.do_sample:
            out.append(CAVEATS["greedy"])
        if any(c.params["text"] == "source" for c in spec.conditions):
            out.append("The raw-source control is out of the AR's training distribution (it was trained on "
                       "explanations, not documents).")
        return out
