"""Copy detection: the longest run of words an explanation shares with its source context.

The AV never sees text, only one vector, so a "quote" in its explanation can match the source only
by reconstruction.  This module measures how much actually matches (definitions in
``docs/copying.md``):

* **Words** and the **longest shared run** are those of :mod:`nla_probe.copying.wordruns`
  (:class:`~nla_probe.copying.wordruns.WordNormalizer`, :func:`~nla_probe.copying.wordruns.longest_shared_run`;
  both are re-exported here).
* **Source context.** ``source_text[:char_end]`` (up to and including the activation's token), or
  its last ``window`` whitespace-separated chunks.
* **Null.** Each explanation against ``n_null`` contexts of samples from *other* documents: column
  ``k`` of :func:`null_sources` is a permutation of the samples that never maps a sample to its own
  document, and a row never repeats a source.

Nulls are drawn within *pools* of consecutive samples (``pool_size``), so memory stays bounded and
:func:`copy_detection` and :func:`copy_detection_to_parquet` give identical rows for one seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nla_probe.analysis.stats import cluster_quantile_ci
from nla_probe.copying.nulls import _codes, _doc_keys, doc_derangement, null_sources, source_context
from nla_probe.copying.summary import summarize_copying, summarize_spans
from nla_probe.copying.wordruns import (
    DEFAULT_NORMALIZER,
    PUNCTUATION_MODES,
    IndexedWords,
    SharedRun,
    WordNormalizer,
    Words,
    locate_run,
    longest_shared_run,
    range_layout,
    range_maxes,
    run_profile,
    shared_run_lengths,
)
from nla_probe.errors import InputError, check_keys

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

__all__ = [
    "DEFAULT_NORMALIZER", "PUNCTUATION_MODES", "RESULT_VERSION", "CopyResult", "CopySettings", "SharedRun",
    "WordNormalizer", "Words", "cluster_quantile_ci", "copy_detection", "copy_detection_to_parquet",
    "doc_derangement", "iter_copy_detection", "longest_shared_run", "null_sources", "shared_run_lengths",
    "source_context", "summarize_copying", "summarize_spans",
]

RESULT_VERSION = 1


@dataclass(frozen=True)
class CopySettings:
    """Parameters of a copy-detection run (recorded in the result's ``info``).

    Attributes:
        n_null: null source contexts per explanation (other documents, see :func:`null_sources`).
        seed: seed of the null draw; pool ``p`` uses ``default_rng([seed, p])``.
        window: context = last ``window`` whitespace chunks up to the activation's token (None: all).
        normalizer: word definition.
        spans: also measure each quoted span (outermost spans of ``span_families``).
        span_families: delimiter families of :func:`nla_probe.text.spans.find_spans`.
        fuzzy_threshold: a span is near-verbatim if ``rapidfuzz.fuzz.partial_ratio`` of its
            normalised words (joined by spaces) against the normalised context is >= this (0-100).
        pool_size: nulls are drawn within consecutive pools of about this many samples.
    """

    n_null: int = 20
    seed: int = 0
    window: int | None = None
    normalizer: WordNormalizer = DEFAULT_NORMALIZER
    spans: bool = True
    span_families: str | tuple[str, ...] = "quotes"
    fuzzy_threshold: float = 90.0
    pool_size: int = 4096

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise InputError(f"{name}: expected {expected}, found {getattr(self, name)!r}")

        need(isinstance(self.n_null, (int, np.integer)) and self.n_null >= 0, "n_null", "an int >= 0")
        need(isinstance(self.seed, (int, np.integer)), "seed", "an int")
        need(self.window is None or (isinstance(self.window, (int, np.integer)) and self.window >= 1),
             "window", "None or an int >= 1")
        need(isinstance(self.normalizer, WordNormalizer), "normalizer", "a WordNormalizer")
        need(isinstance(self.spans, bool), "spans", "a bool")
        need(isinstance(self.fuzzy_threshold, (int, float)) and 0 <= self.fuzzy_threshold <= 100,
             "fuzzy_threshold", "a number in [0, 100]")
        need(isinstance(self.pool_size, (int, np.integer)) and self.pool_size >= 2, "pool_size", "an int >= 2")
        if not isinstance(self.span_families, str):
            object.__setattr__(self, "span_families", tuple(self.span_families))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["normalizer"] = self.normalizer.to_dict()
        d["span_families"] = self.span_families if isinstance(self.span_families, str) else list(self.span_families)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CopySettings:
        check_keys(d, cls.__dataclass_fields__, "CopySettings", InputError)
        d = dict(d)
        if isinstance(d.get("normalizer"), dict):
            d["normalizer"] = WordNormalizer.from_dict(d["normalizer"])
        return cls(**d)


def _schemas(doc_dtype) -> tuple[dict, dict]:
    import polars as pl

    i64, f64, s = pl.Int64, pl.Float64, pl.String
    common = {"sample_id": i64, "doc_id": doc_dtype, "condition": s}
    samples = common | {
        "n_words": i64, "n_context_words": i64, "context_char_start": i64, "context_char_end": i64,
        "run_len": i64, "run_text": s, "expl_word_start": i64, "expl_word_end": i64, "expl_char_start": i64,
        "expl_char_end": i64, "ctx_word_start": i64, "ctx_word_end": i64, "src_char_start": i64,
        "src_char_end": i64, "n_spans": i64, "null_sample_ids": pl.List(i64), "null_run_lens": pl.List(i64),
        "null_median": f64, "null_p90": f64, "null_max": i64, "run_percentile": f64,
    }
    spans = common | {
        "span_index": i64, "family": s, "span_char_start": i64, "span_char_end": i64, "span_text": s,
        "n_words": i64, "run_len": i64, "run_text": s, "expl_word_start": i64, "expl_word_end": i64,
        "ctx_word_start": i64, "ctx_word_end": i64, "src_char_start": i64, "src_char_end": i64,
        "verbatim": pl.Boolean, "fuzzy_score": f64, "near_verbatim": pl.Boolean,
        "null_run_lens": pl.List(i64), "null_max": i64, "null_verbatim_rate": f64,
    }
    return samples, spans


def _run_fields(size: int, ai: int, bj: int, aw: Words, cw: Words, ctx_start: int, expl_chars: bool) -> dict:
    """Run text and offsets of a located run for a result row (offsets None for an empty run).

    Word offsets are in the explanation's / the context's words; ``src_char_*`` are raw character
    offsets in the source text; ``expl_char_*`` (sample rows only) in the explanation.
    """
    keys = ("expl_word_start", "expl_word_end", "expl_char_start", "expl_char_end", "ctx_word_start",
            "ctx_word_end", "src_char_start", "src_char_end")
    if size == 0:
        vals = (None,) * 8
    else:
        vals = (ai, ai + size, aw.starts[ai], aw.ends[ai + size - 1], bj, bj + size,
                ctx_start + cw.starts[bj], ctx_start + cw.ends[bj + size - 1])
    out = dict(zip(keys, vals))
    if not expl_chars:
        out = {k: v for k, v in out.items() if not k.startswith("expl_char")}
    out["run_text"] = " ".join(aw.words[ai:ai + size]) if size else ""
    return out


def _pool_frames(expl, srcs, ends, docs, conds, codes, offset: int, pool: int, st: CopySettings, doc_dtype):
    """Sample and span frames of one pool (samples ``offset .. offset + len(expl) - 1``)."""
    import polars as pl
    from rapidfuzz import fuzz

    from nla_probe.text.spans import find_spans

    n, k_null, norm = len(expl), st.n_null, st.normalizer
    nulls = null_sources(codes, k_null, seed=[st.seed, pool])
    vocab: dict[str, int] = {}
    contexts, ctx_start, ctx_end, ctx_texts = [], [], [], []
    for i in range(n):  # only word ids and indexes are kept for every context of the pool
        if not isinstance(srcs[i], str):
            raise InputError(f"sources[{offset + i}]: expected a str, found {type(srcs[i]).__name__}")
        end = len(srcs[i]) if ends is None else ends[i]
        contexts.append(source_context(srcs[i], end, st.window))
        ctx_end.append(int(end))
        ctx_start.append(int(end) - len(contexts[i]))
        ctx_texts.append(IndexedWords(norm.tokenize(contexts[i]).words, vocab))
    s_rows: list[dict] = []
    p_rows: list[dict] = []
    for i in range(n):
        if not isinstance(expl[i], str):
            raise InputError(f"explanations[{offset + i}]: expected a str, found {type(expl[i]).__name__}")
        aw, cw = norm.tokenize(expl[i]), norm.tokenize(contexts[i])
        a, src = IndexedWords(aw.words, vocab), ctx_texts[i]
        spans = find_spans(expl[i], st.span_families).outermost() if st.spans else ()
        ranges = [(int(np.searchsorted(aw.ends, sp.inner_start, "right")),
                   int(np.searchsorted(aw.starts, sp.inner_end, "left"))) for sp in spans]
        _, ell = run_profile(a, src, need_ell=True)
        size, ai, bj = locate_run(a, src, ell, 0, len(aw.words))
        layout = range_layout(ranges)
        null_lens, span_null = [], np.zeros((len(spans), k_null), np.int64)
        for k, j in enumerate(nulls[i]):
            best, ell_j = run_profile(a, ctx_texts[j], need_ell=bool(spans))
            null_lens.append(best)
            if spans:
                span_null[:, k] = range_maxes(ell_j, layout)
        nl = np.asarray(null_lens, np.float64)
        doc, cond, sid = docs[i], conds[i], offset + i
        s_rows.append({
            "sample_id": sid, "doc_id": doc, "condition": cond, "n_words": len(aw.words),
            "n_context_words": len(cw.words), "context_char_start": ctx_start[i],
            "context_char_end": ctx_end[i], "run_len": size, **_run_fields(size, ai, bj, aw, cw, ctx_start[i], True),
            "n_spans": len(spans) if st.spans else None, "null_sample_ids": [offset + int(j) for j in nulls[i]],
            "null_run_lens": null_lens, "null_median": float(np.median(nl)) if k_null else None,
            "null_p90": float(np.quantile(nl, 0.9)) if k_null else None,
            "null_max": int(nl.max()) if k_null else None,
            "run_percentile": 100.0 * (np.sum(nl < size) + 0.5 * np.sum(nl == size)) / k_null if k_null else None,
        })
        ctx_joined = None
        for r, (sp, (lo, hi)) in enumerate(zip(spans, ranges)):
            ssize, sai, sbj = locate_run(a, src, ell, lo, hi)
            nw = max(hi - lo, 0)
            if nw:
                ctx_joined = " ".join(cw.words) if ctx_joined is None else ctx_joined
                score = float(fuzz.partial_ratio(" ".join(aw.words[lo:hi]), ctx_joined))
            else:
                score = 0.0
            snl = span_null[r]
            p_rows.append({
                "sample_id": sid, "doc_id": doc, "condition": cond, "span_index": r, "family": sp.family,
                "span_char_start": sp.inner_start, "span_char_end": sp.inner_end,
                "span_text": expl[i][sp.inner_start:sp.inner_end], "n_words": nw, "run_len": ssize,
                **_run_fields(ssize, sai, sbj, aw, cw, ctx_start[i], False),
                "verbatim": bool(nw and ssize == nw), "fuzzy_score": score,
                "near_verbatim": bool(nw and score >= st.fuzzy_threshold), "null_run_lens": snl.tolist(),
                "null_max": int(snl.max()) if k_null else None,
                "null_verbatim_rate": float(np.mean((snl == nw) & (nw > 0))) if k_null else None,
            })
    s_schema, p_schema = _schemas(doc_dtype)
    return pl.DataFrame(s_rows, schema=s_schema), pl.DataFrame(p_rows, schema=p_schema)


def _check_inputs(explanations, sources, doc_ids, char_ends, conditions) -> tuple[int, list, bool, list[str]]:
    n = len(explanations)
    for name, seq in (("sources", sources), ("doc_ids", doc_ids), ("char_ends", char_ends),
                      ("conditions", conditions)):
        if seq is not None and len(seq) != n:
            raise InputError(f"{name}: expected {n} entries (one per explanation), found {len(seq)}")
    docs, is_int = _doc_keys(doc_ids)
    conds = ["all"] * n if conditions is None else [str(c) for c in conditions]
    return n, docs, is_int, conds


def _pools(n: int, pool_size: int) -> list[tuple[int, int]]:
    if n == 0:
        return []
    parts = np.array_split(np.arange(n), math.ceil(n / pool_size))
    return [(int(p[0]), int(p[-1]) + 1) for p in parts]


def iter_copy_detection(explanations: Sequence[str], sources: Sequence[str], doc_ids: Sequence,
                        settings: CopySettings = CopySettings(), *, char_ends: Sequence[int] | None = None,
                        conditions: Sequence[str] | None = None) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """Yield ``(samples, spans)`` frames pool by pool; see :func:`copy_detection` for the arguments.

    Memory held at a time: one pool's contexts, word ids and result rows.
    """
    import polars as pl

    n, docs, is_int, conds = _check_inputs(explanations, sources, doc_ids, char_ends, conditions)
    codes = _codes(docs)
    dtype = pl.Int64 if is_int else pl.String
    for p, (a, b) in enumerate(_pools(n, settings.pool_size)):
        yield _pool_frames(list(explanations[a:b]), list(sources[a:b]),
                           None if char_ends is None else list(char_ends[a:b]), docs[a:b], conds[a:b],
                           codes[a:b], a, p, settings, dtype)


@dataclass(frozen=True)
class CopyResult:
    """Copy-detection results.

    Attributes:
        samples: one row per explanation (columns in ``docs/copying.md``): its longest shared run
            with the true context, offsets, and the run lengths against ``n_null`` other-document
            contexts (``null_run_lens``) with their median/p90/max and ``run_percentile``.
        spans: one row per quoted span: run against the true context, ``verbatim``,
            ``fuzzy_score``/``near_verbatim``, and the span's null run lengths.
        info: provenance: settings (seed, normalizer, window, ...), sample and pool counts.
    """

    samples: pl.DataFrame
    spans: pl.DataFrame
    info: dict

    def summary(self, by="condition", ns: Sequence[int] = (4, 6, 8), n_boot: int = 2000, seed: int = 0,
                level: float = 0.95) -> pl.DataFrame:
        """:func:`summarize_copying` of :attr:`samples`."""
        return summarize_copying(self.samples, by=by, ns=ns, n_boot=n_boot, seed=seed, level=level)

    def span_summary(self, by="condition", n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pl.DataFrame:
        """:func:`summarize_spans` of :attr:`spans`."""
        return summarize_spans(self.spans, by=by, n_boot=n_boot, seed=seed, level=level)

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``info.json``, ``samples/part-00000.parquet`` and ``spans/part-00000.parquet``."""
        writer = _PartWriter(Path(path), overwrite)
        writer.write(self.samples, self.spans)
        return writer.close(self.info)

    @classmethod
    def load(cls, path: str | Path) -> CopyResult:
        """Read a directory written by :meth:`save` or :func:`copy_detection_to_parquet`."""
        import polars as pl

        path = Path(path)
        if not (path / "info.json").is_file():
            raise InputError(f"{path}: expected a copy-detection directory with info.json, found none")
        info = json.loads((path / "info.json").read_text())
        s_schema, p_schema = _schemas(pl.Int64 if info.get("doc_id_dtype") == "Int64" else pl.String)
        frames = []
        for sub, schema in (("samples", s_schema), ("spans", p_schema)):
            parts = sorted((path / sub).glob("part-*.parquet"))
            frames.append(pl.concat([pl.read_parquet(f) for f in parts]) if parts else pl.DataFrame(schema=schema))
        return cls(frames[0], frames[1], info)


class _PartWriter:
    """Writes numbered parquet parts and, last, ``info.json`` (a directory without it is incomplete)."""

    def __init__(self, path: Path, overwrite: bool):
        old = [path / "info.json", *path.glob("samples/part-*.parquet"), *path.glob("spans/part-*.parquet")]
        old = [f for f in old if f.exists()]
        if old and not overwrite:
            raise InputError(f"{path}: already holds copy-detection results; pass overwrite=True")
        for f in old:
            f.unlink()
        (path / "samples").mkdir(parents=True, exist_ok=True)
        (path / "spans").mkdir(exist_ok=True)
        self.path, self.n_parts = path, 0

    def write(self, samples: pl.DataFrame, spans: pl.DataFrame) -> None:
        name = f"part-{self.n_parts:05d}.parquet"
        samples.write_parquet(self.path / "samples" / name)
        spans.write_parquet(self.path / "spans" / name)
        self.n_parts += 1

    def close(self, info: dict) -> Path:
        (self.path / "info.json").write_text(json.dumps({**info, "n_parts": self.n_parts}, indent=2))
        return self.path


def _info(settings: CopySettings, n: int, doc_ids) -> dict:
    return {"kind": "copy_detection", "version": RESULT_VERSION, "settings": settings.to_dict(), "n_samples": n,
            "n_pools": len(_pools(n, settings.pool_size)),
            "doc_id_dtype": "Int64" if _doc_keys(doc_ids)[1] else "String"}


def copy_detection(explanations: Sequence[str], sources: Sequence[str], doc_ids: Sequence, *,
                   char_ends: Sequence[int] | None = None, conditions: Sequence[str] | None = None,
                   n_null: int = 20, seed: int = 0, window: int | None = None,
                   normalizer: WordNormalizer = DEFAULT_NORMALIZER, spans: bool = True,
                   span_families: str | Sequence[str] = "quotes", fuzzy_threshold: float = 90.0,
                   pool_size: int = 4096) -> CopyResult:
    """Longest shared runs of explanations with their source contexts, against shuffled-context nulls.

    Args:
        explanations: explanation texts (the text inside the explanation tags).
        sources: per sample, the document text (``source_text``); with ``char_ends`` the context is
            :func:`source_context` ``(sources[i], char_ends[i], window)``, otherwise the whole text
            (or its last ``window`` chunks).
        doc_ids: document id per sample; nulls never use a context of the same document.
        char_ends: exclusive end offset of each activation's token in its source text.
        conditions: label per sample (e.g. decode set), kept for :func:`summarize_copying`;
            default ``"all"``.
        n_null, seed, window, normalizer, spans, span_families, fuzzy_threshold, pool_size: see
            :class:`CopySettings`.

    Returns:
        :class:`CopyResult` with ``samples`` (one row per explanation, in input order) and ``spans``.
    """
    import polars as pl

    st = CopySettings(n_null, seed, window, normalizer, spans, span_families, fuzzy_threshold, pool_size)
    parts = list(iter_copy_detection(explanations, sources, doc_ids, st, char_ends=char_ends, conditions=conditions))
    info = _info(st, len(explanations), doc_ids)
    if not parts:
        s_schema, p_schema = _schemas(pl.Int64 if info["doc_id_dtype"] == "Int64" else pl.String)
        return CopyResult(pl.DataFrame(schema=s_schema), pl.DataFrame(schema=p_schema), info)
    return CopyResult(pl.concat([p[0] for p in parts]), pl.concat([p[1] for p in parts]), info)


def copy_detection_to_parquet(out_dir: str | Path, explanations: Sequence[str], sources: Sequence[str],
                              doc_ids: Sequence, *, char_ends: Sequence[int] | None = None,
                              conditions: Sequence[str] | None = None, n_null: int = 20, seed: int = 0,
                              window: int | None = None, normalizer: WordNormalizer = DEFAULT_NORMALIZER,
                              spans: bool = True, span_families: str | Sequence[str] = "quotes",
                              fuzzy_threshold: float = 90.0, pool_size: int = 4096,
                              overwrite: bool = False) -> Path:
    """:func:`copy_detection`, streamed: one parquet part per pool under ``out_dir/samples`` and
    ``out_dir/spans``, then ``out_dir/info.json``.  Read back with :meth:`CopyResult.load`.

    Same rows as :func:`copy_detection` with the same arguments; memory is bounded by ``pool_size``.
    """
    st = CopySettings(n_null, seed, window, normalizer, spans, span_families, fuzzy_threshold, pool_size)
    writer = _PartWriter(Path(out_dir), overwrite)
    for samples, span_rows in iter_copy_detection(explanations, sources, doc_ids, st, char_ends=char_ends,
                                                  conditions=conditions):
        writer.write(samples, span_rows)
    return writer.close(_info(st, len(explanations), doc_ids))
