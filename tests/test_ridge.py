"""Ridge maps, alpha selection, log-linear extrapolation and the crossover CI, against numpy."""

import math

import numpy as np
import pytest

from nla_probe.analysis.ridge import (
    crossover,
    crossover_ci,
    fit_ridge,
    group_folds,
    loglinear_fit,
    scaling_curve,
    select_alpha,
    unit_rows,
)
from nla_probe.errors import InputError


def _data(n, d_in, d_out, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d_in)), rng.standard_normal((n, d_out))


def test_fit_matches_normal_equations_n_greater_than_d():
    x, y = _data(40, 6, 5)
    alpha = 0.7
    m = fit_ridge(x, y, alpha)
    xu, yu = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)
    xc, yc = xu - xu.mean(0), yu - yu.mean(0)
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(6), xc.T @ yc)
    np.testing.assert_allclose(m.weight, w, atol=1e-10)
    np.testing.assert_allclose(m.bias, yu.mean(0) - xu.mean(0) @ w, atol=1e-10)


def test_fit_matches_dual_form_n_less_than_d():
    x, y = _data(5, 12, 3, seed=1)
    alpha = 0.3
    m = fit_ridge(x, y, alpha)
    xu, yu = unit_rows(x), unit_rows(y)
    xc, yc = xu - xu.mean(0), yu - yu.mean(0)
    w = xc.T @ np.linalg.solve(xc @ xc.T + alpha * np.eye(5), yc)
    np.testing.assert_allclose(m.weight, w, atol=1e-10)


def test_alpha_zero_is_least_squares_with_intercept():
    x, y = _data(30, 4, 3, seed=2)
    m = fit_ridge(x, y, 0.0)
    xu, yu = unit_rows(x), unit_rows(y)
    coef = np.linalg.lstsq(np.hstack([xu, np.ones((30, 1))]), yu, rcond=None)[0]
    np.testing.assert_allclose(m.weight, coef[:4], atol=1e-10)
    np.testing.assert_allclose(m.bias, coef[4], atol=1e-10)


def test_predict_normalises_inputs_and_recovers_a_rotation():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    x = unit_rows(rng.standard_normal((200, 8)))
    y = x @ q  # rows stay unit norm
    m = fit_ridge(x, y, 1e-8)
    pred = m.predict(5.0 * x)
    np.testing.assert_allclose(pred, y, atol=1e-6)
    with pytest.raises(InputError, match="width"):
        m.predict(x[:, :4])


def test_fit_input_errors():
    x, y = _data(5, 3, 3)
    with pytest.raises(InputError, match="alpha"):
        fit_ridge(x, y, -1.0)
    with pytest.raises(InputError, match="same number of rows"):
        fit_ridge(x, y[:4], 1.0)


def test_group_folds_keep_documents_together():
    groups = ["a", "a", "b", "c", "c", "c", "d", "e"]
    f = group_folds(groups, 3, seed=0)
    for g in set(groups):
        assert len({f[i] for i, x in enumerate(groups) if x == g}) == 1
    assert set(f.tolist()) == {0, 1, 2}
    with pytest.raises(InputError, match="n_folds"):
        group_folds(groups, 9, seed=0)


def test_select_alpha_prefers_shrinkage_on_noise_and_fit_on_signal():
    x, noise = _data(60, 20, 10, seed=4)
    groups = [str(i // 3) for i in range(60)]
    best, cv = select_alpha(x, noise, groups, [1e-3, 1e3], n_folds=5, seed=0)
    assert best == 1e3 and cv[1e3] < cv[1e-3]
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    best, _ = select_alpha(x, unit_rows(x) @ q, groups, [1e-4, 10.0], n_folds=5, seed=0)
    assert best == 1e-4


def test_loglinear_fit_and_crossover():
    n = [10, 100, 1000]
    a, b = loglinear_fit(n, [0.1 + 0.2 * math.log10(v) for v in n])
    assert a == pytest.approx(0.1) and b == pytest.approx(0.2)
    assert crossover(0.1, 0.2, 0.5) == pytest.approx(100.0)
    assert crossover(0.1, -0.1, 0.5) == math.inf
    assert crossover(0.6, 0.0, 0.5) == 0.0
    with pytest.raises(InputError, match="distinct positive"):
        loglinear_fit([10, 10], [0.1, 0.2])


def test_scaling_curve_points_are_fits_on_prefixes():
    rng = np.random.default_rng(6)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    x = rng.standard_normal((50, 6))
    y = unit_rows(x) @ q + 0.1 * rng.standard_normal((50, 6))
    xe = rng.standard_normal((10, 6))
    ye = unit_rows(xe) @ q
    groups = [str(i // 2) for i in range(50)]
    pts = scaling_curve(x, y, groups, xe, ye, [10, 40, 500], [0.01, 1.0], n_folds=3, seed=0)
    assert [p["n_train"] for p in pts] == [10, 40, 50]
    last = pts[-1]
    m = fit_ridge(x, y, last["alpha"])  # all 50 pairs, in any order
    pred = unit_rows(m.predict(xe))
    expected = 2 * (1 - (pred * unit_rows(ye)).sum(1))
    np.testing.assert_allclose(last["mse_nrm"], expected, atol=1e-9)
    assert pts[-1]["mse_nrm"].mean() < pts[0]["mse_nrm"].mean()


def test_crossover_ci_on_a_noiseless_line():
    ns = [16, 32, 64, 128]
    per_n = {n: np.full(12, 0.1 + 0.2 * math.log10(n)) for n in ns}
    c = crossover_ci(per_n, np.full(12, 0.5), [str(i // 3) for i in range(12)], fit_last=3, n_boot=50, seed=0)
    assert c["n_fit"] == [32, 64, 128]
    assert c["n_star"] == pytest.approx(100.0)
    assert c["log10_low"] == pytest.approx(2.0) and c["log10_high"] == pytest.approx(2.0)
    assert c["share_infinite"] == 0.0
    flat = {n: np.full(12, 0.2) for n in ns}
    c = crossover_ci(flat, np.full(12, 0.5), [str(i) for i in range(12)], n_boot=20)
    assert c["n_star"] == math.inf and c["share_infinite"] == 1.0
