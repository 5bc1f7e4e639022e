"""``constrained``: on-policy format conditions — the ``roundtrip`` kind plus format and ending audits.

Runs exactly like :class:`~nla_probe.experiments.roundtrip.Roundtrip` (one on-policy decode per
condition under its hooks: ``grammar`` for forced formats, ``prefix`` for unforced ones,
``ban_chars`` + ``min_new_tokens`` for bans; ``docs/hooks.md``), with the leak audit, and adds
per row:

* ``quoted_share`` — the share of the explanation's non-whitespace characters that lie inside
  outermost quote spans (double or single quotes, marks included; parsed by
  :func:`nla_probe.text.spans.find_spans`): 1.0 for an explanation that is nothing but quoted
  spans, 0.0 for one without quotes;
* ``dead_end`` — the decode ended at a grammar dead end (``finish_reason == "grammar_dead_end"``);
* ``truncated`` — the decode reached the length cap (``finish_reason == "length"``).

Their means per condition are in the summary; the report adds a table of endings per condition.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nla_probe.ablate.kinds import register_experiment
from nla_probe.experiments.roundtrip import Roundtrip

QUOTE_FAMILIES = ("double_quotes", "single_quotes")


def quoted_share(text: str) -> float:
    """Share of the non-whitespace characters of ``text`` inside outermost quote spans (see module doc)."""
    from nla_probe.text.spans import find_spans

    total = sum(1 for c in text if not c.isspace())
    if total == 0:
        return 0.0
    inside = sum(1 for s in find_spans(text, QUOTE_FAMILIES).outermost()
                 for c in text[s.start:s.end] if not c.isspace())
    return inside / total


@register_experiment
class Constrained(Roundtrip):
    """On-policy format conditions with format and ending audits (see module doc)."""

    name = "constrained"
    description = ("roundtrip under grammar-constrained (forced) and prefixed (unforced) decoding, with the share of "
                   "quoted text and the decodes' endings")
    columns = {**Roundtrip.columns, "quoted_share": "Float64", "dead_end": "Boolean", "truncated": "Boolean"}
    column_docs = {
        **Roundtrip.column_docs,
        "quoted_share": "share of the explanation's non-whitespace characters inside outermost double/single-quote "
                        "spans (1 = quoted spans only).",
        "dead_end": "share of decodes that ended at a grammar dead end (finish_reason grammar_dead_end).",
        "truncated": "share of decodes cut by the length cap (finish_reason length).",
    }
    summary_means = {**Roundtrip.summary_means, "quoted_share": "quoted_share", "dead_end": "dead_end",
                     "truncated": "truncated"}

    def run(self, spec: Any, ctx: Any) -> Iterator[dict[str, list]]:
        for batch in super().run(spec, ctx):
            batch["quoted_share"] = [quoted_share(t) for t in batch["text"]]
            batch["dead_end"] = [r == "grammar_dead_end" for r in batch["finish_reason"]]
            batch["truncated"] = [r == "length" for r in batch["finish_reason"]]
            yield batch

    def report_sections(self, spec: Any, frame: Any, out_dir: Path) -> list:
        """A table of endings and format per condition: decodes, stop / length / dead end, mean tokens,
        mean quoted share."""
        import polars as pl

        from nla_probe.ablate.markdown import ReportSection

        if frame.height == 0:
            return []
        table = frame.group_by("condition", maintain_order=True).agg(
            pl.len().alias("N"),
            (pl.col("finish_reason") == "stop").sum().alias("stop"),
            (pl.col("finish_reason") == "length").sum().alias("length"),
            (pl.col("finish_reason") == "grammar_dead_end").sum().alias("dead end"),
            pl.col("n_tokens").mean().round(1).alias("mean tokens"),
            pl.col("quoted_share").mean().round(3).alias("quoted share"),
            (pl.col("tag_status") == "ok").mean().round(3).alias("tags ok"),
        )
        text = ("Endings and format per condition: decodes that stopped, hit the length cap, or ended at a grammar "
                "dead end; mean generated tokens (a prefix is not counted); mean share of the explanation inside "
                "quote spans; share with well-formed tags.")
        return [ReportSection(title=f"{spec.name}: endings and format", text=text, table=table)]
