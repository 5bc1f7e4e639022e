"""``length``: the ``roundtrip`` kind plus a length–fidelity trade-off view for decode-time length hooks.

Runs exactly like :class:`~nla_probe.experiments.roundtrip.Roundtrip`; each condition is typically
one ``length_penalty`` λ of a grid (or a ``max_new_tokens`` cap).  The report adds, per condition:

* mean generated tokens (``n_tokens``: AV tokens, stop token excluded) with its clustered CI,
  next to the FVE with its CI;
* the share of decodes cut by the token cap (``finish_reason == "length"``) and the share with
  both explanation tags;
* a figure of FVE against mean tokens, both with CIs, one point per condition.

A decode-time penalty only changes *when* the unchanged AV stops (it boosts the end logits); it
does not retrain the AV to word things tersely.  It is therefore not the intervention of an RL
length penalty (reward − λ_RL · tokens during training); see ``docs/experiments_generation.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nla_probe.ablate.kinds import register_experiment
from nla_probe.experiments.roundtrip import Roundtrip


def length_table(frame: Any, spec: Any) -> Any:
    """Per condition (spec order): the hook description, FVE and mean tokens with clustered CIs,
    the share of capped decodes and of tagged decodes.

    Columns: ``condition, hooks, fve, fve_low, fve_high, tokens, tokens_low, tokens_high, n,
    n_clusters, capped, tag_ok, expl_chars`` (mean length of the scored explanation in characters:
    the AV may keep writing after ``</explanation>``, which ``tokens`` counts and the AR never reads).
    """
    import polars as pl

    from nla_probe.analysis.stats import summarize

    m = spec.metrics
    f = frame.with_columns(pl.col("n_tokens").cast(pl.Float64), pl.col(m.primary).cast(pl.Float64))
    f = f.filter(pl.col(m.primary).is_not_nan())
    fve = summarize(f, m.primary, by=["condition"], n_boot=m.n_boot, level=m.level, seed=spec.seed)
    tok = summarize(f, "n_tokens", by=["condition"], n_boot=m.n_boot, level=m.level, seed=spec.seed)
    extra = f.group_by("condition").agg((pl.col("finish_reason") == "length").mean().alias("capped"),
                                        (pl.col("tag_status") == "ok").mean().alias("tag_ok"),
                                        pl.col("text").str.len_chars().mean().alias("expl_chars"))
    t = (fve.rename({"estimate": "fve", "ci_low": "fve_low", "ci_high": "fve_high"})
         .join(tok.select("condition", pl.col("estimate").alias("tokens"), pl.col("ci_low").alias("tokens_low"),
                          pl.col("ci_high").alias("tokens_high")), on="condition")
         .join(extra, on="condition"))
    order = {c.name: i for i, c in enumerate(spec.conditions)}
    hooks = {c.name: ", ".join(_hook_str(h) for h in c.hooks) or "none" for c in spec.conditions}
    t = t.with_columns(pl.col("condition").replace_strict(hooks, default="").alias("hooks"),
                       pl.col("condition").replace_strict(order, default=len(order), return_dtype=pl.Int64)
                       .alias("_o")).sort("_o").drop("_o")
    return t.select("condition", "hooks", "fve", "fve_low", "fve_high", "tokens", "tokens_low", "tokens_high",
                    "n", "n_clusters", "capped", "tag_ok", "expl_chars")


def _hook_str(h: dict) -> str:
    params = {k: v for k, v in h.items() if k not in ("name", "version")}
    return f"{h['name']}(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"


def penalty_of(hooks: Sequence[dict]) -> tuple[str, float]:
    """``(schedule, λ)`` of a condition's hooks: ``("none", 0.0)`` without length hooks, the
    ``length_penalty`` schedule and λ with exactly one such hook, ``("other", nan)`` otherwise."""
    if not hooks:
        return "none", 0.0
    pens = [h for h in hooks if h.get("name") == "length_penalty"]
    if len(pens) == 1 and len(hooks) == 1:
        return str(pens[0].get("schedule", "linear")), float(pens[0].get("lam", 0.0))
    return "other", math.nan


def tradeoff_plot(table: Any, spec: Any, title: str, ylabel: str) -> Any:
    """FVE (y) against mean tokens (x), both with CI bars: one point per condition, labelled with its λ,
    coloured by schedule; each schedule's points are joined in order of λ, starting from the
    unpenalised condition(s)."""
    import pandas as pd
    from plotnine import (
        aes,
        element_blank,
        geom_hline,
        geom_linerange,
        geom_path,
        geom_point,
        geom_segment,
        geom_text,
        ggplot,
        labs,
        scale_color_manual,
        scale_x_continuous,
        theme,
        theme_bw,
    )

    pen = {c.name: penalty_of(c.hooks) for c in spec.conditions}
    df = pd.DataFrame(table.select("condition", "fve", "fve_low", "fve_high", "tokens", "tokens_low",
                                   "tokens_high").to_dict(as_series=False))
    df["schedule"] = [pen.get(c, ("other", math.nan))[0] for c in df["condition"]]
    df["lam"] = [pen.get(c, ("other", math.nan))[1] for c in df["condition"]]
    df["label"] = [f"{x:g}" if s not in ("none", "other") else ("0" if s == "none" else c)
                   for c, s, x in zip(df["condition"], df["schedule"], df["lam"])]
    scheds = [s for s in dict.fromkeys(df["schedule"]) if s not in ("none", "other")]
    lines = pd.concat([pd.concat([df[df["schedule"] == "none"].assign(schedule=s), df[df["schedule"] == s]])
                       .sort_values("lam") for s in scheds]) if scheds else df.iloc[0:0]
    span = float(max(df["fve_high"].max(), 0.0) - min(df["fve_low"].min(), 0.0)) or 1.0
    palette = {"none": "#222222", "other": "#8C8C8C", "linear": "#4C72B0", "constant": "#DD8452"}
    colours = {s: palette.get(s, "#55A868") for s in dict.fromkeys(df["schedule"])}
    return (ggplot(df, aes(x="tokens", y="fve", color="schedule"))
            + geom_hline(yintercept=0.0, linetype="dashed", color="#555555")
            + geom_path(lines, aes(group="schedule"), size=0.6, alpha=0.6)
            + geom_linerange(aes(ymin="fve_low", ymax="fve_high"))
            + geom_segment(aes(x="tokens_low", xend="tokens_high", yend="fve"))
            + geom_point(size=2.2)
            + geom_text(aes(label="label"), size=7, nudge_y=0.025 * span, ha="left", va="bottom",
                        show_legend=False)
            + scale_color_manual(values=colours)
            + scale_x_continuous(expand=(0.12, 0))
            + labs(title=title, x="mean generated tokens (AV tokens, stop excluded)", y=ylabel,
                   color="schedule (label: λ)",
                   caption="dashed: predict-the-mean (FVE 0); bars: clustered CIs on both axes")
            + theme_bw(base_size=10) + theme(panel_grid_minor=element_blank(), legend_position="bottom"))


@register_experiment
class LengthSweep(Roundtrip):
    """Decode-time length hooks with the tokens-vs-FVE view (see module doc)."""

    name = "length"
    description = "roundtrip under decode-time length hooks (λ grid), with mean tokens vs FVE and their CIs"

    def report_sections(self, spec: Any, frame: Any, out_dir: Path) -> list:
        """A section with FVE and mean tokens per condition (clustered CIs) and the trade-off figure."""
        import warnings

        import polars as pl

        from nla_probe.ablate.markdown import ReportSection
        from nla_probe.ablate.plots import save_png

        if frame.height == 0:
            return []
        t = length_table(frame, spec)
        m = spec.metrics
        pct = f"{m.level * 100:g}%"
        table = t.select("condition", "hooks", pl.col("fve").alias("estimate"), pl.col("fve_low").alias("ci_low"),
                         pl.col("fve_high").alias("ci_high"), "n", "n_clusters",
                         pl.format("{} [{}, {}]", pl.col("tokens").round(1), pl.col("tokens_low").round(1),
                                   pl.col("tokens_high").round(1)).alias(f"mean tokens [{pct} CI]"),
                         "capped", "tag_ok", pl.col("expl_chars").round(1))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            plot = tradeoff_plot(t, spec, f"{spec.name}: fidelity vs explanation length", m.primary)
            path = save_png(plot, Path(out_dir) / "figures" / f"{spec.name}_tokens_vs_fve.png", width=7.0,
                            height=4.5)
        text = (f"Per condition: {m.primary} and mean generated AV tokens (stop token excluded), {pct} clustered "
                "CIs; `capped` = share of decodes that hit the token cap (finish_reason 'length'); `tag_ok` = share "
                "with both explanation tags; `expl_chars` = mean length in characters of the explanation the AR "
                "reads (tokens written after `</explanation>` count in the tokens but are never read).")
        return [ReportSection(title=f"{spec.name}: length vs fidelity", text=text, table=table,
                              figures=[(path, f"{m.primary} against mean generated tokens per condition, {pct} "
                                              "clustered CIs on both axes.")], metric=m.primary)]
