"""plotnine figure builders for nla-probe reports.

Every builder takes a polars frame (typically the output of :func:`nla_probe.analysis.stats.summarize` or
:func:`nla_probe.analysis.stats.compare_to_baseline`) and returns a ``plotnine.ggplot``; :func:`save_png`
writes it.  Categorical axes keep the order in which values first appear in the frame, so put the
baseline first.  plotnine and pandas are imported inside the functions, so importing this module is
cheap.

Conventions: error bars and ribbons are the frame's ``ci_low``/``ci_high`` (clustered bootstrap
CIs); dashed horizontal lines are named references (``{"predict-the-mean": 0.0}`` for FVE: 0 is the
score of always predicting the training mean); bar labels show the estimate and ``n``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from nla_probe.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

#: Default reference line of FVE plots: 0 = predicting the training mean.
FVE_REFERENCE: Mapping[str, float] = MappingProxyType({"predict-the-mean": 0.0})
_NO_REFERENCE: Mapping[str, float] = MappingProxyType({})
_BAR = "#4C72B0"
_REF = "#555555"
_PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")


def _pandas(frame: pl.DataFrame, needed: Sequence[str | None], what: str):
    """A pandas copy of the needed columns (via ``to_dict``, no pyarrow needed)."""
    import pandas as pd

    cols = [c for c in dict.fromkeys(needed) if c is not None]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise InputError(f"{what}: expected columns {missing} in the frame, found {frame.columns}")
    if frame.height == 0:
        raise InputError(f"{what}: expected a non-empty frame, found 0 rows")
    return pd.DataFrame(frame.select(cols).to_dict(as_series=False))


def _ordered(df, col: str, reverse: bool = False):
    """Make ``col`` categorical in order of first appearance (reversed for flipped axes)."""
    import pandas as pd

    levels = [str(v) for v in dict.fromkeys(df[col].tolist())]
    df[col] = pd.Categorical(df[col].astype(str), categories=levels[::-1] if reverse else levels, ordered=True)
    return df


def _theme():
    from plotnine import element_blank, element_text, theme, theme_bw

    return theme_bw(base_size=10) + theme(
        panel_grid_minor=element_blank(),
        plot_title=element_text(size=11, weight="bold"),
        legend_position="bottom",
    )


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def condition_bars(
    summary: pl.DataFrame,
    x: str,
    y: str = "estimate",
    ymin: str = "ci_low",
    ymax: str = "ci_high",
    title: str = "",
    ylabel: str = "FVE (fve_nrm)",
    reference_lines: Mapping[str, float] = FVE_REFERENCE,
    fill: str | None = None,
    n: str | None = "n",
    horizontal: bool = True,
):
    """Bars with CI error bars, one per condition (seed-report style "FVE by condition").

    Args:
        summary: one row per condition with ``x``, ``y``, ``ymin``, ``ymax`` (and ``n``).
        x: the condition column (categorical; first row is drawn at the top when horizontal).
        y, ymin, ymax: estimate and CI bound columns.
        title: figure title.
        ylabel: value-axis label (say which metric and denominator).
        reference_lines: label -> value, drawn as dashed lines across the value axis.
        fill: optional column colouring the bars (e.g. "on-policy" vs "post-hoc").
        n: column with the sample count shown in each bar label (None: no count).
        horizontal: flip so conditions are rows (readable long condition names).
    """
    from plotnine import (
        aes,
        coord_flip,
        geom_col,
        geom_errorbar,
        geom_hline,
        geom_text,
        ggplot,
        labs,
        scale_fill_manual,
        scale_y_continuous,
    )

    df = _ordered(_pandas(summary, [x, y, ymin, ymax, fill, n], "condition_bars"), x, reverse=horizontal)
    df["_label"] = [
        _fmt(v) + (f" (n={int(k)})" if n is not None else "") for v, k in zip(df[y], df[n] if n else df[y])
    ]
    values = [*df[ymin], *df[ymax], 0.0, *reference_lines.values()]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    neg = df[y] < 0  # labels sit beyond the CI end that points away from 0
    df["_label_at"] = df[ymax].where(~neg, df[ymin]) + (0.02 * span) * (1 - 2 * neg)
    p = ggplot(df, aes(x=x, y=y))
    p += geom_col(aes(fill=fill), width=0.7) if fill else geom_col(fill=_BAR, width=0.7)
    p += geom_errorbar(aes(ymin=ymin, ymax=ymax), width=0.25, color="#222222")
    for side, sub in (("pos", df[~neg]), ("neg", df[neg])):
        if len(sub):
            away = "left" if side == "pos" else "right"
            p += geom_text(sub, aes(y="_label_at", label="_label"), size=7,
                           ha=away if horizontal else "center",
                           va="center" if horizontal else ("bottom" if side == "pos" else "top"))
    for value in reference_lines.values():
        p += geom_hline(yintercept=value, linetype="dashed", color=_REF)
    caption = "; ".join(f"dashed: {k} ({v:g})" for k, v in reference_lines.items())
    room = 0.35 * span
    p += scale_y_continuous(limits=(lo - (room if neg.any() else 0.05 * span), hi + room))
    if fill:
        p += scale_fill_manual(values=list(_PALETTE))
    if horizontal:
        p += coord_flip()
    return p + labs(title=title, x="", y=ylabel, fill=fill or "", caption=caption) + _theme()


def curve(
    summary: pl.DataFrame,
    x: str,
    y: str = "estimate",
    group: str | None = None,
    ymin: str | None = "ci_low",
    ymax: str | None = "ci_high",
    logx: bool = False,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "FVE (fve_nrm)",
    reference_lines: Mapping[str, float] = _NO_REFERENCE,
    reference_x: Mapping[str, float] = _NO_REFERENCE,
    facet: str | None = None,
):
    """Lines with CI ribbons: FVE vs N, vs layer, vs number of training pairs.

    Args:
        summary: one row per (group, x) with numeric ``x``, ``y`` and CI columns.
        x: numeric x column (N, layer index, training pairs).
        y: estimate column.
        group: optional column of line identities (arms, directions); one colour each.
        ymin, ymax: CI columns drawn as a ribbon (None: no ribbon).
        logx: log10 x axis.
        title, xlabel, ylabel: labels.
        reference_lines: label -> y value, dashed horizontal lines (e.g. the NLA text route).
        reference_x: label -> x value, dotted vertical lines (e.g. the trained layer).
        facet: optional column to facet on (free y scales), e.g. "metric".
    """
    from plotnine import (
        aes,
        annotate,
        facet_wrap,
        geom_hline,
        geom_line,
        geom_point,
        geom_ribbon,
        geom_vline,
        ggplot,
        labs,
        scale_color_manual,
        scale_fill_manual,
        scale_x_log10,
    )

    df = _pandas(summary, [x, y, ymin, ymax, group, facet], "curve")
    if group:
        df = _ordered(df, group)
    if facet:
        df = _ordered(df, facet)
    colour = {"color": group, "fill": group, "group": group} if group else {}
    p = ggplot(df, aes(x=x, y=y, **colour))
    if ymin and ymax:
        p += geom_ribbon(aes(ymin=ymin, ymax=ymax), alpha=0.2, color="none", **({} if group else {"fill": _BAR}))
    p += geom_line(size=0.8, **({} if group else {"color": _BAR}))
    p += geom_point(size=1.6, **({} if group else {"color": _BAR}))
    xmin = float(df[x].min())
    for label, value in reference_lines.items():
        p += geom_hline(yintercept=value, linetype="dashed", color=_REF)
        if not facet:
            p += annotate("text", x=xmin, y=value, label=label, ha="left", va="bottom", size=7, color=_REF)
    for label, value in reference_x.items():
        p += geom_vline(xintercept=value, linetype="dotted", color=_REF)
        if not facet:
            p += annotate("text", x=value, y=float(df[y].min()), label=f" {label}", ha="left", va="bottom",
                          size=7, color=_REF)
    if logx:
        p += scale_x_log10()
    if group:
        p += scale_color_manual(values=list(_PALETTE))
        p += scale_fill_manual(values=list(_PALETTE))
    if facet:
        p += facet_wrap(facet, scales="free_y")
    return p + labs(title=title, x=xlabel or x, y=ylabel, color=group or "", fill=group or "") + _theme()


def matrix_heatmap(
    frame: pl.DataFrame,
    row: str,
    col: str,
    value: str,
    label_fmt: str = "{:.3f}",
    label: str | None = None,
    title: str = "",
    fill_label: str = "FVE",
    midpoint: float = 0.0,
):
    """A matrix (transfer, cross-layer consistency) as coloured tiles with the numbers in the cells.

    Args:
        frame: one row per (row, col) cell.
        row, col: the matrix axes (rows are listed top to bottom in order of first appearance).
        value: cell value (colour, and the cell text unless ``label`` is given).
        label_fmt: format of the cell text, e.g. ``"{:.3f}"``.
        label: optional column holding the full cell text (e.g. "0.592\\nnull -0.89").
        title, fill_label: labels.
        midpoint: value drawn white on the diverging red-white-blue scale (0 for FVE).
    """
    from plotnine import aes, element_text, geom_text, geom_tile, ggplot, labs, scale_fill_gradient2, theme

    df = _pandas(frame, [row, col, value, label], "matrix_heatmap")
    df = _ordered(_ordered(df, row, reverse=True), col)
    df["_text"] = df[label].astype(str) if label else [label_fmt.format(v) for v in df[value]]
    p = (
        ggplot(df, aes(x=col, y=row, fill=value))
        + geom_tile(color="white", size=0.8)
        + geom_text(aes(label="_text"), size=8)
        + scale_fill_gradient2(low="#b2182b", mid="#f7f7f7", high="#2166ac", midpoint=midpoint)
        + labs(title=title, x=col, y=row, fill=fill_label)
        + _theme()
        + theme(legend_position="right", axis_text_x=element_text(rotation=30, ha="right"))
    )
    return p


def histogram_compare(
    frame: pl.DataFrame,
    value: str,
    group: str,
    bins: int = 40,
    title: str = "",
    xlabel: str = "",
    reference_lines: Mapping[str, float] = _NO_REFERENCE,
):
    """Overlaid histograms of ``value`` per ``group`` (e.g. true vs shuffled-source null), with each
    group's mean as a dashed vertical line in the group's colour.

    Args:
        frame: one row per sample with ``value`` and ``group``.
        value: numeric column (e.g. longest shared n-gram length, per-sample FVE).
        group: column of distributions to compare.
        bins: number of histogram bins.
        title, xlabel: labels.
        reference_lines: label -> x value, dotted grey vertical lines.
    """
    from plotnine import aes, geom_histogram, geom_vline, ggplot, labs, scale_color_manual, scale_fill_manual

    if not (isinstance(bins, int) and bins >= 1):
        raise InputError(f"bins: expected an integer >= 1, found {bins!r}")
    df = _ordered(_pandas(frame, [value, group], "histogram_compare"), group)
    means = df.groupby(group, observed=True, sort=False)[value].mean().reset_index()
    p = (
        ggplot(df, aes(x=value, fill=group))
        + geom_histogram(bins=bins, alpha=0.55, position="identity", color="none")
        + geom_vline(means, aes(xintercept=value, color=group), linetype="dashed", size=0.8, show_legend=False)
        + scale_fill_manual(values=list(_PALETTE))
        + scale_color_manual(values=list(_PALETTE))
    )
    for _label, v in reference_lines.items():
        p += geom_vline(xintercept=v, linetype="dotted", color=_REF)
    return p + labs(title=title, x=xlabel or value, y="count", fill=group) + _theme()


def save_png(plot: Any, path: str | Path, width: float = 6.0, height: float = 4.0, dpi: int = 150) -> Path:
    """Write ``plot`` as a PNG of ``width`` × ``height`` inches at ``dpi``; creates parent directories.

    Returns the path written.
    """
    import warnings

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"path: expected a .png file name, found {str(path)!r}")
    if not (width > 0 and height > 0 and dpi > 0):
        raise InputError(f"width/height/dpi: expected positive numbers, found {width}, {height}, {dpi}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Saving.*")  # plotnine's size notice
        plot.save(path, width=width, height=height, dpi=dpi, units="in", verbose=False)
    return path
