"""Reconstruction metrics of the released NLA pairs, with their definitions.

All functions take ``pred`` and ``gold`` as arrays of shape ``[n, d]`` (or ``[d]``) and return one
value per row.  ``gold`` is the RAW activation (any magnitude); only directions matter.

Definitions (``s`` = ``scale``, √d on every released pair):

* ``normalize(v, s) = v / max(‖v‖₂, 1e-12) · s``.
* ``mse_nrm = mean_j (p̂_j − ĝ_j)²`` with ``p̂ = normalize(pred, √d)``, ``ĝ = normalize(gold, √d)``,
  the mean taken over the d elements.  With s = √d, ``mse_nrm = 2 (1 − cos)``: range [0, 4],
  orthogonal vectors give 2.
* ``fve_nrm = 1 − mse_nrm / B`` where ``B = Var(v_nrm)`` is the *predict-the-mean* baseline of the
  TRAINING activations: ``v_n = normalize(v, √d)``, ``μ = mean_i v_n``,
  ``B = mean_{i,j} (v_n − μ)²  = 1 − ‖μ‖² / d``.  0 is "as good as predicting the training mean",
  1 is perfect.  The released constants are in :data:`DENOMINATORS`.  This is NOT the centred FVE
  of some prior work (``1 − Σ Var(true − pred) / Σ Var(true)``), which forgives constant offsets;
  see ``docs/metrics.md``.
* ``cos`` — cosine similarity of ``pred`` and ``gold``.
* ``nrmse = ‖p̂ − ĝ‖₂ / ‖ĝ‖₂`` on unit-normalised vectors (relative L2 error, √2 for orthogonal).
* ``recall_at_k`` — whether gold row i is among the k pool items most cosine-similar to pred row i,
  where the pool is gold row i plus ``pool_size − 1`` other gold rows drawn with a recorded seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nla_probe.errors import InputError, UnknownNameError

EPS = 1e-12


@dataclass(frozen=True)
class Denominator:
    """A registered FVE denominator ``B = Var(v_nrm)``.

    Attributes:
        name: registry key.
        value: the constant.
        source: where it comes from (file, data set, split).
    """

    name: str
    value: float
    source: str


#: Released Var(v_nrm) constants, from the headers of the official worked examples
#: ("fve_nrm: 1 - mse_nrm / X", denominator computed on the TRAINING dataset).
DENOMINATORS: dict[str, Denominator] = {
    d.name: d
    for d in (
        Denominator("qwen2.5-7b-L20", 0.7335, "official examples/qwen7b header, training set"),
        Denominator("gemma3-12b-L32", 0.0302, "official examples/gemma12b header, training set"),
        Denominator("gemma3-27b-L41", 0.0579, "official examples/gemma27b header, training set"),
        Denominator("llama3.3-70b-L53", 0.9169, "official examples/llama70b header, training set"),
    )
}


def register_denominator(name: str, value: float, source: str, overwrite: bool = False) -> Denominator:
    """Add a denominator to :data:`DENOMINATORS` (e.g. one computed for your own pair)."""
    if name in DENOMINATORS and not overwrite:
        raise InputError(f"denominator {name!r} is already registered; pass overwrite=True")
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise InputError(f"denominator {name!r}: expected a positive finite number, found {value!r}")
    DENOMINATORS[name] = Denominator(name, float(value), source)
    return DENOMINATORS[name]


def get_denominator(name: str) -> Denominator:
    if name not in DENOMINATORS:
        raise UnknownNameError("denominator", name, DENOMINATORS)
    return DENOMINATORS[name]


def _as_2d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise InputError(f"{name}: expected shape [n, d] or [d], found {tuple(np.shape(x))}")
    return a


def _pair(pred, gold) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_2d(pred, "pred"), _as_2d(gold, "gold")
    if p.shape != g.shape:
        raise InputError(f"pred and gold must have the same shape, found {p.shape} and {g.shape}")
    return p, g


def normalize(v, scale: float | None = None) -> np.ndarray:
    """Rows of ``v`` rescaled to L2 norm ``scale`` (default √d); norms clamped at 1e-12."""
    a = _as_2d(v, "v")
    s = math.sqrt(a.shape[1]) if scale is None else scale
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), EPS) * s


def cosine(pred, gold) -> np.ndarray:
    """Per-row cosine similarity of ``pred`` and ``gold``."""
    p, g = _pair(pred, gold)
    num = (p * g).sum(1)
    return num / (np.maximum(np.linalg.norm(p, axis=1), EPS) * np.maximum(np.linalg.norm(g, axis=1), EPS))


def mse_nrm(pred, gold, scale: float | None = None) -> np.ndarray:
    """Per-row mean squared error of both vectors scaled to ``scale`` (default √d)."""
    p, g = _pair(pred, gold)
    zero = np.nonzero(np.linalg.norm(g, axis=1) == 0)[0]
    if len(zero):
        raise InputError(f"mse_nrm: gold rows {zero[:20].tolist()} have zero norm (a zero vector has no direction "
                         "to compare with)")
    return ((normalize(p, scale) - normalize(g, scale)) ** 2).mean(1)


def fve_nrm(mse, denominator: float | str) -> np.ndarray:
    """``1 − mse / B`` with ``B`` a number or the name of a registered :class:`Denominator`."""
    b = get_denominator(denominator).value if isinstance(denominator, str) else float(denominator)
    if not (math.isfinite(b) and b > 0):
        raise InputError(f"FVE denominator must be a positive finite number, found {denominator!r}")
    return 1.0 - np.asarray(mse, dtype=np.float64) / b


def variance_baseline(vectors, scale: float | None = None) -> float:
    """``B = Var(v_nrm)`` of a set of activations: mean over rows and dims of ``(v_n − μ)²``.

    Compute it on the TRAINING activations to reproduce the released ``fve_nrm``; computing it on an
    evaluation set gives a different (usually slightly smaller or larger) baseline — say which.
    """
    vn = normalize(vectors, scale)
    if vn.shape[0] < 2:
        raise InputError(f"variance_baseline needs at least 2 vectors, found {vn.shape[0]}")
    return float(((vn - vn.mean(0)) ** 2).mean())


def nrmse(pred, gold) -> np.ndarray:
    """Per-row ``‖p̂ − ĝ‖ / ‖ĝ‖`` on unit-normalised vectors (= √(2(1 − cos)))."""
    p, g = _pair(pred, gold)
    return np.linalg.norm(normalize(p, 1.0) - normalize(g, 1.0), axis=1)


def recall_at_k(pred, gold, k: int = 10, pool_size: int | None = None, seed: int = 0) -> np.ndarray:
    """Per-row hit (1.0/0.0): is gold row i within the top ``k`` of its pool by cosine to pred row i?

    The pool of row i is gold row i plus ``pool_size − 1`` distinct other gold rows drawn without
    replacement from a ``numpy.random.default_rng(seed)``; ``pool_size=None`` uses all n rows.
    Rank = number of pool items with strictly greater similarity (ties count in the item's favour).
    Chance level is ``k / pool_size``.
    """
    p, g = _pair(pred, gold)
    n = p.shape[0]
    pool = n if pool_size is None else int(pool_size)
    if not (1 <= k <= pool <= n):
        raise InputError(f"recall_at_k needs 1 <= k <= pool_size <= n, found k={k}, pool_size={pool}, n={n}")
    sims = normalize(p, 1.0) @ normalize(g, 1.0).T
    rng = np.random.default_rng(seed)
    hits = np.empty(n)
    for i in range(n):
        if pool == n:
            cand = sims[i]
            own = cand[i]
        else:
            others = rng.choice(n - 1, size=pool - 1, replace=False)
            others = others + (others >= i)
            cand = sims[i, others]
            own = sims[i, i]
        hits[i] = float((cand > own).sum() < k)
    return hits
