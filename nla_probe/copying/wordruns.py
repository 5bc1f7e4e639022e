"""Words and longest shared runs: what counts as a word, and the longest run two texts share.

Definitions (full discussion in ``docs/copying.md``):

* **Words.** :class:`WordNormalizer` splits a text at Unicode ``White_Space``, handles punctuation
  (``strip``: drop leading/trailing punctuation and symbols, general categories ``P*``/``S*``;
  ``split``: every punctuation/symbol character separates words; ``keep``: punctuation is part of
  the word), then applies NFKC and casefolding to each word.  Offsets always refer to the raw text.
* **Longest shared run.** The longest contiguous sequence of words present in both texts; ties go
  to the run that starts earliest in the first text, then earliest in the second — exactly what
  ``difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match()`` returns.

The matching engine (:class:`IndexedWords`, :func:`run_profile`, :func:`locate_run`,
:func:`range_layout`, :func:`range_maxes`) works on word ids shared through one vocabulary dict;
:mod:`nla_probe.copying` uses it to compare one explanation with many contexts.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import regex

from nla_probe.errors import InputError, check_keys

PUNCTUATION_MODES = ("strip", "split", "keep")
_NOT_WORD = r"\p{White_Space}\p{P}\p{S}"
_PATTERNS = {
    "strip": rf"[^{_NOT_WORD}](?:[^\p{{White_Space}}]*[^{_NOT_WORD}])?",
    "split": rf"[^{_NOT_WORD}]+",
    "keep": r"[^\p{White_Space}]+",
}
# The same patterns for ASCII-only text, in the faster stdlib engine (ASCII White_Space and P/S).
_A_WS = r"\t\n\x0b\x0c\r "
_A_NOT_WORD = _A_WS + r"!-/:-@\[-`{-~"
_ASCII_PATTERNS = {
    "strip": rf"[^{_A_NOT_WORD}](?:[^{_A_WS}]*[^{_A_NOT_WORD}])?",
    "split": rf"[^{_A_NOT_WORD}]+",
    "keep": rf"[^{_A_WS}]+",
}
#: Apostrophe look-alikes folded to ``'`` when ``fold_apostrophes`` is on.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'"})
#: Upper bound on matched word-bigram pairs held at once by the run kernel (bounded memory).
_MAX_PAIRS = 1 << 20

@lru_cache(maxsize=None)
def _compiled(mode: str, ascii_only: bool = False):
    return re.compile(_ASCII_PATTERNS[mode]) if ascii_only else regex.compile(_PATTERNS[mode])


@dataclass(frozen=True)
class Words:
    """Normalised words of a text with their raw character offsets (``text[starts[k]:ends[k]]``).

    A raw token that NFKC splits further (e.g. ``"⑴"`` → ``"(1)"``) gives several words that all
    carry the raw token's offsets.
    """

    words: tuple[str, ...]
    starts: tuple[int, ...]
    ends: tuple[int, ...]


@dataclass(frozen=True)
class WordNormalizer:
    """What counts as a word, and when two words are equal.

    Attributes:
        punctuation: ``"strip"`` (default: split at whitespace, remove leading/trailing characters of
            categories P*/S* from each chunk, keep inner ones: ``don't``, ``3.14``, ``well-known``;
            chunks of only punctuation vanish), ``"split"`` (every P*/S* character separates words:
            ``well-known`` → ``well``, ``known``) or ``"keep"`` (whitespace-separated chunks as is).
        nfkc: apply Unicode NFKC to each word (full-width forms, ligatures, compatibility digits).
        casefold: apply ``str.casefold`` (after NFKC, followed by NFKC again).
        fold_apostrophes: map ``’ ‘ ʼ ＇`` inside words to ``'``.
    """

    punctuation: str = "strip"
    nfkc: bool = True
    casefold: bool = True
    fold_apostrophes: bool = True

    def __post_init__(self) -> None:
        if self.punctuation not in PUNCTUATION_MODES:
            raise InputError(f"WordNormalizer.punctuation: expected one of {list(PUNCTUATION_MODES)}, "
                             f"found {self.punctuation!r}")
        for name in ("nfkc", "casefold", "fold_apostrophes"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"WordNormalizer.{name}: expected a bool, found {getattr(self, name)!r}")

    def normalize_token(self, token: str) -> list[str]:
        """The normalised word(s) of one raw token (empty if nothing word-like remains)."""
        if token.isascii():
            return [token.lower() if self.casefold else token]
        t = unicodedata.normalize("NFKC", token) if self.nfkc else token
        if self.casefold:
            t = t.casefold()
            if self.nfkc:
                t = unicodedata.normalize("NFKC", t)
        if self.fold_apostrophes:
            t = t.translate(_APOSTROPHES)
        return _compiled(self.punctuation).findall(t)

    def tokenize(self, text: str) -> Words:
        """Words of ``text`` with raw character offsets (end exclusive)."""
        if not isinstance(text, str):
            raise InputError(f"text: expected a str, found {type(text).__name__}")
        if text.isascii():  # fast path, same result: NFKC is the identity and casefold is lower()
            pattern = _compiled(self.punctuation, True)
            low = text.lower() if self.casefold else text
            spans = [m.span() for m in pattern.finditer(low)]
            return Words(tuple(pattern.findall(low)), tuple(s for s, _ in spans), tuple(e for _, e in spans))
        words, starts, ends = [], [], []
        for m in _compiled(self.punctuation).finditer(text):
            s, e = m.span()
            for w in self.normalize_token(m.group()):
                words.append(w)
                starts.append(s)
                ends.append(e)
        return Words(tuple(words), tuple(starts), tuple(ends))

    def words(self, text: str) -> list[str]:
        """Just the normalised words of ``text``."""
        return list(self.tokenize(text).words)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WordNormalizer:
        check_keys(d, cls.__dataclass_fields__, "WordNormalizer", InputError)
        return cls(**d)


DEFAULT_NORMALIZER = WordNormalizer()
#: Words = whitespace-separated chunks exactly as written (no normalisation), e.g. for context windows.
WHITESPACE_CHUNKS = WordNormalizer("keep", nfkc=False, casefold=False, fold_apostrophes=False)

# ------------------------------------------------------------------------------------------- engine


class IndexedWords:
    """Word ids of one text plus lazily built sorted indexes of its words and word bigrams.

    Args:
        words: the text's normalised words.
        vocab: word -> id dict shared by every text that will be compared (new words are added);
            two words match when their ids are equal.
    """

    __slots__ = ("ids", "_keys", "_uni", "_bi")

    def __init__(self, words: Sequence[str], vocab: dict[str, int]):
        self.ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), np.int64, len(words))
        self._keys = self._uni = self._bi = None

    def bigrams(self) -> np.ndarray:
        """Key of each word bigram: ``id[i] << 32 | id[i + 1]`` (exact while the vocabulary < 2**31)."""
        if self._keys is None:
            self._keys = (self.ids[:-1] << 32) | self.ids[1:]
        return self._keys

    def unigram_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted word ids and the positions they come from (ascending within equal ids)."""
        if self._uni is None:
            order = np.argsort(self.ids, kind="stable").astype(np.int32)
            self._uni = (self.ids[order], order)
        return self._uni

    def bigram_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Distinct sorted bigram keys, the first index and count of each in ``order``, and ``order``
        (bigram positions sorted by key, ascending within equal keys)."""
        if self._bi is None:
            keys = (self.ids[:-1] << 32) | self.ids[1:]
            order = np.argsort(keys, kind="stable").astype(np.int32)
            uniq, first, counts = np.unique(keys[order], return_index=True, return_counts=True)
            self._bi = (uniq, first.astype(np.int32), counts.astype(np.int32), order)
        return self._bi


def _lookup(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each query in ``sorted_keys`` (clipped) and whether it is there."""
    pos = sorted_keys.searchsorted(queries)
    np.minimum(pos, sorted_keys.size - 1, out=pos)
    return pos, sorted_keys[pos] == queries


def run_profile(a: IndexedWords, b: IndexedWords, need_ell: bool) -> tuple[int, np.ndarray | None]:
    """Longest shared run length of ``a`` and ``b`` (words), and (if ``need_ell``) the array ``ell``
    with ``ell[i]`` = the longest shared run ending at word i of ``a`` (None otherwise).

    Runs of >= 2 words are chains of matching word bigrams along one diagonal (``j - i`` constant);
    matching pairs are sorted by (diagonal, row) and chained, in row blocks of at most
    ``_MAX_PAIRS`` pairs whose run lengths carry over from block to block.
    """
    n, m = len(a.ids), len(b.ids)
    ell = np.zeros(n, np.int64) if need_ell else None
    if n == 0 or m == 0:
        return 0, ell
    _, has1 = _lookup(b.unigram_index()[0], a.ids)
    if not has1.any():
        return 0, ell
    if ell is not None:
        ell[has1] = 1
    if n < 2 or m < 2:
        return 1, ell
    uniq, first2, count2, o2 = b.bigram_index()
    pos, hit = _lookup(uniq, a.bigrams())
    counts = np.where(hit, count2[pos], 0)
    lo2 = first2[pos]
    cum = counts.cumsum()
    best_t, start, rows = 0, 0, n - 1
    carry_d = carry_t = np.zeros(0, np.int64)
    while start < rows:
        before = int(cum[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(cum, before + _MAX_PAIRS, "right")))
        stop = min(stop, rows)
        c = counts[start:stop]
        p = int(cum[stop - 1]) - before
        if p == 0:
            carry_d = carry_t = np.zeros(0, np.int64)
            start = stop
            continue
        ii = np.repeat(np.arange(start, stop), c)
        jj = o2[np.arange(p) - np.repeat(np.cumsum(c) - c - lo2[start:stop], c)]
        diag = jj - ii
        order = np.argsort((diag + n) * (n + 1) + ii)
        ii, diag = ii[order], diag[order]
        head = np.ones(p, bool)
        head[1:] = (diag[1:] != diag[:-1]) | (ii[1:] != ii[:-1] + 1)
        idx = np.arange(p)
        first = np.maximum.accumulate(np.where(head, idx, 0))
        t = idx - first + 1  # bigrams in the run so far = words - 1
        if carry_d.size:
            heads = np.flatnonzero(head & (ii == start))
            pos = np.minimum(np.searchsorted(carry_d, diag[heads]), carry_d.size - 1)
            hit = carry_d[pos] == diag[heads]
            base = np.zeros(p, np.int64)
            base[heads[hit]] = carry_t[pos[hit]]
            t = t + base[first]
        best_t = max(best_t, int(t.max()))
        if ell is not None:
            np.maximum.at(ell, ii + 1, t + 1)
        last = ii == stop - 1
        carry_d, carry_t = diag[last], t[last]
        start = stop
    return best_t + 1 if best_t else 1, ell


def locate_run(a: IndexedWords, b: IndexedWords, ell: np.ndarray, lo: int, hi: int) -> tuple[int, int, int]:
    """``(length, a_start, b_start)`` of the longest run within words ``a[lo:hi]`` (difflib's tie rule).

    ``ell`` is :func:`run_profile` ``(a, b, need_ell=True)[1]``; word offsets are in ``a`` and ``b``.
    """
    if hi <= lo:
        return 0, lo, 0
    vals = np.minimum(ell[lo:hi], np.arange(1, hi - lo + 1))
    k = int(np.argmax(vals))
    size = int(vals[k])
    if size == 0:
        return 0, lo, 0
    end = lo + k
    if size == 1:
        s1, o1 = b.unigram_index()
        return 1, end, int(o1[np.searchsorted(s1, a.ids[end])])
    uniq, first2, count2, o2 = b.bigram_index()
    k2 = int(np.searchsorted(uniq, (a.ids[end - 1] << 32) | a.ids[end]))
    b_ends = o2[first2[k2]:first2[k2] + count2[k2]] + 1
    b_ends = b_ends[b_ends >= size - 1]
    windows = np.lib.stride_tricks.sliding_window_view(b.ids, size)[b_ends - size + 1]
    ok = np.flatnonzero((windows == a.ids[end - size + 1:end + 1]).all(axis=1))
    if ok.size == 0:  # pragma: no cover - would mean a bug in run_profile
        raise RuntimeError("copy detection kernel: run length without a matching window")
    return size, end - size + 1, int(b_ends[ok[0]]) - size + 1


def range_layout(ranges: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Word positions of all non-empty ranges ``(lo, hi)`` of ``a``, concatenated, for :func:`range_maxes`
    (build it once per text, use it against every other text)."""
    keep = np.array([hi > lo for lo, hi in ranges], bool)
    spans = [(lo, hi) for lo, hi in ranges if hi > lo]
    pos = np.concatenate([np.arange(lo, hi) for lo, hi in spans]) if spans else np.zeros(0, np.int64)
    rel = np.concatenate([np.arange(1, hi - lo + 1) for lo, hi in spans]) if spans else np.zeros(0, np.int64)
    starts = np.cumsum([0] + [hi - lo for lo, hi in spans[:-1]]) if spans else np.zeros(0, np.int64)
    return keep, pos, rel, starts


def range_maxes(ell: np.ndarray, layout) -> np.ndarray:
    """Longest run within each range ``a[lo:hi]``: ``max(min(ell[i], i - lo + 1))`` (0 if empty).

    ``ell`` is :func:`run_profile`'s, ``layout`` is :func:`range_layout` of the ranges.
    """
    keep, pos, rel, starts = layout
    out = np.zeros(keep.size, np.int64)
    if pos.size:
        out[keep] = np.maximum.reduceat(np.minimum(ell[pos], rel), starts)
    return out


@dataclass(frozen=True)
class SharedRun:
    """The longest run of words shared by two texts.

    Attributes:
        length: number of words in the run (0 if the texts share no word).
        words: the run's normalised words.
        a_start, a_end: word offsets of the run in the first text (end exclusive); ``(0, 0)`` if empty.
        b_start, b_end: word offsets in the second text.
        a_char_start, a_char_end, b_char_start, b_char_end: raw character offsets of the run's first
            and last word (end exclusive); None for an empty run or pre-split word input.
    """

    length: int
    words: tuple[str, ...]
    a_start: int
    a_end: int
    b_start: int
    b_end: int
    a_char_start: int | None = None
    a_char_end: int | None = None
    b_char_start: int | None = None
    b_char_end: int | None = None


def _as_words(x, normalizer: WordNormalizer, name: str) -> tuple[Sequence[str], Words | None]:
    if isinstance(x, str):
        toks = normalizer.tokenize(x)
        return toks.words, toks
    if isinstance(x, Sequence) and all(isinstance(w, str) for w in x):
        return list(x), None
    raise InputError(f"{name}: expected a str or a sequence of str words, found {type(x).__name__}")


def longest_shared_run(a, b, normalizer: WordNormalizer = DEFAULT_NORMALIZER) -> SharedRun:
    """The longest contiguous run of words shared by ``a`` and ``b``.

    Args:
        a: a text (tokenised with ``normalizer``) or a sequence of words (compared as given).
        b: the same for the second text (e.g. the source context).
        normalizer: word definition used for texts.

    Returns:
        :class:`SharedRun`; equal in length and word offsets to
        ``difflib.SequenceMatcher(None, a_words, b_words, autojunk=False).find_longest_match()``.
    """
    aw, at = _as_words(a, normalizer, "a")
    bw, bt = _as_words(b, normalizer, "b")
    vocab: dict[str, int] = {}
    ta, tb = IndexedWords(aw, vocab), IndexedWords(bw, vocab)
    _, ell = run_profile(ta, tb, need_ell=True)
    size, i, j = locate_run(ta, tb, ell, 0, len(aw))
    if size == 0:
        return SharedRun(0, (), 0, 0, 0, 0)
    chars = (None,) * 4
    if at is not None and bt is not None:
        chars = (at.starts[i], at.ends[i + size - 1], bt.starts[j], bt.ends[j + size - 1])
    return SharedRun(size, tuple(aw[i:i + size]), i, i + size, j, j + size, *chars)


def shared_run_lengths(a_items: Sequence, b_items: Sequence, pairs, normalizer: WordNormalizer = DEFAULT_NORMALIZER
                       ) -> np.ndarray:
    """Longest shared run length of ``a_items[i]`` and ``b_items[j]`` for each row ``(i, j)`` of ``pairs``.

    Items are texts or word sequences as in :func:`longest_shared_run`; each one is tokenised and
    indexed once, however many pairs use it (all of them are held in memory; for large runs use
    :func:`nla_probe.copying.copy_detection_to_parquet`).  Returns an int64 array of ``len(pairs)`` lengths.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    for col, name, items in ((0, "a_items", a_items), (1, "b_items", b_items)):
        if pairs.size and (pairs[:, col].min() < 0 or pairs[:, col].max() >= len(items)):
            raise InputError(f"pairs: column {col} must index {name} (0..{len(items) - 1}), "
                             f"found {pairs[:, col].min()}..{pairs[:, col].max()}")
    vocab: dict[str, int] = {}
    cache: dict[tuple[int, int], IndexedWords] = {}

    def text(side: int, k: int) -> IndexedWords:
        if (side, k) not in cache:
            words = _as_words((a_items, b_items)[side][k], normalizer, "ab"[side])[0]
            cache[side, k] = IndexedWords(words, vocab)
        return cache[side, k]

    return np.array([run_profile(text(0, i), text(1, j), need_ell=False)[0] for i, j in pairs.tolist()], np.int64)
