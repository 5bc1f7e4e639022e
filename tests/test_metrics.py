import math

import numpy as np
import pytest

from nla_probe import metrics
from nla_probe.errors import InputError, UnknownNameError


def test_mse_nrm_hand_computed():
    # d = 2: pred along x, gold at 60 degrees; both scaled to sqrt(2).
    pred = np.array([[3.0, 0.0]])
    gold = np.array([[1.0, math.sqrt(3.0)]])
    p = np.array([math.sqrt(2), 0.0])
    g = np.array([0.5, math.sqrt(3) / 2]) * math.sqrt(2)
    expected = ((p - g) ** 2).mean()
    assert metrics.mse_nrm(pred, gold)[0] == pytest.approx(expected)
    assert expected == pytest.approx(2 * (1 - 0.5))  # = 2(1 - cos), cos 60 deg = 0.5
    assert metrics.cosine(pred, gold)[0] == pytest.approx(0.5)


def test_mse_is_two_one_minus_cos_and_magnitude_free():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 16)), rng.normal(size=(50, 16))
    np.testing.assert_allclose(metrics.mse_nrm(a, b), 2 * (1 - metrics.cosine(a, b)), atol=1e-12)
    np.testing.assert_allclose(metrics.mse_nrm(a * 1000, b * 0.01), metrics.mse_nrm(a, b), atol=1e-12)


def test_fve_nrm_with_number_and_registered_denominator():
    assert metrics.fve_nrm(np.array([0.2]), 0.8)[0] == pytest.approx(0.75)
    assert metrics.fve_nrm([0.7335], "qwen2.5-7b-L20")[0] == pytest.approx(0.0)
    assert metrics.DENOMINATORS["gemma3-27b-L41"].value == 0.0579
    with pytest.raises(UnknownNameError, match="qwen2.5-7b-L20"):
        metrics.fve_nrm([0.1], "nope")
    with pytest.raises(InputError):
        metrics.fve_nrm([0.1], 0.0)


def test_variance_baseline_matches_closed_form():
    # Two orthogonal unit directions in d=2: v_n = (sqrt2,0),(0,sqrt2); mu = (sqrt2/2, sqrt2/2)
    v = np.array([[5.0, 0.0], [0.0, 0.1]])
    # B = mean over rows,dims of (v_n - mu)^2 = each entry (sqrt2/2)^2 = 0.5
    assert metrics.variance_baseline(v) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)) + 2.0
    vn = metrics.normalize(x)
    assert metrics.variance_baseline(x) == pytest.approx(1 - (vn.mean(0) ** 2).sum() / 8)


def test_predicting_the_mean_gives_fve_near_zero():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 32)) + 1.0
    b = metrics.variance_baseline(x)
    mean_pred = np.repeat(metrics.normalize(x).mean(0, keepdims=True), len(x), 0)
    # mse of the unnormalised mean vs v_n equals B exactly; mse_nrm rescales pred to sqrt(d),
    # so only check the direction-only version is in the right neighbourhood.
    assert np.mean(((mean_pred - metrics.normalize(x)) ** 2).mean(1)) == pytest.approx(b)


def test_nrmse_and_recall():
    a = np.eye(4)
    assert metrics.nrmse(a, a) == pytest.approx(np.zeros(4))
    assert metrics.nrmse(a[:1], a[1:2])[0] == pytest.approx(math.sqrt(2))
    gold = np.eye(6)
    pred = gold.copy()
    pred[0] = gold[1]  # row 0 points at item 1
    hits = metrics.recall_at_k(pred, gold, k=1)
    assert hits.tolist() == [0, 1, 1, 1, 1, 1]
    assert metrics.recall_at_k(pred, gold, k=2)[0] == 1.0
    r1 = metrics.recall_at_k(pred, gold, k=1, pool_size=3, seed=7)
    assert r1.tolist() == metrics.recall_at_k(pred, gold, k=1, pool_size=3, seed=7).tolist()
    with pytest.raises(InputError, match="pool_size"):
        metrics.recall_at_k(pred, gold, k=5, pool_size=3)


def test_shape_errors():
    with pytest.raises(InputError, match="same shape"):
        metrics.mse_nrm(np.zeros((2, 3)), np.zeros((2, 4)))
