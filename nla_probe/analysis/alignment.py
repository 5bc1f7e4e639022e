"""Mapping token positions between two tokenizers by character offset.

Two model families read the same document through different tokenizers, so "the same position"
must be defined in characters.  A source token covers the characters ``[char_start, char_end)`` of
the document; at that position the source model has read the text up to ``char_end``.

**Rule.** The aligned target position is the target token whose character span contains the
source token's last character ``c = char_end − 1``; when several target tokens contain ``c``
(byte-level pieces of one multi-byte character) the LAST of them, which has read all of ``c``.
When no target token contains ``c`` (a character the target tokenizer leaves out of every span,
e.g. trimmed whitespace), the fallback is the last target token that starts at or before ``c``
(``fallback = True``).  Special tokens (empty spans) never match.

**Error.** ``align_error = |target char_end − source char_end|`` in characters: how much more or
less text the target model has read at the aligned position.  0 = both tokenizations have a token
boundary at the same character.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nla_probe.errors import InputError


@dataclass(frozen=True)
class Alignment:
    """One aligned position.

    Attributes:
        position: target token index (in the target's ``add_special_tokens=True`` tokenization).
        char_start, char_end: the target token's character span (end exclusive).
        error: ``|char_end − source char_end|`` in characters.
        fallback: True when no target span contained the source's last character.
    """

    position: int
    char_start: int
    char_end: int
    error: int
    fallback: bool


def token_offsets(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of ``text``'s tokens, special tokens included (empty spans),
    in the same tokenization as :func:`nla_probe.nla.extraction.extract_activations`."""
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True, verbose=False)
    return [(int(a), int(b)) for a, b in enc["offset_mapping"]]


def align_offset(src_char_end: int, offsets: Sequence[tuple[int, int]]) -> Alignment:
    """Align one source token (ending at ``src_char_end``, exclusive) to a target tokenization.

    Args:
        src_char_end: the source token's exclusive end character (>= 1).
        offsets: the target tokens' ``(start, end)`` character spans, in token order.

    Raises:
        InputError: ``src_char_end < 1`` or no target token starts at or before the character.
    """
    if src_char_end < 1:
        raise InputError(f"align_offset: source char_end must be >= 1 (a non-empty token), found {src_char_end}")
    c = src_char_end - 1
    hit = None
    for i, (s, e) in enumerate(offsets):
        if s <= c < e:
            hit = i
    fallback = hit is None
    if fallback:
        for i, (s, e) in enumerate(offsets):
            if e > s and s <= c:
                hit = i
    if hit is None:
        raise InputError(f"align_offset: no target token starts at or before character {c}")
    s, e = offsets[hit]
    return Alignment(hit, s, e, abs(e - src_char_end), fallback)


def align_frame(frame: Any, tokenizer: Any) -> Any:
    """Aligned target positions for every row of an activation frame.

    Args:
        frame: polars frame with ``doc_id``, ``source_text``, ``char_end`` (the source token's
            exclusive end character, as written by :func:`nla_probe.nla.extraction.extract_activations`).
        tokenizer: the target family's tokenizer.

    Returns:
        ``frame`` with columns ``tgt_position``, ``tgt_char_start``, ``tgt_char_end``,
        ``align_error`` (characters) and ``align_fallback`` added.
    """
    import polars as pl

    missing = [c for c in ("doc_id", "source_text", "char_end") if c not in frame.columns]
    if missing:
        raise InputError(f"align_frame: frame lacks column(s) {missing}; found {frame.columns}")
    cache: dict[str, list[tuple[int, int]]] = {}
    cols: dict[str, list] = {k: [] for k in ("tgt_position", "tgt_char_start", "tgt_char_end", "align_error",
                                             "align_fallback")}
    for i, (doc, text, end) in enumerate(zip(frame["doc_id"].cast(str).to_list(), frame["source_text"].to_list(),
                                             frame["char_end"].to_list())):
        if doc not in cache:
            cache[doc] = token_offsets(tokenizer, text)
        try:
            a = align_offset(int(end), cache[doc])
        except InputError as e:
            raise InputError(f"align_frame: row {i} ({doc!r}): {e}") from None
        for k, v in zip(cols, (a.position, a.char_start, a.char_end, a.error, a.fallback)):
            cols[k].append(v)
    return frame.with_columns(pl.Series("tgt_position", cols["tgt_position"], dtype=pl.Int64),
                              pl.Series("tgt_char_start", cols["tgt_char_start"], dtype=pl.Int64),
                              pl.Series("tgt_char_end", cols["tgt_char_end"], dtype=pl.Int64),
                              pl.Series("align_error", cols["align_error"], dtype=pl.Int64),
                              pl.Series("align_fallback", cols["align_fallback"], dtype=pl.Boolean))


def alignment_summary(errors: Sequence[int] | np.ndarray, fallback: Sequence[bool] | np.ndarray) -> dict:
    """``{"n", "mean_error", "median_error", "max_error", "frac_exact", "n_fallback"}`` (errors in chars)."""
    e = np.asarray(errors, dtype=np.float64)
    f = np.asarray(fallback, dtype=bool)
    if e.size == 0:
        return {"n": 0, "mean_error": float("nan"), "median_error": float("nan"), "max_error": float("nan"),
                "frac_exact": float("nan"), "n_fallback": 0}
    return {"n": int(e.size), "mean_error": float(e.mean()), "median_error": float(np.median(e)),
            "max_error": float(e.max()), "frac_exact": float((e == 0).mean()), "n_fallback": int(f.sum())}


def offsets_boundaries(offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Sorted token end characters (the boundaries at which a model has read a whole token)."""
    return sorted({e for s, e in offsets if e > s})


def nearest_boundary_error(src_char_end: int, offsets: Sequence[tuple[int, int]]) -> int:
    """Distance in characters from ``src_char_end`` to the nearest target token end (a lower bound on
    :attr:`Alignment.error` for any alignment rule)."""
    b = offsets_boundaries(offsets)
    if not b:
        raise InputError("nearest_boundary_error: the target tokenization has no non-empty token")
    k = bisect.bisect_left(b, src_char_end)
    cands = [b[j] for j in (k - 1, k) if 0 <= j < len(b)]
    return min(abs(x - src_char_end) for x in cands)
