"""HTML views of span attribution: explanations with each part coloured by its leave-one-out ΔFVE.

:func:`show_attribution` turns a :func:`~nla_probe.surgery.scoring.span_attribution` frame (and the
explanations it was computed on) into an object that Jupyter renders as highlighted text; the frame
itself is unchanged.  The run explorer (:mod:`nla_probe.ablate.page_data`) uses the same colour scale.

Colour scale (:class:`ColourScale`): ``ΔFVE = fve_full − fve_without`` in FVE units (a fraction of
the denominator ``B``; +0.1 = removing the part costs 10% of ``B``).  Seven bins of equal width
``2·limit/7`` centred on 0, diverging blue–orange (ColorBrewer RdBu blues, PuOr oranges; both halves
stay distinct under red–green colour blindness): orange = removing the part loses reconstruction
(the part carries signal), blue = removing it helps, near-white = no effect.  Values beyond
``±limit`` take the end bins.  The default limit is the 95th percentile of ``|ΔFVE|``, rounded up
to the next of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k (:func:`nice_limit`).

All text is HTML-escaped: explanations are untrusted model output.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nla_probe.errors import InputError

#: Bin colours, most negative ΔFVE first.
PALETTE = ("#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fee0b6", "#f1a340", "#b35806")
#: Text colour readable on each bin.
INK = ("#ffffff", "#000000", "#000000", "#000000", "#000000", "#000000", "#ffffff")


def nice_limit(values: Sequence[float], quantile: float = 0.95, floor: float = 0.01) -> float:
    """The ``quantile`` of ``|values|`` (nearest rank) rounded up to the next of 1, 1.5, 2, 2.5, 3, 4,
    5, 6, 8 × 10^k; at least ``floor``; 0.1 when there are no finite values."""
    vals = sorted(abs(float(v)) for v in values if v is not None and math.isfinite(float(v)))
    if not vals:
        return 0.1
    q = vals[min(len(vals) - 1, max(0, math.ceil(quantile * len(vals)) - 1))]
    q = max(q, floor)
    k = math.floor(math.log10(q))
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * 10 ** k >= q - 1e-15:
            return float(f"{m * 10 ** k:.12g}")
    return q  # pragma: no cover


@dataclass(frozen=True)
class ColourScale:
    """Seven-bin diverging scale over ``[-limit, +limit]`` ΔFVE (module doc)."""

    limit: float

    def __post_init__(self) -> None:
        if not (isinstance(self.limit, (int, float)) and math.isfinite(self.limit) and self.limit > 0):
            raise InputError(f"ColourScale.limit: expected a positive finite number, found {self.limit!r}")

    @property
    def edges(self) -> tuple[float, ...]:
        """The six bin edges, ascending (±limit/7, ±3·limit/7, ±5·limit/7)."""
        w = 2 * self.limit / 7
        return tuple(-self.limit + w * k for k in range(1, 7))

    def bin(self, delta: float) -> int:
        """Bin index 0..6 of ``delta`` (0 = most negative)."""
        return sum(delta >= e for e in self.edges)

    def colours(self, delta: float) -> tuple[str, str]:
        """``(background, text)`` colours of ``delta``."""
        k = self.bin(delta)
        return PALETTE[k], INK[k]

    def to_dict(self) -> dict:
        return {"limit": self.limit, "edges": list(self.edges), "palette": list(PALETTE), "ink": list(INK)}


def legend_html(scale: ColourScale) -> str:
    """A horizontal legend: the seven swatches with their ΔFVE ranges."""
    edges = scale.edges
    cells = []
    for k, colour in enumerate(PALETTE):
        lo = "" if k == 0 else f"{edges[k - 1]:+.3g}"
        hi = "" if k == 6 else f"{edges[k]:+.3g}"
        label = f"< {hi}" if k == 0 else f"≥ {lo}" if k == 6 else f"{lo} … {hi}"
        cells.append(f'<span style="background:{colour};color:{INK[k]};padding:1px 6px;'
                     f'font-size:0.85em">{html.escape(label)}</span>')
    return ('<div style="margin:4px 0">ΔFVE (FVE units; orange = removing the part loses reconstruction, '
            'blue = removing it helps): ' + "".join(cells) + "</div>")


def highlight_html(text: str, parts: Sequence[tuple[int, int, float, str]], scale: ColourScale) -> str:
    """``text`` with non-overlapping ``parts = [(start, end, delta, title)]`` (code-point offsets)
    wrapped in coloured ``<mark>`` elements; everything escaped."""
    out, pos = [], 0
    for a, b, delta, title in sorted(parts):
        if a < pos or b > len(text) or a > b:
            raise InputError(f"highlight: parts overlap or leave the text (part {a}..{b}, text length {len(text)})")
        bg, ink = scale.colours(delta)
        out.append(html.escape(text[pos:a]))
        out.append(f'<mark style="background:{bg};color:{ink};border-radius:2px" title="{html.escape(title)}">'
                   f"{html.escape(text[a:b])}</mark>")
        pos = b
    out.append(html.escape(text[pos:]))
    return "".join(out)


class AttributionView:
    """Span attribution of some explanations, rendered as highlighted text in notebooks.

    Attributes:
        frame: the :func:`span_attribution` frame (unchanged).
        unit: ``"span"`` or ``"sentence"`` — which parts are coloured.
        scale: the :class:`ColourScale`.
    """

    def __init__(self, frame: Any, texts: dict[Any, str], unit: str, scale: ColourScale):
        self.frame, self.texts, self.unit, self.scale = frame, texts, unit, scale

    def html(self) -> str:
        rows = [r for r in self.frame.iter_rows(named=True) if r["unit"] == self.unit]
        by_id: dict[Any, list[dict]] = {}
        for r in rows:
            by_id.setdefault(r["sample_id"], []).append(r)
        blocks = [legend_html(self.scale)]
        for sid, text in self.texts.items():
            parts = by_id.get(sid, [])
            full = parts[0]["fve_full"] if parts else None
            marks = [(r["start"], r["end"], r["delta_fve"], (f"{r['family'] or r['unit']} · ΔFVE "
                                                             f"{r['delta_fve']:+.4f} · FVE without "
                                                             f"{r['fve_without']:.4f}")) for r in parts]
            head = f"sample {html.escape(str(sid))}" + (f" · FVE {full:.4f}" if full is not None else "")
            blocks.append(f'<div style="margin:6px 0"><div style="font-size:0.8em;color:#555">{head}</div>'
                          f'<div style="white-space:pre-wrap;font-family:inherit">'
                          f"{highlight_html(text, marks, self.scale)}</div></div>")
        return '<div class="nla-attribution">' + "".join(blocks) + "</div>"

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        return (f"AttributionView({len(self.texts)} explanations, unit={self.unit!r}, "
                f"ΔFVE scale ±{self.scale.limit:g})")


def show_attribution(frame: Any, explanations: Sequence[str] | Mapping[Any, str], *, unit: str = "span",
                     limit: float | None = None) -> AttributionView:
    """Render a :func:`~nla_probe.surgery.scoring.span_attribution` frame as highlighted text.

    Args:
        frame: the attribution frame (columns ``sample_id, unit, start, end, family, part,
            fve_full, fve_without, delta_fve``).
        explanations: the explanations it was computed on: a list (indexed by ``sample_id``, as with
            the default ids) or a mapping ``sample_id -> text``.
        unit: colour the ``"span"`` parts or the ``"sentence"`` parts.
        limit: ΔFVE at the ends of the colour scale (default: :func:`nice_limit` of the frame's deltas).

    Returns:
        An :class:`AttributionView` (``_repr_html_`` for Jupyter, ``.html()`` for a string).

    Raises:
        InputError: missing columns, an unknown unit, a sample without its explanation, or a part
            whose text is not ``explanation[start:end]`` (wrong explanations passed).
    """
    need = ("sample_id", "unit", "start", "end", "family", "part", "fve_full", "fve_without", "delta_fve")
    missing = [c for c in need if c not in getattr(frame, "columns", ())]
    if missing:
        raise InputError(f"show_attribution: frame: expected columns {list(need)}, missing {missing}")
    if unit not in ("span", "sentence"):
        raise InputError(f"show_attribution: unit: expected 'span' or 'sentence', found {unit!r}")
    ids = list(dict.fromkeys(frame["sample_id"].to_list()))
    texts: dict[Any, str] = {}
    for sid in ids:
        try:
            text = explanations[sid]
        except (KeyError, IndexError, TypeError):
            raise InputError(f"show_attribution: explanations: no explanation for sample_id {sid!r}") from None
        if not isinstance(text, str):
            raise InputError(f"show_attribution: explanations[{sid!r}]: expected a str, found {type(text).__name__}")
        texts[sid] = text
    for r in frame.iter_rows(named=True):
        if texts[r["sample_id"]][r["start"]:r["end"]] != r["part"]:
            raise InputError(f"show_attribution: explanations[{r['sample_id']!r}][{r['start']}:{r['end']}] is not the "
                             f"frame's part {r['part']!r}: pass the explanations the frame was computed on")
    deltas = frame.filter(frame["unit"] == unit)["delta_fve"].to_list()
    scale = ColourScale(limit if limit is not None else nice_limit(deltas))
    return AttributionView(frame, texts, unit, scale)


__all__ = ["INK", "PALETTE", "AttributionView", "ColourScale", "highlight_html", "legend_html", "nice_limit",
           "show_attribution"]
