"""Summaries of copy-detection results: run-length statistics and span verbatim rates, true vs null.

Definitions are in ``docs/copying.md``; the per-sample and per-span frames come from
:func:`nla_probe.copying.copy_detection`.  CIs are clustered by document
(:func:`nla_probe.analysis.stats.cluster_bootstrap_ci`, quantiles :func:`nla_probe.analysis.stats.cluster_quantile_ci`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from nla_probe.analysis.stats import cluster_quantile_ci
from nla_probe.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl


def _by(by) -> list[str]:
    return [] if by is None else [by] if isinstance(by, str) else list(by)


def _summary_frame(rows: list[dict], keys: list[str], frame: pl.DataFrame) -> pl.DataFrame:
    import polars as pl

    f64, i64 = pl.Float64, pl.Int64
    schema = {c: frame.schema[c] for c in keys} | {"source": pl.String, "statistic": pl.String, "estimate": f64,
                                                    "ci_low": f64, "ci_high": f64, "n": i64, "n_clusters": i64}
    return pl.DataFrame(rows, schema=schema)


def _row(key: dict, source: str, statistic: str, ci) -> dict:
    return {**key, "source": source, "statistic": statistic, "estimate": ci.estimate, "ci_low": ci.low,
            "ci_high": ci.high, "n": ci.n, "n_clusters": ci.n_clusters}


def summarize_copying(samples_frame: pl.DataFrame, by="condition", ns: Sequence[int] = (4, 6, 8),
                      n_boot: int = 2000, seed: int = 0, level: float = 0.95, cluster: str = "doc_id") -> pl.DataFrame:
    """Median, p90 and rates of runs >= n words, true context vs null, with document-clustered CIs.

    * ``source="true"``: over the explanations' ``run_len`` (n = explanations).
    * ``source="null"``: median/p90 over all null run lengths pooled (n = explanation × null pairs);
      ``rate_ge_n`` is the mean over explanations of the share of their nulls with a run >= n
      (n = explanations with at least one null).

    Every statistic uses the same ``seed`` (common random numbers).  Rates use
    :func:`nla_probe.analysis.stats.cluster_bootstrap_ci`, quantiles :func:`cluster_quantile_ci`.

    Returns:
        polars frame: ``by`` columns, ``source, statistic`` (``median``, ``p90``, ``rate_ge_{n}``),
        ``estimate, ci_low, ci_high, n, n_clusters``.
    """
    from nla_probe.analysis.stats import cluster_bootstrap_ci

    keys = _by(by)
    missing = [c for c in [*keys, cluster, "run_len", "null_run_lens"] if c not in samples_frame.columns]
    if missing:
        raise InputError(f"summarize_copying: expected columns {missing}, found {samples_frame.columns}")
    rows = []
    groups = samples_frame.group_by(keys, maintain_order=True) if keys else [((), samples_frame)]
    for key_vals, sub in groups:
        key = dict(zip(keys, key_vals))
        docs = sub[cluster].to_numpy()
        true = sub["run_len"].to_numpy().astype(np.float64)
        lens = sub["null_run_lens"].to_list()
        k = np.array([len(x) for x in lens])
        flat = np.fromiter((v for x in lens for v in x), np.float64, int(k.sum()))
        stats = [("true", "median", true, docs, 0.5), ("true", "p90", true, docs, 0.9)]
        if flat.size:
            stats += [("null", "median", flat, np.repeat(docs, k), 0.5), ("null", "p90", flat, np.repeat(docs, k), 0.9)]
        for source, name, v, c, q in stats:
            rows.append(_row(key, source, name, cluster_quantile_ci(v, c, q, n_boot, level, seed)))
        for n in ns:
            ci = cluster_bootstrap_ci((true >= n).astype(np.float64), docs, n_boot=n_boot, level=level, seed=seed)
            rows.append(_row(key, "true", f"rate_ge_{n}", ci))
            if flat.size:
                share = np.array([np.mean(np.asarray(x) >= n) for x in lens if len(x)])
                ci = cluster_bootstrap_ci(share, docs[k > 0], n_boot=n_boot, level=level, seed=seed)
                rows.append(_row(key, "null", f"rate_ge_{n}", ci))
    return _summary_frame(rows, keys, samples_frame)


def summarize_spans(spans_frame: pl.DataFrame, by="condition", n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95, cluster: str = "doc_id") -> pl.DataFrame:
    """Verbatim and near-verbatim rates of quoted spans (spans with >= 1 word), document-clustered CIs.

    Statistics: ``verbatim_rate`` (the span's words occur contiguously in the true context),
    ``near_verbatim_rate`` (``fuzzy_score >= fuzzy_threshold``) and, with ``source="null"``, the mean
    over spans of the share of null contexts containing the span verbatim.  n = spans.
    """
    import polars as pl

    from nla_probe.analysis.stats import cluster_bootstrap_ci

    keys = _by(by)
    need = [*keys, cluster, "n_words", "verbatim", "near_verbatim", "null_verbatim_rate"]
    missing = [c for c in need if c not in spans_frame.columns]
    if missing:
        raise InputError(f"summarize_spans: expected columns {missing}, found {spans_frame.columns}")
    frame = spans_frame.filter(pl.col("n_words") > 0)
    rows = []
    groups = frame.group_by(keys, maintain_order=True) if keys else ([((), frame)] if frame.height else [])
    for key_vals, sub in groups:
        key = dict(zip(keys, key_vals))
        docs = sub[cluster].to_numpy()
        for source, name, col in (("true", "verbatim_rate", "verbatim"),
                                  ("true", "near_verbatim_rate", "near_verbatim"),
                                  ("null", "verbatim_rate", "null_verbatim_rate")):
            v = sub[col].cast(pl.Float64)
            if v.null_count() == v.len():
                continue
            ok = v.is_not_null().to_numpy()
            ci = cluster_bootstrap_ci(v.to_numpy()[ok], docs[ok], n_boot=n_boot, level=level, seed=seed)
            rows.append(_row(key, source, name, ci))
    return _summary_frame(rows, keys, spans_frame)


def summarize_span_counts(frame: pl.DataFrame, by="condition", n_boot: int = 2000, seed: int = 0,
                          level: float = 0.95, cluster: str = "doc_id", n_spans: str = "n_spans",
                          verbatim: str = "n_spans_verbatim", null_verbatim: str = "null_spans_verbatim"
                          ) -> pl.DataFrame:
    """Share of quoted spans found verbatim in the true context vs in null contexts, from per-row counts.

    Each row (one explanation) holds ``n_spans`` quoted spans, ``verbatim`` of them verbatim in its
    true context, and ``null_verbatim`` = the sum over its spans of the share of null contexts holding
    the span verbatim.  The rates are pooled over spans: ``sum(verbatim) / sum(n_spans)`` (source
    ``"true"``) and ``sum(null_verbatim) / sum(n_spans)`` (source ``"null"``), statistic
    ``"spans_verbatim"``, n = spans.  The CI resamples documents (every span of a row stays with its
    document; a row's null share is spread evenly over its spans, which leaves every resampled mean
    unchanged).  Groups without spans are left out.

    Returns:
        polars frame in the layout of :func:`summarize_copying`.
    """
    from nla_probe.analysis.stats import cluster_bootstrap_ci

    keys = _by(by)
    missing = [c for c in [*keys, cluster, n_spans, verbatim, null_verbatim] if c not in frame.columns]
    if missing:
        raise InputError(f"summarize_span_counts: expected columns {missing}, found {frame.columns}")
    rows = []
    groups = frame.group_by(keys, maintain_order=True) if keys else [((), frame)]
    for key_vals, sub in groups:
        key = dict(zip(keys, key_vals))
        k = sub[n_spans].fill_null(0).to_numpy().astype(np.int64)
        if k.sum() == 0:
            continue
        v = sub[verbatim].fill_null(0).to_numpy().astype(np.int64)
        nv = sub[null_verbatim].fill_null(0.0).to_numpy().astype(np.float64)
        if np.any(v > k) or np.any(v < 0):
            raise InputError(f"summarize_span_counts: {verbatim} must lie in [0, {n_spans}] on every row")
        docs = np.repeat(sub[cluster].to_numpy(), k)
        true = np.concatenate([np.r_[np.ones(a), np.zeros(b - a)] for a, b in zip(v, k)])
        null = np.repeat(np.divide(nv, k, out=np.zeros_like(nv), where=k > 0), k)
        for source, values in (("true", true), ("null", null)):
            ci = cluster_bootstrap_ci(values, docs, n_boot=n_boot, level=level, seed=seed)
            rows.append(_row(key, source, "spans_verbatim", ci))
    return _summary_frame(rows, keys, frame)
