"""Tests of nla_probe.analysis.stats: clustered bootstrap, paired Wilcoxon, BH, tidy-frame helpers."""

import warnings

import numpy as np
import polars as pl
import pytest
import scipy.stats

from nla_probe.analysis.stats import (
    CI,
    bh_across,
    bh_adjust,
    cluster_bootstrap_ci,
    compare_to_baseline,
    paired_difference,
    summarize,
)
from nla_probe.errors import InputError

# ------------------------------------------------------------------------------ bootstrap CI


def test_constant_values_give_degenerate_ci_at_the_value():
    ci = cluster_bootstrap_ci(np.full(60, 0.3), np.repeat(np.arange(20), 3), n_boot=500)
    assert ci.estimate == pytest.approx(0.3)
    assert ci.low == pytest.approx(0.3) and ci.high == pytest.approx(0.3)
    assert (ci.n, ci.n_clusters, ci.level, ci.n_boot) == (60, 20, 0.95, 500)


def test_two_cluster_case_matches_hand_computed_resample_distribution():
    # cluster "a" = rows [0, 0], cluster "b" = row [1]. A resample draws 2 clusters:
    # aa (prob 1/4) -> mean 0, bb (1/4) -> 1, ab/ba (1/2) -> 1/3.  So the 2.5% and 97.5%
    # percentiles are 0 and 1, and the estimate on the original rows is 1/3.
    with pytest.warns(UserWarning, match="only 2 clusters"):
        ci = cluster_bootstrap_ci([0.0, 0.0, 1.0], ["a", "a", "b"], n_boot=4000, seed=3)
    assert ci.estimate == pytest.approx(1 / 3)
    assert ci.low == pytest.approx(0.0) and ci.high == pytest.approx(1.0)
    # the 25% quantile falls at the boundary of the aa mass (0 or 1/3), the median on 1/3
    with pytest.warns(UserWarning):
        mid = cluster_bootstrap_ci([0.0, 0.0, 1.0], ["a", "a", "b"], n_boot=4000, seed=3, level=0.2)
    assert mid.low == pytest.approx(1 / 3) and mid.high == pytest.approx(1 / 3)


def test_bootstrap_matches_a_naive_loop_over_resampled_clusters():
    rng = np.random.default_rng(11)
    clusters = rng.integers(0, 12, size=50)
    values = rng.normal(size=50)
    n_boot, seed = 300, 5
    ci = cluster_bootstrap_ci(values, clusters, n_boot=n_boot, seed=seed)
    # reference: same generator protocol, rows gathered cluster by cluster
    labels = np.unique(clusters)
    draws = np.random.default_rng(seed).integers(0, len(labels), size=(n_boot, len(labels)))
    boot = [np.mean(np.concatenate([values[clusters == labels[j]] for j in row])) for row in draws]
    assert ci.low == pytest.approx(np.quantile(boot, 0.025), abs=1e-12)
    assert ci.high == pytest.approx(np.quantile(boot, 0.975), abs=1e-12)
    assert ci.estimate == pytest.approx(values.mean())


def test_generic_stat_path_agrees_with_vectorised_mean():
    rng = np.random.default_rng(2)
    values, clusters = rng.normal(size=200), rng.integers(0, 30, size=200)
    fast = cluster_bootstrap_ci(values, clusters, stat=np.mean, n_boot=400, seed=1)
    slow = cluster_bootstrap_ci(values, clusters, stat=lambda x: float(np.mean(x)), n_boot=400, seed=1)
    assert (slow.low, slow.high) == pytest.approx((fast.low, fast.high), abs=1e-12)
    med = cluster_bootstrap_ci(values, clusters, stat=np.median, n_boot=400, seed=1)
    assert med.estimate == pytest.approx(np.median(values))
    assert med.low < med.estimate < med.high


def test_seeded_result_reproduces_and_seed_matters():
    rng = np.random.default_rng(0)
    values, clusters = rng.normal(size=300), np.repeat(np.arange(30), 10)
    a = cluster_bootstrap_ci(values, clusters, seed=7)
    b = cluster_bootstrap_ci(values, clusters, seed=7)
    c = cluster_bootstrap_ci(values, clusters, seed=8)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)


def _coverage(cluster_ids_for_ci: str, n_rep: int = 150) -> float:
    """Share of 95% CIs containing the true mean 0; data: 40 docs x 5 rows, strong doc effect."""
    rng = np.random.default_rng(123)
    docs = np.repeat(np.arange(40), 5)
    hits = 0
    for rep in range(n_rep):
        values = rng.normal(0, 1.0, 40)[docs] + rng.normal(0, 0.5, docs.size)
        clusters = docs if cluster_ids_for_ci == "doc" else np.arange(docs.size)
        ci = cluster_bootstrap_ci(values, clusters, n_boot=400, seed=rep)
        hits += ci.low <= 0.0 <= ci.high
    return hits / n_rep


def test_coverage_near_nominal_with_clusters_and_too_low_without():
    assert 0.88 <= _coverage("doc") <= 0.99
    # treating correlated rows as independent gives intervals that are far too narrow
    assert _coverage("row") < 0.80


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(values=[1.0, 2.0], clusters=[1]), "equal length"),
        (dict(values=[1.0, np.nan], clusters=[1, 2]), "NaN"),
        (dict(values=[], clusters=[]), "at least one"),
        (dict(values=[1.0, 2.0], clusters=[1, 2], level=1.5), "level"),
        (dict(values=[1.0, 2.0], clusters=[1, 2], n_boot=0), "n_boot"),
        (dict(values=[1.0, 2.0], clusters=[1, 2], nan_policy="drop"), "nan_policy"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    with pytest.raises(InputError, match=match):
        cluster_bootstrap_ci(**kwargs)


def test_nan_policy_omit_drops_rows():
    vals = [1.0, np.nan, 3.0, 5.0, 7.0, 9.0]
    with pytest.warns(UserWarning, match="only 4 clusters"):  # cluster 2 held only the NaN row
        ci = cluster_bootstrap_ci(vals, [1, 2, 3, 4, 5, 5], nan_policy="omit", n_boot=200)
    assert ci.n == 5 and ci.n_clusters == 4
    assert ci.estimate == pytest.approx(5.0)


def test_ci_format():
    ci = CI(0.5123, 0.47, 0.55, 400, 40)
    assert ci.format() == "0.512 [0.470, 0.550] (n=400, 40 docs)"


# ------------------------------------------------------------------------------ paired tests


def test_wilcoxon_hand_computed_exact_case():
    # d = 1..5 all positive: W+ = 15, W- = 0; exact two-sided p = 2/2^5, one-sided 1/2^5
    a, b = np.arange(1.0, 6.0) + 10, np.full(5, 10.0)
    two = paired_difference(a, b, clusters=np.arange(5), n_boot=100)
    assert two.statistic == 0.0 and two.p_value == pytest.approx(2 / 32)
    one = paired_difference(a, b, clusters=np.arange(5), n_boot=100, alternative="greater")
    assert one.statistic == 15.0 and one.p_value == pytest.approx(1 / 32)
    assert two.diff.estimate == pytest.approx(3.0) and two.n == 5 and two.n_zero == 0


def test_wilcoxon_matches_scipy_on_a_known_case():
    a = np.array([0.81, 0.77, 0.62, 0.90, 0.55, 0.71, 0.68, 0.79, 0.74, 0.60, 0.83, 0.66])
    b = np.array([0.70, 0.79, 0.50, 0.75, 0.58, 0.52, 0.61, 0.80, 0.60, 0.49, 0.71, 0.69])
    r = paired_difference(a, b, clusters=np.repeat(np.arange(6), 2), n_boot=200)
    ref = scipy.stats.wilcoxon(a - b, zero_method="wilcox", alternative="two-sided")
    assert r.statistic == pytest.approx(ref.statistic) and r.p_value == pytest.approx(ref.pvalue)
    assert r.diff.estimate == pytest.approx(np.mean(a - b))


def test_zero_differences_are_dropped_and_counted():
    a = np.array([0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    r = paired_difference(a, np.zeros(7), clusters=np.arange(7), n_boot=100)
    assert r.n_zero == 2 and r.n == 7
    assert r.p_value == pytest.approx(2 / 32)  # same as testing 1..5 alone
    assert r.diff.estimate == pytest.approx(15 / 7)  # the CI keeps the zeros


def test_all_zero_differences_give_p_one_without_warnings():
    x = np.linspace(0, 1, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = paired_difference(x, x.copy(), clusters=np.arange(20) // 2, n_boot=100)
    assert r.p_value == 1.0 and r.statistic == 0.0 and r.n_zero == 20
    assert (r.diff.estimate, r.diff.low, r.diff.high) == (0.0, 0.0, 0.0)


def test_zero_tol_turns_float_noise_into_zeros():
    x = np.linspace(0, 1, 20)
    r = paired_difference(x + 1e-9, x, clusters=np.arange(20), n_boot=100, zero_tol=1e-6)
    assert r.n_zero == 20 and r.p_value == 1.0


def test_cluster_unit_tests_per_cluster_means():
    rng = np.random.default_rng(4)
    clusters = np.repeat(np.arange(10), 4)
    d = rng.normal(0.3, 1.0, 40)
    r = paired_difference(d, np.zeros(40), clusters, n_boot=100, wilcoxon_unit="cluster")
    means = d.reshape(10, 4).mean(1)
    ref = scipy.stats.wilcoxon(means)
    assert r.p_value == pytest.approx(ref.pvalue) and r.unit == "cluster"
    assert r.n == 40


def test_paired_difference_rejects_bad_settings():
    with pytest.raises(InputError, match="alternative"):
        paired_difference([1.0], [0.0], [0], alternative="bigger")
    with pytest.raises(InputError, match="shapes"):
        paired_difference([1.0, 2.0], [0.0], [0, 1])


# ------------------------------------------------------------------------------ BH


def test_bh_hand_computed():
    # sorted p: .01 .03 .04 .2 -> p*m/rank = .04 .06 .0533 .2 -> running min from the top
    out = bh_adjust([0.01, 0.04, 0.03, 0.2])
    np.testing.assert_allclose(out, [0.04, 0.16 / 3, 0.16 / 3, 0.2])


def test_bh_nan_safe_and_validated():
    out = bh_adjust([0.01, np.nan, 0.04, 0.03, 0.2])
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2, 3, 4]], [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert bh_adjust([]).shape == (0,)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        bh_adjust([0.5, 1.2])


def test_bh_across_pools_all_frames():
    f1 = pl.DataFrame({"c": ["x", "y"], "p": [0.01, 0.04]})
    f2 = pl.DataFrame({"c": ["z", "w"], "p": [0.03, 0.2]})
    f3 = pl.DataFrame({"c": ["no p"]})
    g1, g2, g3 = bh_across([f1, f2, f3])
    np.testing.assert_allclose(g1["p_bh"].to_numpy(), [0.04, 0.16 / 3])
    np.testing.assert_allclose(g2["p_bh"].to_numpy(), [0.16 / 3, 0.2])
    assert g3.columns == ["c"]


# ------------------------------------------------------------------------------ tidy frames


def _frame() -> pl.DataFrame:
    rng = np.random.default_rng(9)
    docs, pos = np.repeat(np.arange(8), 3), np.tile(np.arange(3), 8)
    base = rng.normal(0.7, 0.1, 24)
    parts = [
        pl.DataFrame({"condition": "baseline", "doc_id": docs, "position": pos, "fve_nrm": base}),
        pl.DataFrame({"condition": "spans_only", "doc_id": docs, "position": pos, "fve_nrm": base - 0.2}),
        pl.DataFrame({"condition": "prose_only", "doc_id": docs, "position": pos,
                      "fve_nrm": base - 0.8 + rng.normal(0, 0.05, 24)}),
    ]
    return pl.concat(parts)


def test_summarize_columns_order_and_counts():
    f = _frame()
    s = summarize(f, "fve_nrm", by=["condition"], n_boot=300)
    assert s.columns == ["condition", "estimate", "ci_low", "ci_high", "n", "n_clusters"]
    assert s["condition"].to_list() == ["baseline", "spans_only", "prose_only"]
    assert s["n"].to_list() == [24, 24, 24] and s["n_clusters"].to_list() == [8, 8, 8]
    means = f.group_by("condition").agg(pl.col("fve_nrm").mean())
    for row in s.iter_rows(named=True):
        expected = means.filter(pl.col("condition") == row["condition"])["fve_nrm"][0]
        assert row["estimate"] == pytest.approx(expected)
        assert row["ci_low"] <= row["estimate"] <= row["ci_high"]


def test_summarize_without_groups_and_missing_column():
    s = summarize(_frame(), "fve_nrm", n_boot=100)
    assert s.height == 1 and s["n"][0] == 72
    with pytest.raises(InputError, match="cos"):
        summarize(_frame(), "cos")


def test_compare_to_baseline_pairs_on_keys_not_row_order():
    f = _frame()
    shuffled = f.sample(fraction=1.0, shuffle=True, seed=1)
    c = compare_to_baseline(shuffled, "fve_nrm", "condition", "baseline", pair_on=["doc_id", "position"],
                            n_boot=300)
    assert set(c["condition"].to_list()) == {"spans_only", "prose_only"}
    spans = c.filter(pl.col("condition") == "spans_only").row(0, named=True)
    assert spans["diff"] == pytest.approx(-0.2)
    assert spans["ci_low"] == pytest.approx(-0.2) and spans["ci_high"] == pytest.approx(-0.2)
    assert spans["n"] == 24 and spans["n_clusters"] == 8 and spans["baseline"] == "baseline"
    # every difference is negative: the positive-rank sum is 0 and p is tiny
    assert spans["statistic"] == 0.0 and spans["p"] < 1e-4
    np.testing.assert_allclose(c["p_bh"].to_numpy(), scipy.stats.false_discovery_control(c["p"].to_numpy()))


def test_compare_to_baseline_by_group_and_errors():
    f = pl.concat([_frame().with_columns(layer=pl.lit(20)), _frame().with_columns(layer=pl.lit(21))])
    c = compare_to_baseline(f, "fve_nrm", "condition", "baseline", pair_on=["doc_id", "position"], by=["layer"],
                            n_boot=100)
    assert c.height == 4 and c["layer"].to_list() == [20, 20, 21, 21]
    with pytest.raises(InputError, match="not found"):
        compare_to_baseline(_frame(), "fve_nrm", "condition", "greedy", pair_on=["doc_id", "position"])
    with pytest.raises(InputError, match="not unique"):
        compare_to_baseline(_frame(), "fve_nrm", "condition", "baseline", pair_on=["doc_id"])
    with pytest.raises(InputError, match="pair_on"):
        compare_to_baseline(_frame(), "fve_nrm", "condition", "baseline", pair_on=[])


def test_compare_to_baseline_warns_on_unpaired_rows():
    f = _frame().filter(~((pl.col("condition") == "spans_only") & (pl.col("doc_id") == 0)))
    with pytest.warns(UserWarning, match="3 of 24 baseline rows"):
        c = compare_to_baseline(f, "fve_nrm", "condition", "baseline", pair_on=["doc_id", "position"], n_boot=100)
    assert c.filter(pl.col("condition") == "spans_only")["n"][0] == 21
