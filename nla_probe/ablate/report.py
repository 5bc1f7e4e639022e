"""``report.md`` of an ablation run: one section per experiment (setup, table, figures, caveats),
definitions and provenance (specs, checkpoint identities, data, seeds, versions).

Built by :meth:`nla_probe.ablate.result.AblationResult.write_report` with
:class:`nla_probe.ablate.markdown.Report`; every p value of the report is Benjamini–Hochberg adjusted
together (``bh_scope="report"``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nla_probe.ablate.markdown import CAVEATS, Definitions, Report, ReportSection

_DIFF_COL = "Δ vs baseline [CI] (pairs)"


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}"


def describe_condition(spec: Any, cond: Any) -> str:
    """One markdown line: the condition's hooks, transforms and sampling overrides."""
    parts = []
    if cond.hooks:
        parts.append("hooks: " + ", ".join(_spec_str(h, "hook") for h in cond.hooks))
    if cond.transforms:
        parts.append("transforms: " + " → ".join(_spec_str(t) for t in cond.transforms))
    if cond.sampling or cond.seed is not None:
        s = {**cond.sampling, **({"seed": cond.seed} if cond.seed is not None else {})}
        parts.append("sampling: " + ", ".join(f"{k}={v}" for k, v in s.items()))
    if cond.params:
        parts.append("params: " + ", ".join(f"{k}={v}" for k, v in cond.params.items() if v is not None))
    base = " (baseline)" if cond.name == spec.baseline else ""
    desc = f" — {cond.description}" if cond.description else ""
    return f"- `{cond.name}`{base}: {'; '.join(parts) or 'unchanged'}{desc}"


def _spec_str(d: dict, what: str = "transform") -> str:
    """``name(param=value, ...)`` listing the parameters that differ from the defaults."""
    try:
        if what == "transform":
            from nla_probe.surgery import from_spec

            return f"`{from_spec(dict(d)).describe()}`"
        from nla_probe.hooks import hook_from_spec

        obj = hook_from_spec(dict(d))
        if hasattr(obj, "describe"):
            return f"`{obj.describe()}`"
    except Exception:  # noqa: BLE001 - a description must never break the report
        pass
    params = {k: v for k, v in d.items() if k not in ("name", "version")}
    if not params:
        return f"`{d['name']}`"
    return f"`{d['name']}(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")`"


def _table(summary: Any, baseline: str) -> Any:
    """The summary as rendered: CI cell, diff as text, p numeric, extras rounded by the renderer."""
    import polars as pl

    diff = [
        "—" if r["diff"] is None else
        f"{_fmt(r['diff'])} [{_fmt(r['diff_low'])}, {_fmt(r['diff_high'])}] ({r['n_pairs']} pairs)"
        for r in summary.iter_rows(named=True)
    ]
    keep = ["condition", "estimate", "ci_low", "ci_high", "n", "n_clusters"]
    extras = [c for c in summary.columns if c not in {*keep, "experiment", "metric", "diff", "diff_low", "diff_high",
                                                      "n_pairs", "n_zero", "p", "p_bh"}]
    t = summary.select(keep).with_columns(pl.Series(_DIFF_COL.replace("baseline", baseline), diff),
                                          summary["p"].cast(pl.Float64), pl.lit(None, dtype=pl.Float64).alias("p_bh"))
    return pl.concat([t, summary.select(extras)], how="horizontal")


def _setup_text(result: Any, name: str, spec: Any) -> str:
    info = result.info
    sel = info["selection"][name]
    denom, source = result._denominator(name)
    s = spec.sampling
    decoding = (f"sampled (temperature {s.temperature}, top_p {s.top_p}, seed {spec.seed})" if s.do_sample
                else "greedy")
    m = spec.metrics
    lines = [spec.description.strip()] if spec.description.strip() else []
    lines += [
        "",
        f"**Setup.** Kind `{spec.kind}`. n = {sel['n_selected']} activations from {sel.get('n_docs', '?')} "
        f"documents ({'the first ' + str(sel['n_limit']) if sel['n_limit'] else 'all'} rows of the data file"
        f"{', shard ' + str(sel['shard']) if sel.get('shard') else ''}); decoding {decoding}, at most "
        f"{s.max_new_tokens} new tokens; AR overflow policy `{m.on_overflow}`.",
        f"Primary metric `{m.primary}`; FVE denominator Var(v_nrm) = {denom:.6g} ({source}). "
        f"CIs: {m.level * 100:g}% clustered percentile bootstrap over documents, {m.n_boot} resamples, seed "
        f"{spec.seed}. Tests: Wilcoxon signed-rank on per-{m.wilcoxon_unit} paired differences against "
        f"`{spec.baseline}`.",
        "",
        "**Conditions.**",
        "",
        *[describe_condition(spec, c) for c in spec.conditions],
    ]
    return "\n".join(lines)


def build_report(result: Any, out: Path) -> Path:
    """Write the report of ``result`` into ``out``; returns the path of ``report.md``."""
    import warnings

    from nla_probe.ablate.kinds import get_experiment
    from nla_probe.ablate.plots import save_png

    summary_all = result.summary()
    specs = {n: result.spec(n) for n in result.experiments}
    denoms = {result._denominator(n) for n in result.experiments}
    first = specs[result.experiments[0]]
    column_docs: dict[str, str] = {}
    sections = []
    for name, spec in specs.items():
        kind = get_experiment(spec.kind)
        column_docs.update(kind.column_docs)
        s = result.summary(name) if summary_all.height else summary_all
        text = _setup_text(result, name, spec)
        extra = kind().section_text(spec, s)
        if extra:
            text += "\n\n" + extra
        figures = []
        if s.height:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=UserWarning)
                warnings.filterwarnings("ignore", category=FutureWarning)
                fig = save_png(result.plot(name, "metric"), out / "figures" / f"{name}_{spec.metrics.primary}.png",
                               width=7.0, height=max(2.5, 0.45 * s.height + 1.5))
                figures.append((fig, f"{spec.metrics.primary} per condition, {spec.metrics.level * 100:g}% CI "
                                     "(clustered by document); bar labels give the mean and n."))
                if s["diff"].is_not_null().any():
                    fig = save_png(result.plot(name, "diff"), out / "figures" / f"{name}_diff.png",
                                   width=7.0, height=max(2.5, 0.45 * (s.height - 1) + 1.5))
                    figures.append((fig, f"paired difference to `{spec.baseline}` on the same activations."))
        caveats = list(kind().caveats(spec))
        if result.info["denominators"][name].get("auto"):
            caveats.append("The FVE denominator was computed on the evaluation activations, not taken from "
                           "the training set as for released numbers; FVE values are comparable within this "
                           "report only.")
        if spec.metrics.wilcoxon_unit == "sample":
            caveats.append(CAVEATS["per_sample_wilcoxon"])
        sections.append(ReportSection(
            title=f"{name}", text=text, table=_table(s, spec.baseline) if s.height else None,
            figures=figures, caveats=caveats, metric=spec.metrics.primary))
        sections += kind().report_sections(spec, result.scan(name).collect(), out)
    denom = next(iter(denoms)) if len(denoms) == 1 else None
    extra_defs = {
        "Δ vs baseline": "condition − baseline on the same activations (paired on sample_id); "
                         "(pairs) = number of paired activations.",
        "tag_ok": "share of decodes with both <explanation> tags.",
        "n_tokens": "mean number of generated AV tokens (stop token excluded).",
        "ar_tokens": "mean AR prompt length in tokens (template + edited explanation).",
        **column_docs,
    }
    if denom is None:
        extra_defs["denominators"] = "differ between experiments; each section states its own."
    defs = Definitions(denominator=denom[0] if denom else None, denominator_source=denom[1] if denom else "",
                       n_boot=first.metrics.n_boot, level=first.metrics.level, seed=first.seed,
                       wilcoxon_unit=first.metrics.wilcoxon_unit, extra=extra_defs)
    prov = {k: v for k, v in result.info.items() if k != "format"}
    report = Report("nla-probe ablation report", prov, definitions=defs, bh_scope="report")
    for sec in sections:
        report.add_section(sec)
    return report.write(out, overwrite=True)


__all__ = ["build_report", "describe_condition"]
