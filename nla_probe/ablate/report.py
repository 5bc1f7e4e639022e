"""``report.md`` of an ablation run: one section per experiment (setup, table, figures, caveats),
definitions and provenance (specs, checkpoint identities, data, seeds, versions).

Built by :meth:`nla_probe.ablate.result.AblationResult.write_report` with
:class:`nla_probe.ablate.markdown.Report`; every p value of the report is Benjamini–Hochberg adjusted
together (``bh_scope="report"``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from nla_probe.ablate.markdown import (
    CAVEATS,
    Definitions,
    Report,
    ReportSection,
    relative_paths,
)

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


_TOY_AV = re.compile(r"(?:^|/)data/toy/([^/]+)/av/?$")


def toy_family(info: dict) -> str | None:
    """The toy family of the run's pair (``qwen_small``, ...) if its AV is one of the embedded toy
    checkpoints (``.../data/toy/<family>/av``), else None."""
    path = str(((info.get("pair") or {}).get("av") or {}).get("path") or "").replace("\\", "/")
    m = _TOY_AV.search(path)
    return m.group(1) if m else None


def toy_preface(family: str) -> str:
    """What a toy run's numbers can and cannot show (facts from docs/toy.md)."""
    return (
        f"> **This run used the embedded toy pair `{family}`** (`data/toy/{family}`): Qwen2-architecture "
        "models of 1–2 M parameters trained for minutes on a CPU on 2.9 MB of dictionary prose (model "
        "card: `docs/toy.md`).\n>\n"
        "> Its numbers **can show** that the pipeline runs end to end and what each experiment measures: "
        "conditions, paired differences with CIs and tests, leak audits, figures — on a pair whose "
        "explanations are known exactly.\n>\n"
        "> They **cannot show** anything about real language models or the released 7B–70B NLA pairs. The "
        "toy's explanations are a template written by a program (the current token and the two before it in "
        "quotes, the genre, the position, the kind of token), so a quote ban or a redaction measures how the "
        "toy AR reads that template, and no quoted span is longer than 3 words. Compare toy numbers with "
        "published ones in form, never in value."
    )


def ci_p_disagreements(summary: Any, level: float) -> list[str]:
    """Caveat sentences for conditions whose Δ CI excludes 0 while the Wilcoxon p is not below
    ``1 − level``, or the reverse (see the report's Definitions)."""
    alpha = 1 - level
    out = []
    for r in summary.iter_rows(named=True):
        d, lo, hi, p = r.get("diff"), r.get("diff_low"), r.get("diff_high"), r.get("p")
        if d is None or lo is None or hi is None or p is None or any(math.isnan(x) for x in (lo, hi, p)):
            continue
        excludes = lo > 0 or hi < 0
        if excludes == (p < alpha):
            continue
        ci = f"[{_fmt(lo)}, {_fmt(hi)}]"
        if excludes:
            out.append(f"`{r['condition']}`: the {level * 100:g}% CI of Δ {ci} excludes 0 but the Wilcoxon p = "
                       f"{p:.2g} is not below {alpha:g}. The mean difference ({_fmt(d)}) is carried by part of "
                       "the activations; ranked, the differences do not lean consistently to one side.")
        else:
            out.append(f"`{r['condition']}`: the Wilcoxon p = {p:.2g} is below {alpha:g} but the "
                       f"{level * 100:g}% CI of Δ {ci} includes 0. Most differences share a sign, but they are "
                       "small next to the spread of the mean across documents.")
    return out


def provenance_summary(info: dict, out: Path) -> list[str]:
    """Short markdown bullets of a run's provenance (the full record goes to ``provenance.json``)."""
    rel = relative_paths(info, Path(out).resolve())
    pair, data = rel.get("pair") or {}, rel.get("data") or {}
    lines = []
    if pair:
        av, ar = pair.get("av") or {}, pair.get("ar") or {}
        lines.append(f"- pair: AV `{av.get('path')}` (fingerprint {av.get('fingerprint')}), AR `{ar.get('path')}` "
                     f"(fingerprint {ar.get('fingerprint')}); layer {pair.get('layer')}, d_model "
                     f"{pair.get('d_model')}; backend {pair.get('backend')}, {pair.get('device')}, {pair.get('dtype')}")
    if data:
        digest = str(data.get("digest") or "")[:12]
        lines.append(f"- data: `{data.get('path')}`, {data.get('n_rows')} activations from {data.get('n_docs')} "
                     f"documents (sha256 {digest}…)")
    hashes = rel.get("spec_hashes") or {}
    if hashes:
        lines.append("- specs: " + ", ".join(f"`{k}` ({str(v)[:12]}…)" for k, v in hashes.items())
                     + " (spec files: `specs/` of the run directory)")
    run = [f"batch size {rel.get('batch_size')}"]
    if rel.get("limit") is not None:
        run.append(f"limit {rel['limit']}")
    if rel.get("shard"):
        run.append(f"shard {rel['shard']}")
    if rel.get("elapsed_s") is not None:
        run.append(f"{rel['elapsed_s']} s")
    if rel.get("created"):
        run.append(f"finished {rel['created']}")
    lines.append("- run: " + ", ".join(run))
    return lines


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
        if s.height and "diff_low" in s.columns:
            caveats += ci_p_disagreements(s, spec.metrics.level)
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
    family = toy_family(result.info)
    report = Report("nla-probe ablation report", prov, definitions=defs, bh_scope="report",
                    preface=[toy_preface(family)] if family else [],
                    provenance_summary=provenance_summary(result.info, out))
    for sec in sections:
        report.add_section(sec)
    return report.write(out, overwrite=True)


__all__ = ["build_report", "describe_condition"]
