"""Uncertainty for nla-probe results: clustered bootstrap CIs, paired tests, BH correction.

Definitions (full discussion in ``docs/statistics.md``):

* **Clustered percentile bootstrap.**  Rows (samples = activation positions) are grouped into
  clusters (by default documents, column ``doc_id``).  One resample draws ``G`` clusters *with
  replacement* from the ``G`` observed clusters and keeps every row of each drawn cluster (a cluster
  drawn twice contributes its rows twice).  The statistic (default: the mean over rows, so clusters
  are weighted by their row count) is computed on each of ``n_boot`` resamples; the CI is the
  ``(1 − level)/2`` and ``(1 + level)/2`` quantiles of those values (numpy ``linear`` quantile).
  The point estimate is the statistic on the original rows.  Positions from one document are
  correlated, so a row-level bootstrap would understate the width.
* **Quantiles of discrete values** (:func:`cluster_quantile_ci`, e.g. run lengths in words): the
  same resamples, computed from per-cluster histograms.
* **Paired difference.**  ``d_i = a_i − b_i`` for each sample i (condition minus baseline, paired on
  the sample id); its CI is the clustered bootstrap of ``mean(d)``.
* **Wilcoxon signed-rank test** (``scipy.stats.wilcoxon``) on the differences, by default on the
  per-sample ``d_i`` (``wilcoxon_unit="sample"``) with ``zero_method="wilcox"`` (exact-zero
  differences are dropped; their count is reported as ``n_zero``) and ``alternative="two-sided"``.
  It treats samples as independent; ``wilcoxon_unit="cluster"`` tests the per-cluster mean
  differences instead, which respects the clustering at the cost of power.  All-zero differences
  give statistic 0 and p = 1.
* **Benjamini–Hochberg** adjusted p values (``scipy.stats.false_discovery_control``, method "bh");
  NaN p values are left NaN and do not count towards the number of tests.

Randomness: every bootstrap uses ``numpy.random.default_rng(seed)``; the same seed and inputs give
the same interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nla_probe.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

Stat = Callable[[np.ndarray], float]

#: Upper bound on the number of int64 cluster draws held in memory at once (~32 MB).
_MAX_DRAWS_PER_CHUNK = 4_000_000
_ALTERNATIVES = ("two-sided", "greater", "less")
_ZERO_METHODS = ("wilcox", "pratt", "zsplit")
_UNITS = ("sample", "cluster")
_NAN_POLICIES = ("raise", "omit")
#: Below this many clusters a warning says the bootstrap CI is unreliable.
MIN_CLUSTERS = 5


@dataclass(frozen=True)
class CI:
    """A point estimate with a clustered percentile-bootstrap confidence interval.

    Attributes:
        estimate: the statistic on the original rows.
        low: lower percentile bound.
        high: upper percentile bound.
        n: number of rows (samples) used.
        n_clusters: number of distinct clusters (documents) among those rows.
        level: nominal coverage, e.g. 0.95.
        n_boot: number of bootstrap resamples.
    """

    estimate: float
    low: float
    high: float
    n: int
    n_clusters: int
    level: float = 0.95
    n_boot: int = 2000

    def format(self, digits: int = 3, cluster_label: str = "docs") -> str:
        """E.g. ``"0.512 [0.470, 0.550] (n=400, 40 docs)"``."""
        f = f"{{:.{digits}f}}"
        return (
            f"{f.format(self.estimate)} [{f.format(self.low)}, {f.format(self.high)}] "
            f"(n={self.n}, {self.n_clusters} {cluster_label})"
        )


@dataclass(frozen=True)
class PairedComparison:
    """Condition vs baseline on the same samples.

    Attributes:
        diff: CI of the statistic of ``d = a − b`` (clustered bootstrap).
        statistic: Wilcoxon signed-rank statistic as returned by scipy (two-sided: the smaller of
            the positive- and negative-rank sums; one-sided: the positive-rank sum).
        p_value: Wilcoxon p value (1.0 when every difference is zero).
        n: number of pairs.
        n_zero: number of tested differences (per sample, or per cluster with
            ``unit="cluster"``) equal to zero after ``zero_tol``; ``zero_method="wilcox"`` drops them.
        alternative: "two-sided", "greater" (a > b) or "less".
        zero_method: scipy ``zero_method``.
        unit: "sample" (test on per-sample differences) or "cluster" (on per-cluster means).
    """

    diff: CI
    statistic: float
    p_value: float
    n: int
    n_zero: int
    alternative: str
    zero_method: str
    unit: str


def _choice(name: str, value: str, valid: Sequence[str]) -> str:
    if value not in valid:
        raise InputError(f"{name}: expected one of {list(valid)}, found {value!r}")
    return value


def _check_settings(n_boot: int, level: float) -> None:
    if not (isinstance(n_boot, (int, np.integer)) and n_boot >= 1):
        raise InputError(f"n_boot: expected an integer >= 1, found {n_boot!r}")
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise InputError(f"level: expected a number in (0, 1), found {level!r}")


def _prepare(values, clusters, nan_policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated float values and integer cluster codes (NaN rows raised on or dropped)."""
    _choice("nan_policy", nan_policy, _NAN_POLICIES)
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(clusters)
    if v.ndim != 1 or c.ndim != 1 or v.shape != c.shape:
        raise InputError(
            f"values and clusters: expected two 1-D arrays of equal length, found shapes {v.shape} and {c.shape}"
        )
    bad = ~np.isfinite(v)
    if bad.any():
        if nan_policy == "raise":
            raise InputError(f"values: expected finite numbers, found {int(bad.sum())} NaN/inf of {v.size}")
        v, c = v[~bad], c[~bad]
    if v.size == 0:
        raise InputError("values: expected at least one finite value, found none")
    _, codes = np.unique(c, return_inverse=True)
    return v, codes.reshape(-1)


def _draw_chunks(rng: np.random.Generator, n_clusters: int, n_boot: int) -> Iterator[np.ndarray]:
    """Cluster indices of each resample, ``[chunk, n_clusters]``, in a fixed order of draws."""
    chunk = max(1, _MAX_DRAWS_PER_CHUNK // n_clusters)
    done = 0
    while done < n_boot:
        m = min(chunk, n_boot - done)
        yield rng.integers(0, n_clusters, size=(m, n_clusters))
        done += m


def _bootstrap(v: np.ndarray, codes: np.ndarray, stat: Stat | str, n_boot: int, seed: int) -> np.ndarray:
    """The statistic on each of ``n_boot`` cluster resamples."""
    g = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    pos = 0
    if stat == "mean" or stat is np.mean:
        sums = np.bincount(codes, weights=v, minlength=g)
        counts = np.bincount(codes, minlength=g).astype(np.float64)
        for idx in _draw_chunks(rng, g, n_boot):
            out[pos : pos + len(idx)] = sums[idx].sum(1) / counts[idx].sum(1)
            pos += len(idx)
        return out
    if not callable(stat):
        raise InputError(f"stat: expected 'mean' or a callable, found {stat!r}")
    for idx in _draw_chunks(rng, g, n_boot):
        for row in idx:
            weights = np.bincount(row, minlength=g)[codes]  # how often each row's cluster was drawn
            out[pos] = float(stat(np.repeat(v, weights)))
            pos += 1
    return out


def _warn_few_clusters(g: int, stacklevel: int) -> None:
    """Warn (pointing ``stacklevel`` frames above the caller) when ``g < MIN_CLUSTERS``."""
    if g < MIN_CLUSTERS:
        warnings.warn(
            f"bootstrap over only {g} clusters: the percentile CI is unreliable (fewer than {MIN_CLUSTERS})",
            stacklevel=stacklevel + 1,
        )


def _ci(v: np.ndarray, codes: np.ndarray, stat: Stat | str, n_boot: int, level: float, seed: int) -> CI:
    g = int(codes.max()) + 1
    _warn_few_clusters(g, stacklevel=3)
    boot = _bootstrap(v, codes, stat, n_boot, seed)
    estimate = float(np.mean(v)) if (stat == "mean" or stat is np.mean) else float(stat(v))
    low, high = np.quantile(boot, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return CI(estimate, float(low), float(high), int(v.size), g, float(level), int(n_boot))


def cluster_bootstrap_ci(
    values,
    clusters,
    stat: Stat | str = np.mean,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    nan_policy: str = "raise",
) -> CI:
    """Clustered percentile-bootstrap CI of ``stat(values)``.

    Args:
        values: one number per row (e.g. per-sample ``fve_nrm``).
        clusters: the cluster (document) id of each row; any hashable, sortable labels.
        stat: ``np.mean`` / ``"mean"`` (vectorised: ``Σ cluster sums / Σ cluster sizes`` per resample)
            or any callable of a 1-D array (looped over resamples).
        n_boot: number of resamples.
        level: coverage of the interval.
        seed: seed of the ``numpy.random.default_rng`` that draws the clusters.
        nan_policy: "raise" on NaN/inf values, or "omit" them (``n`` then counts the kept rows).

    Returns:
        :class:`CI` with the estimate on the original rows and the percentile bounds.
    """
    _check_settings(n_boot, level)
    v, codes = _prepare(values, clusters, nan_policy)
    return _ci(v, codes, stat, n_boot, level, seed)


def _quantile_of_counts(counts: np.ndarray, values: np.ndarray, q: float) -> np.ndarray:
    """numpy ``linear`` quantile of each row's multiset (``counts[r, k]`` copies of ``values[k]``)."""
    total = counts.sum(axis=1)
    h = (total - 1) * q
    lo = np.floor(h)
    frac = h - lo
    cum = np.cumsum(counts, axis=1)
    x_lo = values[(cum <= lo[:, None]).sum(axis=1)]
    x_hi = values[(cum <= np.minimum(lo + 1, total - 1)[:, None]).sum(axis=1)]
    diff = x_hi - x_lo
    return np.where(frac >= 0.5, x_hi - diff * (1 - frac), x_lo + diff * frac)


def cluster_quantile_ci(values, clusters, q: float, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> CI:
    """Clustered percentile-bootstrap CI of the ``q`` quantile of discrete ``values`` (e.g. run lengths).

    Same resampling and draws as :func:`cluster_bootstrap_ci` with
    ``stat=lambda v: np.quantile(v, q)`` (equal results), computed from per-cluster histograms so
    that millions of values stay cheap.  Returns a :class:`CI`.
    """
    _check_settings(n_boot, level)
    v, codes = _prepare(values, clusters, "raise")
    uniq, vi = np.unique(v, return_inverse=True)
    g = int(codes.max()) + 1
    _warn_few_clusters(g, stacklevel=2)
    hist = np.bincount(codes * uniq.size + vi.reshape(-1), minlength=g * uniq.size).reshape(g, uniq.size)
    boot = []
    for idx in _draw_chunks(np.random.default_rng(seed), g, n_boot):
        m = idx.shape[0]
        weights = np.bincount((idx + (np.arange(m) * g)[:, None]).ravel(), minlength=m * g).reshape(m, g)
        boot.append(_quantile_of_counts(weights.astype(np.float64) @ hist, uniq, q))
    low, high = np.quantile(np.concatenate(boot), [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return CI(float(np.quantile(v, q)), float(low), float(high), int(v.size), g, float(level), int(n_boot))


def _wilcoxon(d: np.ndarray, alternative: str, zero_method: str) -> tuple[float, float]:
    from scipy.stats import wilcoxon

    if not np.any(d):
        return 0.0, 1.0
    res = wilcoxon(d, zero_method=zero_method, alternative=alternative)
    return float(res.statistic), float(res.pvalue)


def paired_difference(
    a,
    b,
    clusters,
    stat: Stat | str = np.mean,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    alternative: str = "two-sided",
    zero_method: str = "wilcox",
    wilcoxon_unit: str = "sample",
    zero_tol: float = 0.0,
    nan_policy: str = "raise",
) -> PairedComparison:
    """Compare ``a`` (condition) with ``b`` (baseline) measured on the same samples.

    Row i of ``a``, ``b`` and ``clusters`` must be the same sample (pair them first, e.g. with
    :func:`compare_to_baseline`).  ``d = a − b``; ``|d| <= zero_tol`` counts as exactly zero (use a
    small tolerance when identical texts can be reconstructed with float noise).

    Args:
        a: condition values, one per sample.
        b: baseline values, same samples in the same order.
        clusters: cluster (document) id per sample.
        stat: statistic of ``d`` for the CI (default mean).
        n_boot: bootstrap resamples.
        level: CI coverage.
        seed: bootstrap seed.
        alternative: Wilcoxon alternative about ``d`` ("two-sided", "greater": a > b, "less").
        zero_method: scipy ``zero_method`` ("wilcox" drops zeros, "pratt", "zsplit").
        wilcoxon_unit: "sample" (test the per-sample ``d``) or "cluster" (test per-cluster mean ``d``).
        zero_tol: differences with ``|d| <= zero_tol`` are set to 0 before testing and bootstrapping.
        nan_policy: "raise" or "omit" pairs where either value is NaN/inf.

    Returns:
        :class:`PairedComparison`.
    """
    _check_settings(n_boot, level)
    _choice("alternative", alternative, _ALTERNATIVES)
    _choice("zero_method", zero_method, _ZERO_METHODS)
    _choice("wilcoxon_unit", wilcoxon_unit, _UNITS)
    if not (isinstance(zero_tol, (int, float)) and math.isfinite(zero_tol) and zero_tol >= 0):
        raise InputError(f"zero_tol: expected a finite number >= 0, found {zero_tol!r}")
    av, bv = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if av.shape != bv.shape:
        raise InputError(f"a and b: expected equal shapes, found {av.shape} and {bv.shape}")
    d = av - bv
    d = np.where(np.abs(d) <= zero_tol, 0.0, d)
    d, codes = _prepare(d, clusters, nan_policy)
    diff = _ci(d, codes, stat, n_boot, level, seed)
    tested = d
    if wilcoxon_unit == "cluster":
        g = int(codes.max()) + 1
        tested = np.bincount(codes, weights=d, minlength=g) / np.bincount(codes, minlength=g)
    statistic, p = _wilcoxon(tested, alternative, zero_method)
    return PairedComparison(
        diff, statistic, p, int(d.size), int(np.sum(tested == 0)), alternative, zero_method, wilcoxon_unit
    )


def bh_adjust(p_values) -> np.ndarray:
    """Benjamini–Hochberg adjusted p values (``scipy.stats.false_discovery_control(method="bh")``).

    NaN entries stay NaN and are not counted as tests; the others must lie in [0, 1].  The output
    has the input's shape and order.
    """
    from scipy.stats import false_discovery_control

    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise InputError(f"p_values: expected values in [0, 1] or NaN, found {p[ok][(p[ok] < 0) | (p[ok] > 1)][:5]}")
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return out


# ---------------------------------------------------------------------------------- polars frames


def _require(frame: pl.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise InputError(f"{what}: expected columns {missing} in the frame, found {frame.columns}")


def _groups(frame: pl.DataFrame, by: Sequence[str]) -> Iterator[tuple[dict, pl.DataFrame]]:
    """(key dict, sub-frame) per group of ``by``, in order of first appearance."""
    if not by:
        yield {}, frame
        return
    for key, sub in frame.group_by(list(by), maintain_order=True):
        yield dict(zip(by, key)), sub


def summarize(
    frame: pl.DataFrame,
    value: str = "fve_nrm",
    by: Sequence[str] = (),
    cluster: str = "doc_id",
    stat: Stat | str = np.mean,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    nan_policy: str = "raise",
) -> pl.DataFrame:
    """One clustered-bootstrap CI per group of a tidy frame.

    Every group uses the same ``seed`` (common random numbers across groups).

    Args:
        frame: one row per sample (× condition ...), with columns ``value``, ``cluster`` and ``by``.
        value: the column summarized (e.g. "fve_nrm", "cos", "recall_at_10").
        by: grouping columns (e.g. ``("condition",)``); groups keep their order of first appearance.
        cluster: the clustering column (default "doc_id").
        stat, n_boot, level, seed, nan_policy: see :func:`cluster_bootstrap_ci`.

    Returns:
        polars frame: the ``by`` columns, then ``estimate, ci_low, ci_high, n, n_clusters``.
    """
    import polars as pl

    by = list(by)
    _require(frame, [value, cluster, *by], "summarize")
    rows = []
    for key, sub in _groups(frame, by):
        ci = cluster_bootstrap_ci(sub[value].to_numpy(), sub[cluster].to_numpy(), stat, n_boot, level, seed, nan_policy)
        rows.append({**key, "estimate": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "n": ci.n,
                     "n_clusters": ci.n_clusters})
    schema = {c: frame.schema[c] for c in by} | {
        "estimate": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "n": pl.Int64, "n_clusters": pl.Int64
    }
    return pl.DataFrame(rows, schema=schema)


def _pairs(base: pl.DataFrame, cond: pl.DataFrame, value: str, pair_on: list[str], cluster: str, label: str):
    """Inner join of one condition to the baseline on ``pair_on``; returns (a, b, clusters)."""
    import polars as pl

    keep = list(dict.fromkeys([*pair_on, cluster, value]))
    joined = cond.select(keep).join(base.select(keep), on=pair_on, how="inner", suffix="__base")
    dropped = cond.height - joined.height, base.height - joined.height
    if dropped[0] or dropped[1]:
        warnings.warn(
            f"condition {label!r}: {dropped[0]} of {cond.height} rows have no baseline partner and "
            f"{dropped[1]} of {base.height} baseline rows no condition partner (paired on {pair_on}); "
            "they are left out of the comparison",
            stacklevel=3,
        )
    if cluster not in pair_on:
        mismatch = joined.filter(pl.col(cluster) != pl.col(f"{cluster}__base")).height
        if mismatch:
            raise InputError(
                f"condition {label!r}: {mismatch} pairs have different {cluster!r} in condition and baseline"
            )
    return joined[value].to_numpy(), joined[f"{value}__base"].to_numpy(), joined[cluster].to_numpy()


def compare_to_baseline(
    frame: pl.DataFrame,
    value: str,
    condition_col: str,
    baseline: str,
    pair_on: Sequence[str],
    cluster: str = "doc_id",
    by: Sequence[str] = (),
    stat: Stat | str = np.mean,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    alternative: str = "two-sided",
    zero_method: str = "wilcox",
    wilcoxon_unit: str = "sample",
    zero_tol: float = 0.0,
    nan_policy: str = "raise",
) -> pl.DataFrame:
    """Every condition vs the baseline condition, paired on the sample id, within each ``by`` group.

    Rows of a condition are matched to baseline rows with equal ``pair_on`` values (e.g.
    ``("doc_id", "position")``); each key must be unique within a condition.  Unmatched rows are
    left out with a warning.  ``diff = condition − baseline``; see :func:`paired_difference`.
    ``p_bh`` is BH-adjusted over all rows of the returned frame; a report adjusts again across all
    its tables (see :mod:`nla_probe.ablate.markdown`).

    Returns:
        polars frame: ``by`` columns, ``condition_col``, ``baseline``, ``diff, ci_low, ci_high, n,
        n_clusters, n_zero, statistic, p, p_bh``.
    """
    import polars as pl

    by, pair_on = list(by), list(pair_on)
    if not pair_on:
        raise InputError("pair_on: expected at least one sample-id column, found none")
    _require(frame, [value, condition_col, cluster, *pair_on, *by], "compare_to_baseline")
    rows = []
    for key, sub in _groups(frame, by):
        conditions = sub[condition_col].unique(maintain_order=True).to_list()
        if baseline not in conditions:
            raise InputError(f"{condition_col}: baseline {baseline!r} not found in group {key}, found {conditions}")
        parts = {c: sub.filter(pl.col(condition_col) == c) for c in conditions}
        for c, part in parts.items():
            if part.select(pair_on).is_duplicated().any():
                raise InputError(f"condition {c!r} in group {key}: pair_on {pair_on} is not unique per row")
        for c in conditions:
            if c == baseline:
                continue
            a, b, clusters = _pairs(parts[baseline], parts[c], value, pair_on, cluster, str(c))
            if a.size == 0:
                raise InputError(f"condition {c!r} in group {key}: no rows pair with baseline {baseline!r}")
            r = paired_difference(a, b, clusters, stat, n_boot, level, seed, alternative, zero_method,
                                  wilcoxon_unit, zero_tol, nan_policy)
            rows.append({**key, condition_col: c, "baseline": baseline, "diff": r.diff.estimate,
                         "ci_low": r.diff.low, "ci_high": r.diff.high, "n": r.n, "n_clusters": r.diff.n_clusters,
                         "n_zero": r.n_zero, "statistic": r.statistic, "p": r.p_value})
    schema = {c: frame.schema[c] for c in [*by, condition_col]} | {
        "baseline": frame.schema[condition_col], "diff": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
        "n": pl.Int64, "n_clusters": pl.Int64, "n_zero": pl.Int64, "statistic": pl.Float64, "p": pl.Float64,
    }
    out = pl.DataFrame(rows, schema=schema)
    return out.with_columns(p_bh=pl.Series(bh_adjust(out["p"].to_numpy()) if out.height else [], dtype=pl.Float64))


def bh_across(frames: Sequence[pl.DataFrame], p_col: str = "p", out_col: str = "p_bh") -> list[pl.DataFrame]:
    """Recompute BH-adjusted p values over the union of the ``p_col`` columns of several frames.

    Frames without ``p_col`` are returned unchanged.  Use it to adjust across a whole report.
    """
    import polars as pl

    with_p = [i for i, f in enumerate(frames) if p_col in f.columns]
    if not with_p:
        return list(frames)
    pooled = np.concatenate([frames[i][p_col].cast(pl.Float64).fill_null(np.nan).to_numpy() for i in with_p])
    adjusted = bh_adjust(pooled)
    out, start = list(frames), 0
    for i in with_p:
        h = frames[i].height
        out[i] = frames[i].with_columns(pl.Series(out_col, adjusted[start : start + h], dtype=pl.Float64))
        start += h
    return out
