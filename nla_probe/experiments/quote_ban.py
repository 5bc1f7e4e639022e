"""``quote_ban``: the ``roundtrip`` kind plus a delimiter substitution audit for generation-time bans.

Runs exactly like :class:`~nla_probe.experiments.roundtrip.Roundtrip` (one on-policy decode per
condition under its hooks, e.g. ``ban_chars`` with delimiter families and ``min_new_tokens``), and
adds to the report:

* the **substitution matrix**: for every condition and every delimiter family, ``k/N`` = the
  number of scored explanations with at least one span of that family (any nesting depth, parsed
  by :func:`nla_probe.text.spans.find_spans`) out of the condition's N explanations;
* the **leak count**: explanations containing at least one character a hook of the condition
  bans (the ``leaked`` column of ``roundtrip``), ``k/N``.

A ban that binds shows 0 leaks; a ban the policy routes around shows the quoting moving to another
family (abra.me report 01 §2: 982/1000 decodes switched to single quotes when only double quotes were
banned).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nla_probe.ablate.kinds import register_experiment
from nla_probe.experiments.roundtrip import Roundtrip, banned_chars


def families_used(text: str, families: Sequence[str]) -> frozenset[str]:
    """Families with at least one span (any depth) in ``text``."""
    from nla_probe.text.spans import find_spans

    return frozenset(s.family for s in find_spans(text, tuple(families)).spans)


def substitution_counts(texts: Iterable[str], families: Sequence[str]) -> dict[str, int]:
    """``family -> number of texts with at least one span of it`` (every family listed, 0 if unused)."""
    out = dict.fromkeys(families, 0)
    for t in texts:
        for f in families_used(t, families):
            out[f] += 1
    return out


def substitution_matrix(frame: Any, spec: Any, families: Sequence[str]) -> Any:
    """Long frame ``condition, family, k, N, share, banned`` from the result frame's scored ``text``.

    ``banned`` says whether the condition's hooks ban a character of that family.
    """
    import polars as pl

    rows = []
    for cond in spec.conditions:
        texts = frame.filter(pl.col("condition") == cond.name)["text"].to_list()
        if not texts:
            continue
        counts = substitution_counts(texts, families)
        ban = banned_chars(cond.hooks)
        from nla_probe.text.delimiters import get_family

        for fam in families:
            rows.append({"condition": cond.name, "family": fam, "k": counts[fam], "N": len(texts),
                         "share": counts[fam] / len(texts), "banned": bool(get_family(fam).charset & ban)})
    return pl.DataFrame(rows, schema={"condition": pl.Utf8, "family": pl.Utf8, "k": pl.Int64, "N": pl.Int64,
                                      "share": pl.Float64, "banned": pl.Boolean})


def _without_floor(hooks: Sequence[Any]) -> list:
    return [dict(h) for h in hooks if h.get("name") != "min_new_tokens"]


def floor_note(spec: Any, summary: Any) -> str:
    """Why a condition with a ``min_new_tokens`` floor scores like (or unlike) its twin without one.

    The floor forbids the end-of-sequence token until N tokens are generated; ``</explanation>`` is
    ordinary text, so an AV that is done closes the tag where it always does and writes on after it,
    and parsing keeps only the text between the tags.  Pairs each floored condition with the
    condition whose hooks are the same minus the floor; returns "" when there is no such pair.
    """
    if summary.height == 0:
        return ""
    rows = {r["condition"]: r for r in summary.iter_rows(named=True)}
    pairs = []
    for cond in spec.conditions:
        if not any(h.get("name") == "min_new_tokens" for h in cond.hooks):
            continue
        rest = _without_floor(cond.hooks)
        twin = next((c for c in spec.conditions if c.name != cond.name and not any(
            h.get("name") == "min_new_tokens" for h in c.hooks) and _without_floor(c.hooks) == rest
            and dict(c.sampling) == dict(cond.sampling)), None)
        if twin is not None and cond.name in rows and twin.name in rows:
            pairs.append((cond.name, twin.name))
    if not pairs:
        return ""
    lines = [("**The length floor.** `min_new_tokens` forbids the end-of-sequence token until N tokens have "
              "been generated; it does not block `</explanation>`, which is ordinary text. An AV that is done "
              "closes the tag where it always does and writes on after it, and parsing keeps only the text "
              "between the tags, so a floor changes the scored explanation only where the AV would have stopped "
              "before closing the tag."), ""]
    for floored, twin in pairs:
        a, b = rows[floored], rows[twin]
        tok = ""
        if a.get("n_tokens") is not None and b.get("n_tokens") is not None:
            tok = f"; generated tokens {a['n_tokens']:.1f} vs {b['n_tokens']:.1f}"
        if a["estimate"] == b["estimate"]:
            lines.append(f"- `{floored}` equals `{twin}`: fve_nrm {a['estimate']:.3f} in both, the same "
                         f"explanations scored{tok}{' (the extra tokens follow the closing tag)' if tok else ''}.")
        else:
            lines.append(f"- `{floored}` vs `{twin}`: fve_nrm {a['estimate']:.3f} vs {b['estimate']:.3f}; the floor "
                         f"changed some explanations{tok}.")
    return "\n".join(lines)


@register_experiment
class QuoteBan(Roundtrip):
    """Generation-time delimiter bans with the substitution audit (see module doc)."""

    name = "quote_ban"
    description = ("roundtrip under generation-time delimiter bans, with the leak count and the delimiter "
                   "substitution matrix")

    def section_text(self, spec: Any, summary: Any) -> str:
        """The leak audit (from ``roundtrip``) and, for conditions that add only a length floor, how
        their explanations compare with the same condition without it (see :func:`floor_note`)."""
        parts = [t for t in (super().section_text(spec, summary), floor_note(spec, summary)) if t]
        return "\n\n".join(parts)

    def report_sections(self, spec: Any, frame: Any, out_dir: Path) -> list:
        """A section with the substitution matrix (cells ``k/N``, leaks per condition) and its heatmap."""
        import warnings

        import polars as pl

        from nla_probe.ablate.markdown import ReportSection
        from nla_probe.ablate.plots import matrix_heatmap, save_png
        from nla_probe.text.delimiters import expand_family_names

        if frame.height == 0:
            return []
        families = expand_family_names(spec.params["audit_families"])
        mat = substitution_matrix(frame, spec, families)
        leaks = frame.group_by("condition", maintain_order=True).agg(pl.col("leaked").sum().alias("k"),
                                                                     pl.len().alias("N"))
        leak = {r["condition"]: f"{r['k']}/{r['N']}" for r in leaks.iter_rows(named=True)}
        used = [f for f in families if mat.filter((pl.col("family") == f) & (pl.col("k") > 0)).height]
        shown = used or list(families)
        mat = mat.with_columns((pl.col("k").cast(pl.Utf8) + "/" + pl.col("N").cast(pl.Utf8)
                                + pl.when(pl.col("banned")).then(pl.lit(" †")).otherwise(pl.lit(""))).alias("cell"))
        rows = []
        for cond in spec.conditions:
            sub = {r["family"]: r["cell"] for r in mat.filter(pl.col("condition") == cond.name).iter_rows(named=True)}
            if sub:
                rows.append({"condition": cond.name, "banned chars leaked": leak.get(cond.name, "n/a"),
                             **{f: sub[f] for f in shown}})
        table = pl.DataFrame(rows, schema={"condition": pl.Utf8, "banned chars leaked": pl.Utf8,
                                           **{f: pl.Utf8 for f in shown}})
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            plot = matrix_heatmap(mat.filter(pl.col("family").is_in(shown)), row="condition", col="family",
                                  value="share", label="cell", midpoint=0.0, fill_label="share",
                                  title=f"{spec.name}: delimiter families used (share of explanations)")
            path = save_png(plot, Path(out_dir) / "figures" / f"{spec.name}_substitution.png", width=8.0,
                            height=max(2.5, 0.5 * len(spec.conditions) + 1.8))
        text = ("Substitution matrix: explanations (k/N) with at least one span of each delimiter family, any "
                "nesting depth; † = the condition bans that family; `banned chars leaked` = explanations containing "
                "a character the condition bans. Families no condition used are left out.")
        return [ReportSection(title=f"{spec.name}: leak audit and substitution matrix", text=text, table=table,
                              figures=[(path, "share of explanations using each delimiter family, per condition "
                                              "(k/N in the cells; † = banned in that condition).")])]
