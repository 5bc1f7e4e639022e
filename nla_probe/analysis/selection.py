"""Best-of-N selection: which of N sampled explanations a selector keeps, and what it scores.

An activation gets ``N`` sampled explanations, candidates ``0 .. N-1`` in sampling order.  A
*selector* gives each candidate a score (e.g. the scoring AR's per-sample ``fve_nrm``); an
*evaluator* gives each candidate a value (the same AR's ``fve_nrm``, or an independent verifier's).
All functions here are pure and take ``[rows, N]`` arrays, one row per activation.

The order used everywhere (the **selection order**):

1. a higher selector score wins (``higher_is_better=False`` flips this, e.g. for ``mse_nrm``);
2. a NaN score loses to every finite score (a candidate that could not be scored is never chosen
   while another can be);
3. ties, including all-NaN rows, go to the lower candidate index (the earlier sample).

Two estimators of "the value of best-of-n":

* **prefix** (:func:`prefix_best_index`, :func:`prefix_best`): the best of the first ``n``
  candidates, as in a test-time loop that draws samples one by one.  The curve over ``n`` uses
  nested prefixes of one sample sequence.
* **all subsets** (:func:`subset_best`): the expected value of the best candidate of an ``n``-subset
  drawn uniformly without replacement from the ``N`` candidates.  With ``r_j`` = number of
  candidates that candidate ``j`` beats in the selection order, ``j`` wins a random ``n``-subset
  with probability ``C(r_j, n-1) / C(N, n)``, so the expectation is
  ``Σ_j value_j · C(r_j, n-1) / C(N, n)``.  It has the same expectation as the prefix estimator
  (samples are exchangeable) and a lower variance, since it averages over every subset.

Selecting and evaluating with the same scores measures the selector's own score of its choice,
which is optimistically biased as an estimate of the choice's quality (the selector is the
metric); evaluating with an independent verifier exposes that bias.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from nla_probe.errors import InputError

__all__ = ["check_ns", "prefix_best", "prefix_best_index", "selection_rank", "subset_best", "take"]


def _scores(scores, name: str = "scores") -> np.ndarray:
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 1:
        raise InputError(f"{name}: expected a [rows, N] array with N >= 1, found shape {list(a.shape)}")
    if np.isinf(a).any():
        raise InputError(f"{name}: expected finite numbers or NaN, found inf")
    return a


def check_ns(ns: Sequence[int] | int, n_candidates: int) -> tuple[int, ...]:
    """Validate sizes ``n`` (each an integer in ``[1, n_candidates]``); returns them as a tuple."""
    items = (ns,) if isinstance(ns, (int, np.integer)) and not isinstance(ns, bool) else tuple(ns)
    if not items:
        raise InputError("ns: expected at least one sample size, found none")
    for n in items:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= n_candidates:
            raise InputError(f"ns: expected integers in [1, {n_candidates}] (the number of candidates), "
                             f"found {n!r}")
    return tuple(int(n) for n in items)


def _keys(scores: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Scores turned into 'larger is better', NaN as -inf (so it loses to every finite score)."""
    k = scores if higher_is_better else -scores
    return np.where(np.isnan(k), -np.inf, k)


def prefix_best_index(scores, ns: Sequence[int] | int, *, higher_is_better: bool = True) -> np.ndarray:
    """Index of the selected candidate among the first ``n`` candidates, for each ``n`` in ``ns``.

    Args:
        scores: ``[rows, N]`` selector scores (NaN = could not be scored).
        ns: prefix sizes, each in ``[1, N]``.
        higher_is_better: False when a lower score is better (e.g. ``mse_nrm``).

    Returns:
        ``int64 [rows, len(ns)]``: column k holds the winner of candidates ``0 .. ns[k]-1`` in the
        selection order (module doc; ties go to the lower index).
    """
    s = _scores(scores)
    sizes = check_ns(ns, s.shape[1])
    keys = _keys(s, higher_is_better)
    # argmax returns the first maximum, which is the lower index on ties; an all -inf prefix
    # (all NaN) returns index 0.
    return np.stack([np.argmax(keys[:, :n], axis=1) for n in sizes], axis=1).astype(np.int64)


def take(values, index) -> np.ndarray:
    """``values[i, index[i, k]]``: the value of the chosen candidate, ``[rows, K]`` float64."""
    v = np.asarray(values, dtype=np.float64)
    idx = np.asarray(index)
    if v.ndim != 2 or idx.ndim != 2 or idx.shape[0] != v.shape[0]:
        raise InputError(f"take: expected values [rows, N] and index [rows, K] with equal rows, found "
                         f"{list(v.shape)} and {list(idx.shape)}")
    if idx.size and (idx.min() < 0 or idx.max() >= v.shape[1]):
        raise InputError(f"take: index out of range [0, {v.shape[1]})")
    return np.take_along_axis(v, idx.astype(np.int64), axis=1)


def _evaluate(scores: np.ndarray, evaluate) -> np.ndarray:
    if evaluate is None:
        return scores
    e = np.asarray(evaluate, dtype=np.float64)
    if e.shape != scores.shape:
        raise InputError(f"evaluate: expected the shape of scores {list(scores.shape)}, found {list(e.shape)}")
    return e


def prefix_best(scores, ns: Sequence[int] | int, evaluate=None, *, higher_is_better: bool = True) -> np.ndarray:
    """Value of the prefix-``n`` winner for each ``n`` in ``ns``: ``[rows, len(ns)]`` float64.

    Args:
        scores: ``[rows, N]`` selector scores.
        ns: prefix sizes.
        evaluate: ``[rows, N]`` values to report for the chosen candidate (default: ``scores``
            themselves, i.e. the selector's own score of its choice).
        higher_is_better: direction of ``scores``.
    """
    s = _scores(scores)
    return take(_evaluate(s, evaluate), prefix_best_index(s, ns, higher_is_better=higher_is_better))


def selection_rank(scores, *, higher_is_better: bool = True) -> np.ndarray:
    """``r[i, j]`` = number of candidates of row i that candidate j beats in the selection order.

    The ranks of a row are a permutation of ``0 .. N-1`` (N-1 = the overall winner).
    """
    s = _scores(scores)
    keys = _keys(s, higher_is_better)
    n = s.shape[1]
    # Sort best first: by key descending, then index ascending (stable sort on -key).
    order = np.argsort(-keys, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n - 1, -1, -1)[None, :].repeat(s.shape[0], 0), axis=1)
    return rank


def subset_best(scores, ns: Sequence[int] | int, evaluate=None, *, higher_is_better: bool = True) -> np.ndarray:
    """Expected value of the winner of a uniformly random ``n``-subset, for each ``n`` in ``ns``.

    See the module doc for the formula.  A candidate with zero winning probability never
    contributes (its value may be NaN); a NaN value of a candidate that can win makes the row NaN.

    Returns:
        ``[rows, len(ns)]`` float64.
    """
    s = _scores(scores)
    e = _evaluate(s, evaluate)
    n_cand = s.shape[1]
    sizes = check_ns(ns, n_cand)
    rank = selection_rank(s, higher_is_better=higher_is_better)
    out = np.empty((s.shape[0], len(sizes)), dtype=np.float64)
    for k, n in enumerate(sizes):
        total = math.comb(n_cand, n)
        table = np.array([math.comb(r, n - 1) / total for r in range(n_cand)], dtype=np.float64)
        w = table[rank]
        out[:, k] = np.where(w > 0, w * e, 0.0).sum(axis=1)
    return out
