"""Ridge regression between two model families' activations, and its data-scaling curve.

The linear baseline of the cross-family study: learn a map from family A's activation at a
position to family B's activation at the aligned position (:mod:`nla_probe.analysis.alignment`), from
paired examples, and score it with family B's ``fve_nrm``.

Definitions:

* Inputs and targets are **unit-normalised** rows (``x / ‖x‖``); only directions matter for
  ``mse_nrm``, and normalising keeps every training pair equally weighted.
* **Ridge with intercept**: ``W, b = argmin Σ_i ‖x_i W + b − y_i‖² + α ‖W‖_F²`` (the intercept is
  not penalised).  Closed form with centred ``X_c = X − x̄``, ``Y_c = Y − ȳ``:
  ``W = (X_cᵀ X_c + α I)⁻¹ X_cᵀ Y_c`` (computed through the SVD of ``X_c``, which also covers
  n < d), ``b = ȳ − x̄ W``.
* **α selection**: grouped k-fold cross-validation on the TRAINING pairs only (folds never split
  a document), choosing the α with the lowest mean held-out ``mse_nrm``; ties go to the larger α.
* **Scaling curve**: FVE on the evaluation pairs after training on the first n pairs of a seeded
  random order of the training pairs, for each n of a grid.
* **Log-linear extrapolation**: ``FVE(n) ≈ a + b·log10(n)`` fitted by least squares to the
  ``fit_last`` largest n of the curve (where gains per doubling have settled); the crossover with a
  reference FVE ``r`` (the zero-pair text route) is ``n* = 10^((r − a)/b)``, infinite when b <= 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nla_probe.errors import InputError


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (norms clamped at 1e-12), float64."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise InputError(f"expected a 2-D array [n, d], found shape {a.shape}")
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True, eq=False)
class RidgeMap:
    """A fitted linear map ``y ≈ x W + b`` on unit-normalised rows.

    Attributes:
        weight: ``[d_in, d_out]``.
        bias: ``[d_out]``.
        alpha: the ridge penalty it was fitted with.
        n_train: number of training pairs.
    """

    weight: np.ndarray
    bias: np.ndarray
    alpha: float
    n_train: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions for raw rows ``x`` (normalised to unit norm first), ``[n, d_out]``."""
        xu = unit_rows(x)
        if xu.shape[1] != self.weight.shape[0]:
            raise InputError(f"predict: expected rows of width {self.weight.shape[0]}, found {xu.shape[1]}")
        return xu @ self.weight + self.bias


def _check_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xu, yu = unit_rows(x), unit_rows(y)
    if xu.shape[0] != yu.shape[0]:
        raise InputError(f"x and y must have the same number of rows, found {xu.shape[0]} and {yu.shape[0]}")
    if xu.shape[0] < 2:
        raise InputError(f"ridge needs at least 2 training pairs, found {xu.shape[0]}")
    return xu, yu


def _fit_svd(xu: np.ndarray, yu: np.ndarray, alphas: Sequence[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    xm, ym = xu.mean(0), yu.mean(0)
    xc, yc = xu - xm, yu - ym
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    uty = u.T @ yc
    out = []
    for a in alphas:
        w = vt.T @ ((s / (s * s + a))[:, None] * uty)
        out.append((w, ym - xm @ w))
    return out


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> RidgeMap:
    """Fit the ridge map of the module doc for one ``alpha >= 0`` (alpha = 0: minimum-norm least squares)."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise InputError(f"alpha: expected a finite number >= 0, found {alpha!r}")
    xu, yu = _check_xy(x, y)
    if alpha == 0:
        w, b = _lstsq(xu, yu)
    else:
        ((w, b),) = _fit_svd(xu, yu, [float(alpha)])
    return RidgeMap(w, b, float(alpha), xu.shape[0])


def _lstsq(xu: np.ndarray, yu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xm, ym = xu.mean(0), yu.mean(0)
    w = np.linalg.lstsq(xu - xm, yu - ym, rcond=None)[0]
    return w, ym - xm @ w


def mse_nrm_rows(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Per-row ``mse_nrm`` (both rows scaled to √d) = ``2(1 − cos)``."""
    from nla_probe.analysis.metrics import mse_nrm

    return mse_nrm(pred, gold)


def group_folds(groups: Sequence[str], n_folds: int, seed: int) -> np.ndarray:
    """Fold index per row, whole groups (documents) per fold, groups assigned in a seeded random order."""
    g = np.asarray([str(x) for x in groups])
    uniq = np.unique(g)
    if n_folds < 2 or n_folds > len(uniq):
        raise InputError(f"n_folds: expected 2 <= n_folds <= number of groups ({len(uniq)}), found {n_folds}")
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = {uniq[j]: k % n_folds for k, j in enumerate(order)}
    return np.array([fold_of[x] for x in g], dtype=np.int64)


def select_alpha(x: np.ndarray, y: np.ndarray, groups: Sequence[str], alphas: Sequence[float], *,
                 n_folds: int = 5, seed: int = 0) -> tuple[float, dict[float, float]]:
    """The α with the lowest grouped-CV mean held-out ``mse_nrm`` (module doc); returns ``(α, {α: mse})``.

    With fewer than 2 groups (or fewer groups than folds) the folds fall back to
    ``min(n_folds, n_groups)``; with a single group the largest α is returned untested.
    """
    alphas = sorted(float(a) for a in alphas)
    if not alphas or any(not (math.isfinite(a) and a > 0) for a in alphas):
        raise InputError(f"alphas: expected a non-empty list of positive numbers, found {list(alphas)}")
    xu, yu = _check_xy(x, y)
    k = min(n_folds, len(set(map(str, groups))))
    if k < 2:
        return alphas[-1], {}
    folds = group_folds(groups, k, seed)
    err = np.zeros(len(alphas))
    for f in range(k):
        tr, te = folds != f, folds == f
        if tr.sum() < 2:
            continue
        for j, (w, b) in enumerate(_fit_svd(xu[tr], yu[tr], alphas)):
            err[j] += mse_nrm_rows(xu[te] @ w + b, yu[te]).sum()
    err /= len(xu)
    best = min(range(len(alphas)), key=lambda j: (err[j], -alphas[j]))
    return alphas[best], dict(zip(alphas, err.tolist()))


def loglinear_fit(n: Sequence[float], fve: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``fve ≈ a + b·log10(n)``.

    Raises:
        InputError: fewer than 2 distinct n, or a non-positive n.
    """
    nn = np.asarray(n, dtype=np.float64)
    ff = np.asarray(fve, dtype=np.float64)
    if nn.shape != ff.shape or nn.ndim != 1:
        raise InputError(f"n and fve: expected two 1-D arrays of equal length, found {nn.shape} and {ff.shape}")
    if (nn <= 0).any() or len(np.unique(nn)) < 2:
        raise InputError(f"loglinear_fit needs >= 2 distinct positive n, found {nn.tolist()}")
    lx = np.log10(nn)
    b, a = np.polyfit(lx, ff, 1)
    return float(a), float(b)


def crossover(a: float, b: float, reference: float) -> float:
    """``n*`` with ``a + b·log10(n*) = reference``; ``inf`` when ``b <= 0`` and the line is below."""
    if b <= 0:
        return 0.0 if a >= reference else math.inf
    e = (reference - a) / b
    return math.inf if e > 300 else float(10.0 ** e)


def training_order(n_pairs: int, seed: int) -> np.ndarray:
    """The seeded random order in which training pairs enter the scaling curve."""
    return np.random.default_rng(seed).permutation(n_pairs)


def scaling_curve(x_train: np.ndarray, y_train: np.ndarray, groups: Sequence[str], x_eval: np.ndarray,
                  y_eval: np.ndarray, n_grid: Sequence[int], alphas: Sequence[float], *, n_folds: int = 5,
                  seed: int = 0) -> list[dict]:
    """Per-sample ``mse_nrm`` on the evaluation pairs after training on the first n pairs (module doc).

    Returns one dict per n of ``n_grid`` (n larger than the training set is clipped to it and
    duplicates dropped): ``{"n_train", "alpha", "mse_nrm": array[n_eval], "cv": {α: mse}}``.
    """
    xu, yu = _check_xy(x_train, y_train)
    g = np.asarray([str(v) for v in groups])
    if len(g) != len(xu):
        raise InputError(f"groups: expected {len(xu)} entries (one per training pair), found {len(g)}")
    order = training_order(len(xu), seed)
    grid = sorted({min(int(n), len(xu)) for n in n_grid})
    if not grid or grid[0] < 2:
        raise InputError(f"n_grid: expected training sizes >= 2, found {list(n_grid)}")
    out = []
    for n in grid:
        idx = order[:n]
        alpha, cv = select_alpha(xu[idx], yu[idx], g[idx], alphas, n_folds=n_folds, seed=seed)
        m = fit_ridge(xu[idx], yu[idx], alpha)
        out.append({"n_train": n, "alpha": alpha, "mse_nrm": mse_nrm_rows(m.predict(x_eval), y_eval), "cv": cv})
    return out


def crossover_ci(per_n: dict[int, np.ndarray], reference: np.ndarray, clusters: Sequence[str], *, fit_last: int = 3,
                 n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Log-linear crossover with a clustered percentile-bootstrap CI on ``log10 n*``.

    Args:
        per_n: ``{n_train: per-sample FVE on the evaluation rows}`` (rows in the same order for every n).
        reference: per-sample FVE of the reference route (the zero-pair text route) on the same rows.
        clusters: document id per evaluation row (the bootstrap resamples documents).
        fit_last: number of largest n used in the fit (module doc).
        n_boot, level, seed: bootstrap settings.

    Returns:
        ``{"a", "b", "reference", "n_star", "log10_low", "log10_high", "n_fit", "share_infinite"}``:
        fit and crossover on the original rows, the CI bounds of ``log10 n*`` (``inf`` when more than
        the upper tail of resamples never cross) and the share of resamples with no crossover.
    """
    ns = sorted(per_n)[-fit_last:]
    if len(ns) < 2:
        raise InputError(f"crossover_ci needs >= 2 training sizes to fit, found {sorted(per_n)}")
    _, codes = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    g = int(codes.max()) + 1
    size = np.bincount(codes, minlength=g).astype(np.float64)
    sums = np.stack([np.bincount(codes, weights=np.asarray(per_n[n], dtype=np.float64), minlength=g) for n in ns])
    ref_sums = np.bincount(codes, weights=np.asarray(reference, dtype=np.float64), minlength=g)
    lx = np.log10(np.asarray(ns, dtype=np.float64))

    def fit(w: np.ndarray) -> tuple[float, float, float, float]:
        tot = w @ size
        means = (sums @ w) / tot
        b, a = np.polyfit(lx, means, 1)
        r = float(ref_sums @ w / tot)
        return float(a), float(b), r, crossover(float(a), float(b), r)

    a, b, r, n_star = fit(np.ones(g))
    rng = np.random.default_rng(seed)
    logs = np.empty(n_boot)
    for i in range(n_boot):
        w = np.bincount(rng.integers(0, g, g), minlength=g).astype(np.float64)
        n_b = fit(w)[3]
        logs[i] = math.log10(n_b) if 0 < n_b < math.inf else (math.inf if n_b == math.inf else -math.inf)
    lo, hi = np.quantile(logs, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return {"a": a, "b": b, "reference": r, "n_star": n_star, "log10_low": float(lo), "log10_high": float(hi),
            "n_fit": ns, "share_infinite": float((logs == math.inf).mean())}
