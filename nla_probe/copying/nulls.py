"""Null sources for copy detection: contexts drawn from *other* documents.

* **Source context.** ``source_text[:char_end]`` (up to and including the activation's token), or
  its last ``window`` whitespace-separated chunks (:func:`source_context`).
* **Null.** Column ``k`` of :func:`null_sources` is a permutation of the samples that never maps a
  sample to its own document, and a row never repeats a source; :func:`doc_derangement` is one such
  column (it raises when one document holds too many samples).  Drawn from one recorded seed.
* **Rotation derangement.** :func:`rotation_derangement` pairs every row with a row of another
  document by rotating a document-grouped order; it never fails (it reports how many pairs share a
  document when one document holds more than half of the rows).  The ``shuffled`` controls of the
  text and vector experiments use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nla_probe.copying.wordruns import WHITESPACE_CHUNKS
from nla_probe.errors import InputError


def source_context(source_text: str, char_end: int, window: int | None = None, *,
                   window_chars: int | None = None) -> str:
    """The source context of an activation: the text up to and including its token.

    Args:
        source_text: the document text.
        char_end: exclusive end offset of the activation's token in ``source_text``.
        window: if given, keep only the last ``window`` whitespace-separated chunks of
            ``source_text[:char_end]`` (a chunk cut by ``char_end`` counts as one).
        window_chars: if given (>= 1), keep only the last ``window_chars`` characters instead.

    Returns:
        A suffix of ``source_text[:char_end]``; its start offset is ``char_end - len(result)``.
    """
    if not isinstance(source_text, str):
        raise InputError(f"source_text: expected a str, found {type(source_text).__name__}")
    if not isinstance(char_end, (int, np.integer)) or not 0 <= char_end <= len(source_text):
        raise InputError(f"char_end: expected an int in [0, {len(source_text)}], found {char_end!r}")
    prefix = source_text[:int(char_end)]
    if window is not None and window_chars is not None:
        raise InputError("source_context: expected at most one of window and window_chars, found both")
    if window_chars is not None:
        if not isinstance(window_chars, (int, np.integer)) or window_chars < 1:
            raise InputError(f"window_chars: expected None or an int >= 1, found {window_chars!r}")
        return prefix[-int(window_chars):]
    if window is None:
        return prefix
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise InputError(f"window: expected None or an int >= 1, found {window!r}")
    starts = WHITESPACE_CHUNKS.tokenize(prefix).starts
    return prefix[starts[-window]:] if len(starts) > window else prefix


# -------------------------------------------------------------------------------------------- nulls


def _doc_keys(doc_ids) -> tuple[list, bool]:
    """Document ids as ints (if all are integers) or strings; returns (keys, is_int)."""
    vals = list(doc_ids)
    if all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in vals):
        return [int(d) for d in vals], True
    return [str(d) for d in vals], False


def _codes(doc_ids) -> np.ndarray:
    keys, _ = _doc_keys(doc_ids)
    if not keys:
        return np.zeros(0, np.int64)
    return np.unique(np.asarray(keys), return_inverse=True)[1].reshape(-1).astype(np.int64)


def _repair(perm: np.ndarray, codes: np.ndarray, prev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Swap away rows whose source is from their own document or already among their sources."""

    def bad(i: int, v: int) -> bool:
        return codes[v] == codes[i] or bool((prev[i] == v).any())

    n = perm.size
    conflicts = np.flatnonzero((codes[perm] == codes) | (prev == perm[:, None]).any(axis=1))
    for i in conflicts[rng.permutation(conflicts.size)]:
        if not bad(i, perm[i]):
            continue  # fixed by an earlier swap
        for _ in range(32):
            j = int(rng.integers(n))
            if not bad(i, perm[j]) and not bad(j, perm[i]):
                break
        else:
            ok = ((codes[perm] != codes[i]) & ~np.isin(perm, prev[i])
                  & (codes != codes[perm[i]]) & ~(prev == perm[i]).any(axis=1))
            cand = np.flatnonzero(ok)
            if cand.size == 0:
                return _matching_column(codes, prev, rng)
            j = int(rng.choice(cand))
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def _matching_column(codes: np.ndarray, prev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A valid column as a maximum bipartite matching (rows -> sources), for tight cases swaps miss."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    n = codes.size
    if n > 8192:
        raise InputError(f"null sources: no valid assignment found by swaps in a pool of {n} samples")
    rows, cols = rng.permutation(n), rng.permutation(n)
    allowed = codes[rows][:, None] != codes[cols][None, :]
    for k in range(prev.shape[1]):
        allowed &= prev[rows, k][:, None] != cols[None, :]
    match = maximum_bipartite_matching(csr_matrix(allowed), perm_type="column")
    if (match < 0).any():
        raise InputError(f"null sources: no assignment gives every sample {prev.shape[1] + 1} distinct sources "
                         "of other documents; use fewer null sources or larger pools")
    out = np.empty(n, np.int64)
    out[rows] = cols[match]
    return out


def null_sources(doc_ids, n_null: int, seed=0) -> np.ndarray:
    """Indices of the null source contexts of each sample, ``[n, n_null]``.

    Column ``k`` is a permutation of ``0..n-1`` (every context is used once per column) with
    ``doc_ids[out[i, k]] != doc_ids[i]``; a row holds ``n_null`` distinct samples.  Each column
    starts as ``rng.permutation(n)``; each conflicting row then swaps its entry with a random row for
    which the swap is valid (if no such row exists, the column is a maximum bipartite matching of
    the allowed pairs, rows and sources in random order).

    Args:
        doc_ids: document id per sample.
        n_null: sources per sample (0 gives an ``[n, 0]`` array).
        seed: seed (int or sequence of ints) of ``numpy.random.default_rng``.

    Raises:
        InputError: if some document holds so many samples that fewer than ``n_null`` samples of
            other documents remain.
    """
    if not isinstance(n_null, (int, np.integer)) or n_null < 0:
        raise InputError(f"n_null: expected an int >= 0, found {n_null!r}")
    codes = _codes(doc_ids)
    n = codes.size
    out = np.zeros((n, n_null), np.int64)
    if n_null == 0 or n == 0:
        return out
    largest = int(np.bincount(codes).max())
    if n - largest < n_null:
        raise InputError(f"null sources: a document holds {largest} of {n} samples, leaving {n - largest} "
                         f"samples of other documents; expected at least n_null={n_null}")
    rng = np.random.default_rng(seed)
    for k in range(n_null):
        out[:, k] = _repair(rng.permutation(n), codes, out[:, :k], rng)
    return out


def doc_derangement(doc_ids, seed=0) -> np.ndarray:
    """A seeded permutation ``p`` of the samples with ``doc_ids[p[i]] != doc_ids[i]`` for every i."""
    return null_sources(doc_ids, 1, seed)[:, 0]


# --------------------------------------------------------------------------------------- detection


def rotation_derangement(doc_ids: Sequence[Any], seed: int) -> tuple[np.ndarray, int]:
    """A random permutation ``partner`` of ``range(n)`` with ``partner[j] != j``.

    Construction: documents in a random order (``numpy.random.default_rng(seed)``), the rows of
    each document shuffled, all concatenated into one sequence ``s``; with ``m`` = the largest
    number of rows of one document, ``partner[s[k]] = s[(k + m) mod n]``.  When ``n >= 2m`` no row
    is paired with a row of its own document (a shift by ``m`` leaves every contiguous block of at
    most ``m`` rows and cannot wrap back into it).  When one document holds more than half of the
    rows that is impossible; the shift is then 1 (still a derangement) and some pairs share a
    document.

    Returns:
        ``(partner, n_same_doc)``: the permutation and the number of rows paired within their
        own document.

    Raises:
        InputError: fewer than 2 rows.
    """
    docs = [str(d) for d in doc_ids]
    n = len(docs)
    if n < 2:
        raise InputError(f"a cross-document derangement needs at least 2 rows, found {n}")
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(docs):
        groups.setdefault(d, []).append(i)
    names = sorted(groups)
    seq: list[int] = []
    for g in rng.permutation(len(names)):
        rows = groups[names[g]]
        seq.extend(rows[k] for k in rng.permutation(len(rows)))
    m = max(len(r) for r in groups.values())
    shift = m if n >= 2 * m else 1
    partner = np.empty(n, dtype=np.int64)
    s = np.asarray(seq, dtype=np.int64)
    partner[s] = np.roll(s, -shift)
    same = int(sum(docs[j] == docs[int(partner[j])] for j in range(n)))
    return partner, same
