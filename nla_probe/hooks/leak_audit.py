"""Delimiter leak audit: which delimiter families decodes use, and what replaces a banned family.

Definitions (families from :mod:`nla_probe.text.delimiters`; text = the parsed explanation unless
``field="raw_text"``):

* ``n_chars`` — occurrences of the family's characters in the text (every occurrence: the
  apostrophe of ``don't`` counts for ``single_quotes``).  A character ban is exact when the
  banned families have ``n_chars == 0`` in every decode.
* ``n_spans`` — spans of the family found by :func:`nla_probe.text.spans.find_spans` (all nesting
  depths; apostrophes and unmatched marks are not spans).  This is "used as a delimiter".
* A decode **uses** a family when its count in the chosen ``unit`` (``"spans"`` by default, or
  ``"chars"``) is > 0.  :func:`usage_table` reports, per condition and family, ``k/N`` = decodes
  that use it / decodes.
* **Substitution matrix** (:func:`substitution_matrix`, paired by ``row`` between a baseline
  condition and a ban condition): for each banned family ``b``, ``n`` = rows whose baseline decode
  uses ``b``; among them, column ``x ≠ b`` counts rows whose ban decode uses ``x`` while the
  baseline decode of the same row did not (``x`` replaced ``b``); column ``b`` counts rows where
  the ban decode still uses ``b`` (a leak); column ``"none"`` counts rows whose ban decode uses
  neither ``b`` nor any family new to that row (pure paraphrase).  A row can count under several
  replacements, so a row of the matrix may sum to more than ``n``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nla_probe.errors import InputError
from nla_probe.text.delimiters import expand_family_names, get_family, resolve_chars
from nla_probe.text.spans import find_spans

UNITS = ("spans", "chars")
FIELDS = ("explanation", "raw_text")


@dataclass(frozen=True)
class FamilyUse:
    """Use of one family in one text: ``chars`` occurrences and ``spans`` (module doc)."""

    chars: int
    spans: int


def audit_text(text: str, families: str | Iterable[str] = "all") -> dict[str, FamilyUse]:
    """Per family, how often ``text`` uses it (see module doc)."""
    if not isinstance(text, str):
        raise InputError(f"audit_text: expected a str, found {type(text).__name__}")
    names = expand_family_names(families)
    spans = Counter(s.family for s in find_spans(text, names).spans)
    return {f: FamilyUse(sum(text.count(c) for c in get_family(f).chars), spans.get(f, 0)) for f in names}


def count_chars(texts: Iterable[str], chars: Iterable[str]) -> list[int]:
    """Occurrences of any of ``chars`` in each text (the check behind an exact ban)."""
    cs = set(chars)
    return [sum(ch in cs for ch in t) for t in texts]


def banned_families(hook_specs: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """Families a list of hook specs bans: those named in ``ban_chars`` specs, plus every family
    whose characters are all among the banned characters."""
    named: list[str] = []
    chars: set[str] = set()
    for spec in hook_specs:
        if spec.get("name") != "ban_chars":
            continue
        fams = spec.get("families", ())
        fams = (fams,) if isinstance(fams, str) else tuple(fams)
        named += [f for f in expand_family_names(fams) if f not in named]
        chars |= resolve_chars(fams, spec.get("chars", ""))
    covered = [f for f in expand_family_names("all") if f not in named and get_family(f).charset <= chars]
    return tuple(named + covered)


def _texts_of(items: Any, field: str) -> tuple[list[int], list[str], tuple[str, ...]]:
    """(rows, texts, banned families) of a list of decodes, a list of str or a frame."""
    if field not in FIELDS:
        raise InputError(f"field: expected one of {list(FIELDS)}, found {field!r}")
    if hasattr(items, "columns") and hasattr(items, "get_column"):  # a polars frame
        if field not in items.columns:
            raise InputError(f"audit: expected a column {field!r}, found columns {items.columns}")
        rows = items.get_column("row").to_list() if "row" in items.columns else list(range(items.height))
        return [int(r) for r in rows], [str(t) for t in items.get_column(field).to_list()], ()
    items = list(items)
    if all(isinstance(x, str) for x in items):
        return list(range(len(items))), items, ()
    if not all(hasattr(x, field) and hasattr(x, "row") for x in items):
        raise InputError("audit: expected decodes (nla_probe.nla.generation.Decode), strings or a frame")
    specs = {tuple(sorted(str(s) for s in x.hooks)) for x in items}
    banned = banned_families(items[0].hooks) if len(specs) == 1 and items else ()
    return [x.row for x in items], [getattr(x, field) for x in items], banned


def audit_conditions(conditions: Mapping[str, Any], *, families: str | Iterable[str] = "all",
                     field: str = "explanation") -> Any:
    """A long polars frame, one row per (condition, decode row, family).

    Args:
        conditions: condition label -> decodes (list of :class:`~nla_probe.nla.generation.Decode`),
            texts (list of str) or a frame with ``row`` and ``field`` columns.
        families: families to audit (names or unions).
        field: ``"explanation"`` or ``"raw_text"``.

    Returns:
        Columns ``condition, row, family, n_chars, n_spans, banned`` (``banned``: whether the
        condition's hooks ban the family; known only for decodes that share one hook list).
    """
    import polars as pl

    if not isinstance(conditions, Mapping) or not conditions:
        raise InputError("audit_conditions: expected a non-empty mapping condition -> decodes")
    names = expand_family_names(families)
    cols: dict[str, list] = {k: [] for k in ("condition", "row", "family", "n_chars", "n_spans", "banned")}
    for label, items in conditions.items():
        rows, texts, banned = _texts_of(items, field)
        for r, t in zip(rows, texts):
            for fam, use in audit_text(t, names).items():
                for k, v in zip(cols, (str(label), r, fam, use.chars, use.spans, fam in banned)):
                    cols[k].append(v)
    return pl.DataFrame(cols, schema={"condition": pl.String, "row": pl.Int64, "family": pl.String,
                                      "n_chars": pl.Int64, "n_spans": pl.Int64, "banned": pl.Boolean})


def audit_decodes(decodes: Any, *, condition: str = "all", families: str | Iterable[str] = "all",
                  field: str = "explanation") -> Any:
    """:func:`audit_conditions` for a single condition."""
    return audit_conditions({condition: decodes}, families=families, field=field)


def _unit_col(unit: str) -> str:
    if unit not in UNITS:
        raise InputError(f"unit: expected one of {list(UNITS)}, found {unit!r}")
    return "n_spans" if unit == "spans" else "n_chars"


def usage_table(audit: Any, unit: str = "spans") -> Any:
    """Per condition and family: ``k`` decodes that use it, ``n`` decodes, ``share = k/n`` and
    ``label = "k/n"``; also ``total`` = summed count (spans or characters)."""
    import polars as pl

    col = _unit_col(unit)
    return (audit.group_by("condition", "family", maintain_order=True)
            .agg(k=(pl.col(col) > 0).sum().cast(pl.Int64), n=pl.len().cast(pl.Int64), total=pl.col(col).sum(),
                 banned=pl.col("banned").any())
            .with_columns(share=pl.col("k") / pl.col("n"),
                          label=pl.format("{}/{}", pl.col("k"), pl.col("n"))))


def _used(audit: Any, condition: str, col: str) -> dict[int, set[str]]:
    import polars as pl

    sub = audit.filter(pl.col("condition") == condition)
    if sub.height == 0:
        raise InputError(f"substitution_matrix: expected condition {condition!r} in the audit, found "
                         f"{sorted(set(audit.get_column('condition').to_list()))}")
    out: dict[int, set[str]] = {r: set() for r in sub.get_column("row").to_list()}
    for r, fam, c in sub.select("row", "family", col).iter_rows():
        if c > 0:
            out[r].add(fam)
    return out


def substitution_matrix(audit: Any, baseline: str, condition: str, banned: Sequence[str] | None = None,
                        unit: str = "spans") -> Any:
    """What replaced each banned family, paired by row (definition in the module doc).

    Args:
        audit: an :func:`audit_conditions` frame holding both conditions.
        baseline: label of the unbanned condition.
        condition: label of the ban condition.
        banned: banned families (default: those flagged ``banned`` for ``condition``).
        unit: ``"spans"`` or ``"chars"``.

    Returns:
        Long frame ``banned_family, replacement, k, n, share`` (``replacement`` is a family name,
        the banned family itself for leaks, or ``"none"``).
    """
    import polars as pl

    col = _unit_col(unit)
    if banned is None:
        flagged = audit.filter((pl.col("condition") == condition) & pl.col("banned"))
        banned = sorted(set(flagged.get_column("family").to_list()))
        if not banned:
            raise InputError(f"substitution_matrix: no banned family known for {condition!r}; pass banned=[...]")
    banned = expand_family_names(banned)
    base, cond = _used(audit, baseline, col), _used(audit, condition, col)
    missing = sorted(set(base) ^ set(cond))
    if missing:
        raise InputError(f"substitution_matrix: expected the same rows in {baseline!r} and {condition!r}; "
                         f"{len(missing)} rows are in only one (e.g. {missing[:5]})")
    families = sorted(set(audit.get_column("family").to_list()))
    out: dict[str, list] = {"banned_family": [], "replacement": [], "k": [], "n": []}
    for b in banned:
        rows = [r for r in base if b in base[r]]
        counts = Counter()
        for r in rows:
            new = cond[r] - base[r]
            counts.update(new)
            if b in cond[r]:
                counts[b] += 1
            if not new and b not in cond[r]:
                counts["none"] += 1
        for x in [*families, "none"]:
            out["banned_family"].append(b)
            out["replacement"].append(x)
            out["k"].append(counts.get(x, 0))
            out["n"].append(len(rows))
    frame = pl.DataFrame(out, schema={"banned_family": pl.String, "replacement": pl.String, "k": pl.Int64,
                                      "n": pl.Int64})
    return frame.with_columns(share=pl.when(pl.col("n") > 0).then(pl.col("k") / pl.col("n")).otherwise(None))


def leak_columns(texts: Sequence[str], families: str | Iterable[str] = "all",
                 unit: str = "spans") -> dict[str, list[int]]:
    """Per-decode counts as columns ``leak_<family>`` (spans or characters), to attach to a result frame."""
    _unit_col(unit)
    names = expand_family_names(families)
    cols: dict[str, list[int]] = {f"leak_{f}": [] for f in names}
    for t in texts:
        for f, use in audit_text(t, names).items():
            cols[f"leak_{f}"].append(use.spans if unit == "spans" else use.chars)
    return cols
