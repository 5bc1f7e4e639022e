"""The run explorer's data: what ``report.html`` and the notebook view show, as one JSON-able dict.

:func:`build_data` reads an :class:`~nla_probe.ablate.result.AblationResult` and returns, per
experiment: the conditions (description, banned delimiter families), one entry per activation
(``sample_id``, document, position) with, per condition, ``fve_nrm``, the AV's explanation, the
text the AR scored, tag status, token counts and the kind's own columns; the delimiter spans of
every text (all registered families, all nesting depths, from :func:`nla_probe.text.spans.find_spans`);
and the leave-one-out attribution rows stored by the run (:mod:`nla_probe.ablate.attribution`).
:mod:`nla_probe.ablate.explorer` turns the dict into the page.

Offsets in the dict are UTF-16 code units (what JavaScript strings index), not the code points of
the parquet files; they differ only for characters above U+FFFF.

Size cap (``max_rows`` activations per experiment, default :data:`MAX_ROWS`): beyond it the page
keeps every attributed row, the :data:`TOP_DROPS` largest FVE drops against the baseline under each
condition, and a seeded random sample of the rest; the page says so and how many.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from nla_probe.errors import InputError

#: Default cap on activations per experiment in one page.
MAX_ROWS = 10_000
#: Rows with the largest drops kept per condition when sampling.
TOP_DROPS = 20
#: Result columns shown per condition in the detail view (besides fve_nrm, explanation, text).
DETAIL_COLUMNS = ("tag_status", "n_tokens", "finish_reason", "ar_tokens", "overflow", "cos", "mse_nrm")
_ID_COLUMNS = ("experiment", "condition", "sample_id", "doc_id", "position", "explanation", "text", "fve_nrm")


class _Strings:
    """A table of distinct strings; the dict refers to strings by index."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def add(self, s: Any) -> int:
        if s is None:
            return -1
        s = str(s)
        k = self.index.get(s)
        if k is None:
            k = self.index[s] = len(self.index)
        return k

    def many(self, values: Sequence[Any]) -> list[int]:
        return [self.add(v) for v in values]

    @property
    def values(self) -> list[str]:
        return list(self.index)


def utf16_offsets(text: str) -> list[int] | None:
    """Code-point offset -> UTF-16 offset table of ``text`` (None when they coincide)."""
    if text.isascii() or max(text) < "\U00010000":
        return None
    out, pos = [0], 0
    for ch in text:
        pos += 2 if ord(ch) > 0xFFFF else 1
        out.append(pos)
    return out


def _to16(table: list[int] | None, k: int) -> int:
    return k if table is None else table[k]


def _num(x: Any) -> Any:
    """JSON-safe scalar: NaN/inf -> None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return _num(x.item())
    return x


def text_spans(text: str, families: dict[str, int]) -> list[int]:
    """Flat ``[start, end, family index, depth, ...]`` of every span of ``text`` (UTF-16 offsets)."""
    from nla_probe.text.spans import parse_raw

    raw, _ = parse_raw(text, tuple(families))
    if not raw:
        return []
    t16 = utf16_offsets(text)
    out: list[int] = []
    for s in sorted(raw, key=lambda t: (t[0], -t[1])):
        out += [_to16(t16, s[0]), _to16(t16, s[1]), families[s[4]], s[7]]
    return out


def choose_rows(frame: Any, baseline: str, conditions: Sequence[str], max_rows: int, keep: Sequence[int],
                seed: int = 0) -> tuple[list[int], str]:
    """Sample ids shown for one experiment and a sentence saying which (module doc)."""
    import polars as pl

    ids = sorted(set(frame["sample_id"].to_list()))
    if len(ids) <= max_rows:
        return ids, f"all {len(ids)} activations"
    known = set(ids)
    chosen = [s for s in dict.fromkeys(keep) if s in known][:max_rows]
    base = frame.filter(pl.col("condition") == baseline).select("sample_id", pl.col("fve_nrm").alias("_b"))
    n_keep = len(chosen)
    for cond in conditions:
        if cond == baseline or len(chosen) >= max_rows:
            continue
        d = (frame.filter(pl.col("condition") == cond).join(base, on="sample_id")
             .with_columns((pl.col("_b") - pl.col("fve_nrm")).alias("_d")).drop_nans("_d").drop_nulls("_d")
             .sort(["_d", "sample_id"], descending=[True, False]).head(TOP_DROPS))
        taken = set(chosen)
        chosen += [s for s in d["sample_id"].to_list() if s not in taken][:max_rows - len(chosen)]
    n_top = len(chosen) - n_keep
    rest = np.array(sorted(known - set(chosen)), dtype=np.int64)
    need = max_rows - len(chosen)
    rng = np.random.default_rng(seed)
    sample = rest[rng.permutation(rest.size)[:need]].tolist() if need > 0 else []
    chosen = sorted(set(chosen) | set(sample))
    note = (f"{len(chosen)} of {len(ids)} activations (cap {max_rows}): the {n_keep} with ΔFVE attribution, "
            f"the {n_top} largest FVE drops against {baseline} (up to {TOP_DROPS} per condition) and a random "
            f"sample (seed {seed}) of {len(sample)} others; every row is in the result parquet")
    return chosen, note


def _condition_text(spec: Any, cond: Any) -> str:
    from nla_probe.ablate.report import describe_condition

    line = describe_condition(spec, cond)
    return line[2:].replace("`", "") if line.startswith("- ") else line.replace("`", "")


def _attribution(att: Any, name: str, expl_by_id: dict[int, str], families: dict[str, int]) -> tuple[dict, list]:
    """``{str(sample_id): {full, why, parts}}`` for rows whose stored explanation is the shown one."""
    import polars as pl

    out: dict[str, dict] = {}
    deltas: list[float] = []
    if att is None or att.height == 0:
        return out, deltas
    sub = att.filter(pl.col("experiment") == name).sort(["sample_id", "unit", "index"],
                                                         descending=[False, True, False])  # spans first
    for (sid,), g in sub.group_by("sample_id", maintain_order=True):
        text = expl_by_id.get(int(sid))
        if text is None or g["explanation"][0] != text:
            continue
        t16 = utf16_offsets(text)
        parts = []
        for r in g.iter_rows(named=True):
            parts.append([0 if r["unit"] == "span" else 1, _to16(t16, r["start"]), _to16(t16, r["end"]),
                          families.get(r["family"], -1) if r["family"] else -1, _num(r["delta_fve"]),
                          _num(r["fve_without"])])
            if r["delta_fve"] is not None and math.isfinite(r["delta_fve"]):
                deltas.append(r["delta_fve"])
        out[str(int(sid))] = {"full": _num(g["fve_full"][0]), "why": g["reason"][0], "families": g["families"][0],
                              "parts": parts}
    return out, deltas


def experiment_data(result: Any, name: str, strings: _Strings, families: dict[str, int], *, max_rows: int,
                    rows: Sequence[int] | None, seed: int, att: Any) -> dict:
    """The page data of one experiment (module doc)."""
    import polars as pl

    from nla_probe.ablate.kinds import get_experiment
    from nla_probe.hooks.leak_audit import banned_families
    from nla_probe.surgery.view import ColourScale, nice_limit

    spec = result.spec(name)
    kind = get_experiment(spec.kind)
    extras = list(kind.columns)
    present = result.scan(name).collect_schema().names()
    cols = [c for c in dict.fromkeys([*_ID_COLUMNS, *DETAIL_COLUMNS, *extras]) if c in present]
    f = result.scan(name).select(cols).collect()
    conds = [c.name for c in spec.conditions if c.name in set(f["condition"].to_list())]
    keep = [] if att is None else att.filter(pl.col("experiment") == name)["sample_id"].unique().to_list()
    if rows is not None:
        want = {int(r) for r in rows}
        ids = sorted(want & set(f["sample_id"].to_list()))
        note = f"{len(ids)} activations chosen by the caller (of {f['sample_id'].n_unique()})"
    else:
        ids, note = choose_rows(f.select("condition", "sample_id", "fve_nrm"), spec.baseline, conds, max_rows,
                                keep, seed)
    copy = None
    if spec.kind == "copying":
        from nla_probe.ablate.copy_view import copy_view, to16

        measured = {c: dict(zip(g["sample_id"].to_list(), g["text"].to_list()))
                    for (c,), g in f.group_by("condition", maintain_order=True)}
        copy = copy_view(result, spec, ids, measured, strings.add, to16)
    order = pl.DataFrame({"sample_id": ids}, schema={"sample_id": f.schema["sample_id"]})
    f = f.filter(pl.col("sample_id").is_in(ids))
    meta = order.join(f.unique("sample_id", keep="first").select("sample_id", "doc_id", "position"),
                      on="sample_id", how="left")
    out_conds = []
    expl_by_id: dict[int, str] = {}
    for c in spec.conditions:
        if c.name not in conds:
            continue
        g = order.join(f.filter(pl.col("condition") == c.name), on="sample_id", how="left")
        expl = g["explanation"].to_list()
        if c.name == spec.baseline:
            expl_by_id = {int(s): e for s, e in zip(ids, expl) if e is not None}
        text = g["text"].to_list()
        entry = {
            "name": c.name, "desc": _condition_text(spec, c), "baseline": c.name == spec.baseline,
            "banned": [families[x] for x in banned_families(c.hooks) if x in families],
            "edits": bool(c.transforms),
            "fve": [_num(x) for x in g["fve_nrm"].to_list()],
            "expl": strings.many(expl),
            "text": [-2 if t == e else strings.add(t) for t, e in zip(text, expl)],
            "cols": {k: ([strings.add(v) if v is not None else -1 for v in g[k].to_list()]
                         if g.schema[k] == pl.Utf8 else [_num(v) for v in g[k].to_list()])
                     for k in [*DETAIL_COLUMNS, *extras] if k in g.columns},
            "strcols": [k for k in [*DETAIL_COLUMNS, *extras] if k in g.columns and g.schema[k] == pl.Utf8],
        }
        out_conds.append(entry)
    attr, deltas = _attribution(att, name, expl_by_id, families)
    n_att = 0 if att is None else att.filter(pl.col("experiment") == name)["sample_id"].n_unique()
    sel = result.info.get("selection", {}).get(name, {})
    return {
        "name": name, "kind": spec.kind, "baseline": spec.baseline, "metric": spec.metrics.primary,
        "denominator": result._denominator(name)[0], "n_total": int(sel.get("n_selected", len(ids))),
        "ids": ids, "doc": strings.many(meta["doc_id"].to_list()),
        "pos": [_num(x) for x in meta["position"].to_list()], "conds": out_conds, "rows_note": note,
        "attr": attr, "attr_n": n_att, "scale": ColourScale(nice_limit(deltas)).to_dict(),
        "attr_families": sorted({v["families"] for v in attr.values()}), "copy": copy,
    }


def build_data(result: Any, *, experiments: Sequence[str] | None = None, rows: Sequence[int] | None = None,
               max_rows: int = MAX_ROWS, seed: int = 0) -> dict:
    """The explorer dict of ``result`` (module doc).

    Args:
        result: an :class:`~nla_probe.ablate.result.AblationResult`.
        experiments: which experiments (default: all).
        rows: show exactly these ``sample_id`` s (default: all, sampled beyond ``max_rows``).
        max_rows: cap on activations per experiment.
        seed: seed of the random sample beyond the cap.
    """
    from nla_probe.ablate.attribution import load_attribution
    from nla_probe.text.delimiters import expand_family_names

    if not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 1:
        raise InputError(f"max_rows: expected an integer >= 1, found {max_rows!r}")
    names = list(experiments) if experiments is not None else result.experiments
    for n in names:
        result._check(n)
    fams = {f: i for i, f in enumerate(expand_family_names("all"))}
    strings = _Strings()
    att = load_attribution(result.root)
    exps = [experiment_data(result, n, strings, fams, max_rows=max_rows, rows=rows, seed=seed, att=att)
            for n in names]
    values = strings.values
    return {"version": 1, "families": list(fams), "strings": values,
            "spans": [text_spans(s, fams) for s in values], "experiments": exps}


__all__ = ["DETAIL_COLUMNS", "MAX_ROWS", "TOP_DROPS", "build_data", "choose_rows", "experiment_data", "text_spans",
           "utf16_offsets"]
