"""Tests of nla_probe.analysis.selection against hand-computed and brute-force values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from nla_probe.analysis.selection import check_ns, prefix_best, prefix_best_index, selection_rank, subset_best, take
from nla_probe.errors import InputError

# One activation, five candidates.  Selection order (best first): 4 (0.9), 1 (0.5, lower index
# wins the tie with 3), 3 (0.5), 0 (0.2), 2 (0.1).
SCORES = np.array([[0.2, 0.5, 0.1, 0.5, 0.9]])
VALUES = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])


def test_prefix_index_hand_example():
    idx = prefix_best_index(SCORES, [1, 2, 3, 4, 5])
    # prefix 1: {0} -> 0; 2: {0.2, 0.5} -> 1; 3: adds 0.1 -> 1; 4: adds 0.5 at 3, tie -> 1; 5: 0.9 -> 4
    assert idx.tolist() == [[0, 1, 1, 1, 4]]


def test_prefix_best_values_with_separate_evaluator():
    assert prefix_best(SCORES, [1, 2, 4, 5], VALUES).tolist() == [[1.0, 2.0, 2.0, 5.0]]
    # Without an evaluator the selector's own score of its choice (running maximum).
    assert prefix_best(SCORES, [1, 2, 3, 5]).tolist() == [[0.2, 0.5, 0.5, 0.9]]


def test_lower_is_better_flips_the_choice():
    mse = np.array([[0.4, 0.3, 0.3, 0.9]])
    assert prefix_best_index(mse, [1, 2, 3, 4], higher_is_better=False).tolist() == [[0, 1, 1, 1]]


def test_nan_never_wins_over_a_finite_score():
    s = np.array([[np.nan, -5.0, np.nan], [np.nan, np.nan, np.nan]])
    idx = prefix_best_index(s, [1, 2, 3])
    assert idx[0].tolist() == [0, 1, 1]     # a lone NaN prefix keeps index 0
    assert idx[1].tolist() == [0, 0, 0]     # all NaN: lowest index
    assert prefix_best_index(s, [3], higher_is_better=False)[0, 0] == 1


def test_selection_rank_hand_example():
    # Candidate j beats: 0 -> {2}; 1 -> {0, 2, 3}; 2 -> {}; 3 -> {0, 2}; 4 -> all four.
    assert selection_rank(SCORES).tolist() == [[1, 3, 0, 2, 4]]


def test_subset_best_hand_example_n2():
    # Weights C(r, 1) / C(5, 2) = r / 10 with r = [1, 3, 0, 2, 4]:
    # (1*1 + 3*2 + 0*3 + 2*4 + 4*5) / 10 = 35 / 10.
    assert subset_best(SCORES, [2], VALUES)[0, 0] == pytest.approx(3.5)


def test_subset_best_limits():
    # n = 1: plain mean of the values; n = N: the overall winner's value.
    out = subset_best(SCORES, [1, 5], VALUES)
    assert out[0].tolist() == pytest.approx([3.0, 5.0])


def test_subset_best_matches_brute_force_enumeration():
    rng = np.random.default_rng(3)
    s = rng.normal(size=(4, 6)).round(1)  # rounding makes ties likely
    s[1, 2] = np.nan
    v = rng.normal(size=(4, 6))
    for n in (1, 2, 3, 4, 6):
        got = subset_best(s, [n], v)[:, 0]
        for i in range(s.shape[0]):
            vals = []
            for sub in itertools.combinations(range(6), n):
                keys = [(-np.inf if np.isnan(s[i, j]) else s[i, j], -j) for j in sub]
                winner = sub[max(range(n), key=lambda t: keys[t])]
                vals.append(v[i, winner])
            assert got[i] == pytest.approx(np.mean(vals)), (n, i)
            assert len(vals) == math.comb(6, n)


def test_subset_best_is_mean_over_prefix_orders():
    # Averaging the prefix-n winner's value over every ordering of the candidates gives the
    # all-subsets value (exchangeability).
    s = np.array([[0.3, 0.7, 0.1, 0.5]])
    v = np.array([[10.0, 20.0, 30.0, 40.0]])
    for n in (1, 2, 3, 4):
        vals = [prefix_best(s[:, p], [n], v[:, p])[0, 0] for p in itertools.permutations(range(4))]
        assert subset_best(s, [n], v)[0, 0] == pytest.approx(np.mean(vals))


def test_nan_value_of_a_winnable_candidate_propagates():
    s = np.array([[0.1, 0.9]])
    v = np.array([[1.0, np.nan]])
    assert np.isnan(subset_best(s, [2], v)[0, 0])
    # candidate 0 (score 0.1) never wins a 2-subset, so its NaN value does not matter
    v2 = np.array([[np.nan, 2.0]])
    assert subset_best(s, [2], v2)[0, 0] == 2.0


def test_take_and_validation():
    assert take(VALUES, np.array([[4, 0]])).tolist() == [[5.0, 1.0]]
    with pytest.raises(InputError, match="out of range"):
        take(VALUES, np.array([[5]]))
    with pytest.raises(InputError, match=r"\[1, 5\]"):
        prefix_best_index(SCORES, [0])
    with pytest.raises(InputError, match=r"\[1, 5\]"):
        subset_best(SCORES, [6])
    with pytest.raises(InputError, match="rows, N"):
        prefix_best_index(np.array([1.0, 2.0]), [1])
    with pytest.raises(InputError, match="shape of scores"):
        prefix_best(SCORES, [1], np.ones((1, 4)))
    with pytest.raises(InputError, match="inf"):
        prefix_best_index(np.array([[np.inf, 1.0]]), [1])
    assert check_ns(3, 5) == (3,)
    with pytest.raises(InputError):
        check_ns([True], 5)
