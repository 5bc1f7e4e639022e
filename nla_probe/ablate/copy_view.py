"""Copy-detection detail for the run explorer: the longest shared run in the source context, next
to the null's.

For experiments of kind ``copying`` and at most :data:`COPY_ROWS` shown activations, per condition:
the longest run of words the explanation shares with its true source context
(:func:`nla_probe.copying.longest_shared_run`, the kind's normaliser and window), and the null
context (a context of another document, among the ``n_null`` the run drew for this row) whose run
with the explanation is longest.  The null draw is the run's: the same pools of the experiment's
rows in ``sample_id`` order, the same seed (:func:`nla_probe.copying.null_sources`), so the run
lengths equal the result parquet's ``run_len`` and ``null_run_lens``.  Contexts are cut to
:data:`SNIPPET` characters on each side of the run.

The source texts come from the run's data file (``info["data"]["path"]``); when it is gone, the
page says so and shows the stored numbers only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Activations per copying experiment with a copy view.
COPY_ROWS = 300
#: Characters of context kept on each side of a run.
SNIPPET = 160


def _snippet(text: str, a: int | None, b: int | None) -> tuple[str, int, int, int]:
    """``(snippet, run start, run end, cut)`` with run offsets inside the snippet (code points);
    ``cut`` = characters dropped at the start.  No run: the end of the text."""
    if a is None or b is None or b <= a:
        lo = max(0, len(text) - 2 * SNIPPET)
        return text[lo:], -1, -1, lo
    lo, hi = max(0, a - SNIPPET), min(len(text), b + SNIPPET)
    return text[lo:hi], a - lo, b - lo, lo


def copy_view(result: Any, spec: Any, shown: list[int], explanations: dict[str, dict[int, str]],
              add: Any, to16: Any) -> dict:
    """``{"note", "rows": {str(sample_id): {condition: entry}}}`` for a copying experiment.

    ``explanations[condition][sample_id]`` are the texts the kind measured (every row of the
    experiment); ``add`` puts a string in the page's table and returns its index; ``to16(text, k)``
    converts a code-point offset of ``text`` to UTF-16.
    """
    import polars as pl

    from nla_probe.copying import longest_shared_run, null_sources, source_context
    from nla_probe.copying.detection import CopySettings, _pools
    from nla_probe.copying.nulls import _codes
    from nla_probe.copying.wordruns import DEFAULT_NORMALIZER, WordNormalizer

    path = Path(str(result.info.get("data", {}).get("path", "")))
    if not path.is_file():
        return {"note": f"source texts not shown: the run's data file {path} is not on this machine", "rows": {}}
    data = pl.read_parquet(path, columns=["doc_id", "source_text", "char_end"])
    p = spec.params
    norm = WordNormalizer.from_dict(p["normalizer"]) if p.get("normalizer") else DEFAULT_NORMALIZER
    window = p.get("window") or None
    k_null = int(p.get("n_null", 0))
    pool_size = CopySettings().pool_size
    ids = sorted({s for per in explanations.values() for s in per})
    src = data["source_text"].to_list()
    ends = data["char_end"].to_list()
    docs = [str(data["doc_id"][s]) for s in ids]
    codes = _codes(docs)
    nulls: dict[int, list[int]] = {}
    for pool, (a, b) in enumerate(_pools(len(ids), pool_size)):
        got = null_sources(codes[a:b], k_null, seed=[spec.seed, pool])
        for i in range(a, b):
            nulls[ids[i]] = [ids[a + int(j)] for j in got[i - a]]
    keep = shown[:COPY_ROWS]
    rows: dict[str, dict] = {}
    for sid in keep:
        ctx = source_context(src[sid], int(ends[sid]), window)
        per: dict[str, dict] = {}
        for cond, texts in explanations.items():
            expl = texts.get(sid)
            if expl is None:
                continue
            run = longest_shared_run(expl, ctx, norm)
            snip, ra, rb, cut = _snippet(ctx, run.b_char_start, run.b_char_end)
            entry = {"len": run.length, "ctx": add(snip), "cut": cut > 0,
                     "ctx_run": [to16(snip, ra), to16(snip, rb)] if ra >= 0 else None,
                     "expl_run": ([to16(expl, run.a_char_start), to16(expl, run.a_char_end)]
                                  if run.length else None), "null_lens": [], "null": None}
            best = None
            for j in nulls.get(sid, []):
                nctx = source_context(src[j], int(ends[j]), window)
                nrun = longest_shared_run(expl, nctx, norm)
                entry["null_lens"].append(nrun.length)
                if best is None or nrun.length > best[1].length:
                    best = (j, nrun, nctx)
            if best is not None:
                j, nrun, nctx = best
                snip, ra, rb, cut = _snippet(nctx, nrun.b_char_start, nrun.b_char_end)
                entry["null"] = {"sample": j, "doc": add(str(data["doc_id"][j])), "len": nrun.length, "ctx": add(snip),
                                 "cut": cut > 0,
                                 "ctx_run": [to16(snip, ra), to16(snip, rb)] if ra >= 0 else None,
                                 "expl_run": ([to16(expl, nrun.a_char_start), to16(expl, nrun.a_char_end)]
                                              if nrun.length else None)}
            per[cond] = entry
        rows[str(sid)] = per
    note = (f"copy detection shown for {len(keep)} of {len(shown)} activations on the page (cap {COPY_ROWS}); "
            f"{k_null} null contexts per row, window {window or 'the whole text up to the token'}")
    return {"note": note, "rows": rows}


def to16(text: str, k: int) -> int:
    """UTF-16 offset of code-point offset ``k`` of ``text``."""
    return k + sum(1 for ch in text[:k] if ord(ch) > 0xFFFF) if k > 0 else k


__all__ = ["COPY_ROWS", "SNIPPET", "copy_view", "to16"]
