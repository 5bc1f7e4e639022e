"""Delimited spans of an NLA explanation: quotes, brackets, emphasis — with offsets and problems.

:func:`find_spans` scans a text once, left to right, for the open/close pairs of the delimiter
families registered in :mod:`nla_probe.text.delimiters` (the registry the generation-time bans use), and
returns every matched span with character offsets plus every mark it could not match.

Rules (all offsets are Python string indices, i.e. Unicode code points; ``end`` is exclusive):

* **Nesting.** Spans nest: ``"he said 'no'"`` gives a double-quote span with a single-quote span
  inside it (``depth`` 0 and 1).  A closing mark closes the innermost open span it can close; any
  spans opened after that one and still open are reported ``unterminated``.
* **Symmetric marks** (``"``, ``'``, backtick, ``*``, ``_``, ``**``, ``__``, fullwidth ``＂``/``＇``)
  are told apart by their neighbours, as in CommonMark's flanking rules: a mark can *open* only if
  the next character is not whitespace and the previous one is not a letter/digit; it can *close*
  only if the previous character is not whitespace and the next one is not a letter/digit.  A mark
  with a letter or digit on both sides (``don't``, ``Qwen's``, ``snake_case``, ``5'11``) is part of
  the word and never a delimiter.
* **Straight double quotes that pair in order.**  On a line whose straight double quotes ``"``
  (those not inside a word) pair up cleanly — an even number of them, every odd one (1st, 3rd, …)
  without a letter or digit just before it and every even one without a letter or digit just after
  it — they are paired in order, 1st with 2nd, 3rd with 4th, whatever their other neighbours.  This
  is how NLA explanations quote tokens verbatim, leading space included: ``token " " opens``,
  ``" **"``, ``" (the AI model)."``, ``" : the famous Eiffel Tower"``.  On other lines (an odd count,
  or a quote glued to a word on the wrong side) the flanking rules decide.  Spans inside such a
  pair nest as usual.
* **Apostrophes.** ``'`` or ``’`` after a letter/digit and before a non-letter (``students'``,
  ``students’``) closes a single-quote span if one is open and is otherwise an apostrophe: it is
  neither a span nor a problem.  ``’`` between letters (``don’t``) is always an apostrophe.
* **Asymmetric marks** (``“ ”``, ``( )``, ``「 」``, ``« »``…) open and close by their role; a mark that
  is an opener in one pair and a closer in another (``“`` closes ``„``) closes when a matching
  opener is open and opens otherwise.
* **Lines.** By default a span never crosses a line break: at every ``\\n`` all open spans are
  reported ``unterminated`` and dropped, so an unbalanced mark costs at most the rest of its line
  and never swallows the text after it.  ``across_lines=True`` lets spans cross single line breaks
  but not a blank line (paragraph break).
* **Problems.** ``unterminated`` (an opener never closed), ``unmatched_close`` (a closer with no
  opener), ``stray`` (a symmetric quote mark with whitespace on both sides).  Emphasis marks with
  whitespace on both sides (list bullets, ``a * b``) are ordinary characters, not problems.

Marks listed in a family's ``chars`` but in none of its ``pairs`` (primes ``′ ″``, acute ``´``) are
never span delimiters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import regex

from nla_probe.errors import InputError
from nla_probe.text import delimiters as _delimiters
from nla_probe.text.delimiters import DelimiterFamily, expand_family_names, get_family

#: Marks that double as apostrophes (between or after letters).
APOSTROPHES = frozenset("'\u2019\uff07")
#: Families whose whitespace-flanked symmetric marks are ordinary characters, not problems.
_QUIET_FAMILIES = frozenset({"emphasis"})


@dataclass(frozen=True)
class Span:
    """One delimited span.

    Attributes:
        start: offset of the opening mark (inclusive).
        end: offset just after the closing mark (exclusive); ``text[start:end]`` includes both marks.
        inner_start: offset just after the opening mark.
        inner_end: offset of the closing mark; ``text[inner_start:inner_end]`` is the bare content.
        family: delimiter family name, e.g. ``"double_quotes"``.
        open: the opening mark (1–2 characters).
        close: the closing mark.
        depth: number of parsed spans enclosing this one (0 = outermost).
    """

    start: int
    end: int
    inner_start: int
    inner_end: int
    family: str
    open: str
    close: str
    depth: int = 0

    def text(self, source: str) -> str:
        """The span with its marks."""
        return source[self.start:self.end]

    def inner(self, source: str) -> str:
        """The span's content without its own marks."""
        return source[self.inner_start:self.inner_end]


@dataclass(frozen=True)
class Problem:
    """A delimiter mark the parser could not match.

    Attributes:
        kind: ``"unterminated"``, ``"unmatched_close"`` or ``"stray"``.
        start: offset of the mark.
        end: offset just after the mark.
        family: delimiter family name.
        mark: the mark itself.
    """

    kind: str
    start: int
    end: int
    family: str
    mark: str


@dataclass(frozen=True)
class ParseResult:
    """Spans (sorted by ``start``, outer before inner) and problems (sorted by ``start``)."""

    spans: tuple[Span, ...]
    problems: tuple[Problem, ...]

    def outermost(self) -> tuple[Span, ...]:
        """The spans not enclosed by another span (depth 0), in text order; they never overlap."""
        return tuple(s for s in self.spans if s.depth == 0)

    def span_chars(self) -> int:
        """Characters covered by the outermost spans, marks included."""
        return sum(s.end - s.start for s in self.outermost())


@dataclass(frozen=True)
class _Table:
    """Compiled scanning tables for one tuple of families.

    ``info[mark] = (opens, closers, symmetric, apostrophe, family, quiet)``: whether the mark opens
    some pair, the opener marks it closes (None if it closes nothing), whether it is the opener and
    closer of one pair, whether it doubles as an apostrophe, its family, and whether whitespace-
    flanked occurrences are ordinary characters.
    """

    pattern: re.Pattern
    info: dict
    pair_straight: bool = False


@lru_cache(maxsize=64)
def _compile(families: tuple[DelimiterFamily, ...], fast: bool = True) -> _Table:
    opens: dict[str, str] = {}
    closes: dict[str, set[str]] = {}
    family: dict[str, str] = {}
    symmetric: set[str] = set()
    for fam in families:
        for o, c in fam.pairs:
            opens.setdefault(o, fam.name)
            closes.setdefault(c, set()).add(o)
            family.setdefault(o, fam.name)
            family.setdefault(c, fam.name)
            if o == c:
                symmetric.add(o)
    info = {m: (m in opens, frozenset(closes[m]) if m in closes else None, m in symmetric, m in APOSTROPHES,
                family[m], family[m] in _QUIET_FAMILIES) for m in family}
    # The scan only locates candidates (stdlib ``re`` is about twice as fast as ``regex`` here);
    # the Unicode-property tests on their neighbours are done per candidate.
    marks = sorted(family, key=lambda m: (-len(m), m))

    def alternative(m: str) -> str:
        # A one-character symmetric mark or apostrophe between two alphanumeric characters
        # (``str.isalnum``, which is what ``[^\W_]`` matches) is part of a word and skipped by the
        # loop of parse_raw anyway; not matching it saves that iteration.  Other word characters
        # (combining marks) still reach the loop, which applies the full rule.
        e = re.escape(m)
        if fast and len(m) == 1 and (m in symmetric or m in APOSTROPHES):
            return rf"{e}(?:(?<![^\W_]{e})|(?![^\W_]))"
        return e

    alternatives = [r"\n[ \t\r\f\v]*\n", r"\n"] + [alternative(m) for m in marks]
    if fast and '"' in symmetric and closes['"'] == {'"'} and all(c == '"' for f in families for o, c in f.pairs
                                                                   if o == '"'):
        # Fast path for the commonest case, a whole straight-double-quote span in one match: opener
        # after whitespace/(/[/start and before a letter or digit, no mark or line break inside, closer
        # after a non-space and before whitespace/end/ASCII punctuation.  Under those conditions the
        # general rules give exactly this span (tests/test_spans.py checks the equivalence).
        inner = "".join(re.escape(c) for c in sorted({c for m in marks for c in m}))
        alternatives.insert(0, r'"(?<![^\s(\[]")(?=[^\W_])[^' + inner + r'\n]*(?<=\S)"(?![^\s.,;:!?)\]])')
    pair_straight = '"' in symmetric and closes['"'] == {'"'}
    return _Table(re.compile("|".join(alternatives)), info, pair_straight)


def resolve_families(families: str | Iterable[str]) -> tuple[DelimiterFamily, ...]:
    """The registered :class:`DelimiterFamily` objects named by ``families`` (unions expanded)."""
    if isinstance(families, str):
        families = (families,)
    if not isinstance(families, Iterable):
        raise InputError(f"families: expected a family name or a list of names, found {families!r}")
    return tuple(get_family(n) for n in _expand(tuple(families)))


@lru_cache(maxsize=256)
def _expand_cached(names: tuple[str, ...]) -> tuple[str, ...]:
    return expand_family_names(names)


def _expand(names: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return _expand_cached(names)
    except TypeError:  # unhashable entries: let expand_family_names report them
        return expand_family_names(names)


#: Word characters for the flanking rules: letters, digits and combining marks (Unicode L, N, M).
#: ``str.isalnum`` answers for most characters; this regex only for the rest above U+02FF.
_MARK = regex.compile(r"[\p{L}\p{N}\p{M}]")


def _wordy(c: str) -> bool:
    return c.isalnum() or (c > "\u02ff" and _MARK.match(c) is not None)


def paired_straight_quotes(text: str) -> dict[int, bool]:
    """Offsets of the straight double quotes that pair in order on their line (see module doc),
    mapped to True for an opener and False for a closer; lines that do not pair cleanly are absent."""
    out: dict[int, bool] = {}
    n = len(text)
    mark = _MARK.match
    find = text.find
    i = find('"')
    while i >= 0:
        line_end = find("\n", i)
        line_end = n if line_end < 0 else line_end
        quotes = []
        ok = True  # every quote so far can take its role (even index: opener, odd: closer)
        while 0 <= i < line_end:
            p = text[i - 1] if i > 0 else ""
            q = text[i + 1] if i + 1 < n else ""
            prev_w = p != "" and (p.isalnum() or (p > "\u02ff" and mark(p) is not None))
            next_w = q != "" and (q.isalnum() or (q > "\u02ff" and mark(q) is not None))
            if not (prev_w and next_w):  # a quote inside a word is never a delimiter
                if prev_w if len(quotes) % 2 == 0 else next_w:
                    ok = False
                quotes.append(i)
            i = find('"', i + 1)
        if ok and quotes and len(quotes) % 2 == 0:
            for k, q_at in enumerate(quotes):
                out[q_at] = k % 2 == 0
        i = find('"', line_end) if line_end < n else -1
    return out


def find_spans(text: str, families: str | Iterable[str] = "all", *, across_lines: bool = False) -> ParseResult:
    """Find the delimited spans of ``text``.

    Args:
        text: the explanation (any Unicode; never raises on content).
        families: family names or unions (``"quotes"``, ``"all"``) from :mod:`nla_probe.text.delimiters`.
            Marks of other families are plain text.
        across_lines: allow spans to cross single line breaks (never a blank line).

    Returns:
        A :class:`ParseResult`; see the module docstring for the rules.
    """
    raw, problems = parse_raw(text, families, across_lines=across_lines)
    return ParseResult(tuple(Span(*t) for t in sorted(raw, key=_outer_first)), problems)


def _outer_first(t: tuple) -> tuple[int, int]:
    return t[0], -t[1]


_TABLES: dict[tuple, _Table] = {}


def _table(families: str | Iterable[str], fast: bool) -> _Table:
    """``_compile(resolve_families(families), fast)``, memoized on the names as given (a str or a
    tuple) and the registry generation: resolving and hashing the families costs ~4 µs a call."""
    key = (families, fast, _delimiters.REGISTRY_GENERATION) if isinstance(families, (str, tuple)) else None
    if key is not None:
        try:
            hit = _TABLES.get(key)
        except TypeError:  # unhashable entries: resolve_families reports them
            key, hit = None, None
        if hit is not None:
            return hit
    table = _compile(resolve_families(families), fast)
    if key is not None:
        if len(_TABLES) > 256:
            _TABLES.clear()
        _TABLES[key] = table
    return table


def parse_raw(text: str, families: str | Iterable[str] = "all", *, across_lines: bool = False,
              _fast: bool = True) -> tuple[list[tuple], tuple[Problem, ...]]:
    """The parser behind :func:`find_spans`, without building :class:`Span` objects.

    Returns:
        ``(spans, problems)``: ``spans`` is a list of tuples ``(start, end, inner_start, inner_end,
        family, open, close, depth)`` in the order the spans CLOSE, so the depth-0 spans appear in
        text order; ``problems`` as in :class:`ParseResult`.
    """
    if not isinstance(text, str):
        raise InputError(f"find_spans: text must be a str, found {type(text).__name__}")
    table = _table(families, _fast)
    info, pattern = table.info, table.pattern
    # The pairing pre-pass is needed only for a straight double quote the fast path did not take;
    # it depends on the text alone, so it runs at the first such quote (most texts never need it).
    pair_straight = table.pair_straight
    paired: dict[int, bool] | None = None
    stack: list[tuple[str, int, int]] = []  # (mark, start, end)
    found: list[tuple] = []
    problems: list[Problem] = []
    redo_depth = False
    n = len(text)
    mark_re = _MARK.match

    for m in pattern.finditer(text):
        tok = m.group()
        i, j = m.span()
        if tok[0] == '"' and len(tok) > 2 and tok not in info:  # fast path: a whole "..." span
            found.append((i, j, i + 1, j - 1, info['"'][4], '"', '"', len(stack)))
            continue
        if tok[0] == "\n":
            if stack and (not across_lines or len(tok) > 1):
                redo_depth = redo_depth or bool(found and found[-1][0] > stack[0][1])
                problems.extend(Problem("unterminated", s, e, info[k][4], k) for k, s, e in stack)
                stack.clear()
            continue
        can_open, closers, symmetric, apostrophe, fam, quiet = info[tok]
        can_close = closers is not None
        word_prev = False
        role = None
        if tok == '"' and pair_straight:
            if paired is None:
                paired = paired_straight_quotes(text)
            role = paired.get(i)
        if role is not None:
            can_open, can_close = role, not role
        elif symmetric or apostrophe:
            prev = text[i - 1] if i else " "
            nxt = text[j] if j < n else " "
            word_prev = prev.isalnum() or (prev > "\u02ff" and mark_re(prev) is not None)
            word_next = nxt.isalnum() or (nxt > "\u02ff" and mark_re(nxt) is not None)
            if word_prev and word_next:
                continue  # part of a word: don't, Qwen's, snake_case, don’t
            if symmetric:
                if can_open and (word_prev or nxt.isspace()):
                    can_open = False
                if can_close and (word_next or prev.isspace()):
                    can_close = False
        if can_close and stack:
            k = len(stack) - 1
            while k >= 0 and stack[k][0] not in closers:
                k -= 1
            if k >= 0:
                if k < len(stack) - 1:
                    dropped = stack[k + 1:]
                    redo_depth = redo_depth or bool(found and found[-1][0] > dropped[0][1])
                    problems.extend(Problem("unterminated", s, e, info[mk][4], mk) for mk, s, e in dropped)
                mark, s, e = stack[k]
                del stack[k:]
                found.append((s, j, e, i, info[mark][4], mark, tok, k))
                continue
        if can_open:
            stack.append((tok, i, j))
        elif apostrophe and word_prev:
            continue  # students' / students’ with nothing to close: an apostrophe
        elif can_close:
            problems.append(Problem("unmatched_close", i, j, fam, tok))
        elif not quiet:
            problems.append(Problem("stray", i, j, fam, tok))
    if stack:
        redo_depth = redo_depth or bool(found and found[-1][0] > stack[0][1])
        problems.extend(Problem("unterminated", s, e, info[k][4], k) for k, s, e in stack)
    if len(problems) > 1:
        problems.sort(key=lambda p: p.start)
    if redo_depth:
        found = _recompute_depth(found)
    return found, tuple(problems)


def _recompute_depth(found: list[tuple]) -> list[tuple]:
    """Depths counted over parsed spans only (after enclosing openers were dropped as unterminated);
    keeps the close order."""
    order = sorted(range(len(found)), key=lambda q: _outer_first(found[q]))
    depth = [0] * len(found)
    ends: list[int] = []
    for q in order:
        while ends and ends[-1] <= found[q][0]:
            ends.pop()
        depth[q] = len(ends)
        ends.append(found[q][1])
    return [(*t[:7], d) for t, d in zip(found, depth)]


def outermost_raw(text: str, families: str | Iterable[str] = "quotes") -> list[tuple]:
    """Depth-0 raw spans of :func:`parse_raw`, in text order."""
    return [t for t in parse_raw(text, families)[0] if t[7] == 0]


#: End of a sentence: a run of terminal punctuation and any closing quotes/brackets, followed by
#: whitespace; line breaks are ends too (found separately: a one-class pattern scans ~2x faster).
_CLOSERS = ("\"')]}\u00bb\u203a\u2019\u201d"
            "\u300d\u300f\u300b\u3009\u3011\u3015\u3017\u3019\u301b\uff09\uff3d\uff5d\uff63")
_TERMINAL = re.compile(r"[.!?\u2026\u3002\uff01\uff1f]+[" + re.escape(_CLOSERS) + r"]*(?=\s)")


def sentence_bounds(text: str, families: str | Iterable[str] = "quotes") -> list[tuple[int, int]]:
    """Sentences of ``text`` as ``(start, end)`` offsets, whitespace between them excluded.

    A sentence ends after a run of ``. ! ? …`` (plus any closing quotes/brackets) that is followed by
    whitespace, or at a line break; an end inside a span of ``families`` (``"He left. Then"``) does
    not count.  Leading and trailing whitespace of each sentence is trimmed; empty sentences are
    dropped, so a text of only whitespace has no sentences.
    """
    n = len(text)
    ends = [m.span() for m in _TERMINAL.finditer(text)]  # the lookahead (?=\s) = followed by str.isspace()
    i = text.find("\n")
    while i >= 0:
        ends.append((i, i))
        i = text.find("\n", i + 1)
    ends.sort()
    spans = outermost_raw(text, families)
    cuts = [0]
    k, n_spans = 0, len(spans)
    for a, b in ends:
        while k < n_spans and spans[k][3] <= a:
            k += 1
        if k < n_spans and spans[k][2] <= a:
            continue  # inside a span's content
        cuts.append(b)
    cuts.append(n)
    out = []
    for a, b in zip(cuts, cuts[1:]):
        seg = text[a:b]
        body = seg.lstrip()
        if body:
            a += len(seg) - len(body)
            out.append((a, a + len(body.rstrip())))
    return out
