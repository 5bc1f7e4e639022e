"""Helpers shared by the vector experiment kinds (``layer_sweep``, ``adjacent_layer``,
``cross_family``, ``ridge``): pure functions on vectors and the engine helpers that cache AR
reconstructions and build result rows.

Definitions: ``unit`` rows have L2 norm 1 (norms clamped at 1e-12); ``rowwise_cos`` is the cosine
per row; ``CLC[i, j] = mean_s cos(recon[i][s], gold[j][s])`` (cross-layer consistency);
``fve_nrm = 1 − mse_nrm / denominator`` in result rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nla_probe.copying.nulls import rotation_derangement
from nla_probe.errors import InputError

# ------------------------------------------------------------------------------------------ pure functions


def shuffle_pairs(doc_ids: Sequence[str], seed: int) -> np.ndarray:
    """A permutation π pairing every row i with a row π(i) of ANOTHER document.

    :func:`nla_probe.copying.nulls.rotation_derangement` (documents and their rows in a seeded
    random order, rotated by the size of the largest document).  When one document holds more than
    half of the rows some pairs stay within a document, and a warning says how many.
    """
    import warnings

    perm, same = rotation_derangement(doc_ids, seed)
    if same:
        warnings.warn(f"shuffle_pairs: {same} of {len(perm)} rows are paired within their own document "
                      f"(one document holds more than half of the rows)", stacklevel=2)
    return perm


def gaussian_rows(sample_ids: Sequence[int], d: int, norm: float, seed: int, layer: int) -> np.ndarray:
    """Gaussian rows of norm ``norm``, row s drawn from ``default_rng([seed, layer, s])`` (float32)."""
    out = np.empty((len(sample_ids), d), dtype=np.float32)
    for i, s in enumerate(sample_ids):
        g = np.random.default_rng([int(seed), int(layer), int(s)]).standard_normal(d)
        out[i] = g / np.linalg.norm(g) * norm
    return out


def unit(x: np.ndarray) -> np.ndarray:
    """Rows (last axis) scaled to unit L2 norm, float64 (norms clamped at 1e-12)."""
    a = np.asarray(x, dtype=np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def rowwise_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine of two ``[n, d]`` arrays (NaN rows stay NaN)."""
    return (unit(a) * unit(b)).sum(-1)


def clc_matrix(recon: Mapping[int, np.ndarray], gold: Mapping[int, np.ndarray]) -> np.ndarray:
    """``CLC[i, j] = mean_s cos(recon[i][s], gold[j][s])`` over layers in sorted key order (module doc)."""
    layers = sorted(recon)
    if sorted(gold) != layers:
        raise InputError(f"clc_matrix: recon and gold must cover the same layers, found {layers} and {sorted(gold)}")
    return np.array([[float(np.nanmean(rowwise_cos(recon[i], gold[j]))) for j in layers] for i in layers])


def reconstruction_consistency(recon: Mapping[int, np.ndarray]) -> np.ndarray:
    """Prior work's matrix ``mean_s cos(recon[i][s], recon[j][s])`` (no ground truth; diagonal 1)."""
    layers = sorted(recon)
    return np.array([[float(np.nanmean(rowwise_cos(recon[i], recon[j]))) for j in layers] for i in layers])


# ------------------------------------------------------------------------------------------ engine helpers


def reconstruct_cached(ctx: Any, texts: Sequence[str], handle: Any = None) -> dict[str, Any]:
    """AR reconstructions of ``texts`` through the run's record store (type ``"reconstruct"``).

    Key: AR fingerprint, dtype, device type, sha256 of the texts, overflow policy.  Returns
    ``{"vectors": float32 [n, d] (NaN rows for overflow policy "nan"), "ar_tokens": [...],
    "overflow": [...]}``.
    """
    from nla_probe.nla.layers import decode_vectors, encode_vectors

    h = handle if handle is not None else ctx.handle
    texts = [str(t) for t in texts]
    policy = ctx.spec.metrics.on_overflow
    payload = {"ar": h.identity["ar"]["fingerprint"], "dtype": h.dtype, "device_type": str(h.device).split(":")[0],
               "texts": hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest(),
               "on_overflow": policy}

    def compute() -> dict:
        rec = h.pair.ar.reconstruct_detailed(texts, batch_size=max(min(len(texts), ctx.batch_size), 1),
                                             on_overflow=policy)
        return {"vectors": encode_vectors(rec.vectors), "ar_tokens": [int(x) for x in rec.n_tokens],
                "overflow": list(rec.overflow)}

    rec = ctx.cached("reconstruct", payload, compute, rows=len(texts))
    return {"vectors": decode_vectors(rec["vectors"]), "ar_tokens": rec["ar_tokens"], "overflow": rec["overflow"]}


def sub_chunk(chunk: Any, vectors: np.ndarray, rows: Sequence[int] | None = None) -> Any:
    """A :class:`nla_probe.ablate.engine.Chunk` with other vectors (optionally a subset of its rows)."""
    from nla_probe.ablate.engine import Chunk, vectors_hash

    idx = list(range(len(chunk))) if rows is None else list(rows)
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    return Chunk(chunk.index, tuple(chunk.sample_ids[i] for i in idx), tuple(chunk.doc_ids[i] for i in idx),
                 tuple(chunk.positions[i] for i in idx), v, vectors_hash(v))


def chunk_frame(ctx: Any, chunk: Any) -> Any:
    """The selection's frame rows of ``chunk`` (chunks are consecutive slices of the selection)."""
    return ctx.data.frame.slice(chunk.index * ctx.batch_size, len(chunk))


def spec_sampling(spec: Any) -> dict:
    """The spec-level decoding parameters with the spec's seed."""
    return {**spec.sampling.to_dict(), "seed": spec.seed}


def empty_decode_fields(n: int) -> dict[str, list]:
    """Decode columns of rows without a decode (tag_status and finish_reason ``"none"``)."""
    return {"explanation": [""] * n, "tag_status": ["none"] * n, "n_tokens": [0] * n, "finish_reason": ["none"] * n}


def rows_block(spec: Any, condition: str, sample_ids: Sequence[int], doc_ids: Sequence[str],
               positions: Sequence[Any], decode: Mapping[str, list], texts: Sequence[str],
               ar_tokens: Sequence[int], overflow: Sequence[str], mse: np.ndarray, cos: np.ndarray,
               denominator: float, extra: Mapping[str, Sequence[Any]]) -> dict[str, list]:
    """Result rows (base columns + ``extra``) with ``fve_nrm = 1 − mse / denominator``."""
    n = len(sample_ids)
    out = {"experiment": [spec.name] * n, "condition": [condition] * n, "sample_id": list(sample_ids),
           "doc_id": list(doc_ids), "position": list(positions), "explanation": list(decode["explanation"]),
           "text": list(texts), "tag_status": list(decode["tag_status"]), "n_tokens": list(decode["n_tokens"]),
           "finish_reason": list(decode["finish_reason"]), "ar_tokens": list(ar_tokens),
           "overflow": list(overflow), "mse_nrm": [float(x) for x in mse], "cos": [float(x) for x in cos],
           "fve_nrm": [float(1.0 - x / denominator) for x in mse], "denominator": [float(denominator)] * n}
    for k, v in extra.items():
        out[k] = list(v)
    return out


def decode_fields(decodes: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Column lists ``explanation, tag_status, n_tokens, finish_reason`` of decode dicts."""
    return {k: [d[k] for d in decodes] for k in ("explanation", "tag_status", "n_tokens", "finish_reason")}
