"""Static checks of a grammar before any decode: can it end, and can it end without banned characters?

Works on the normalised EBNF that xgrammar prints for every grammar it builds (``str(Grammar)``:
one rule per line, ``name ::= expr``; literals ``"..."``, classes ``[...]``/``[^...]``, rule
references, groups, ``*``/``+``/``?``/``{m, n}`` (``n = -1``: unbounded) and lookahead ``(=...)``),
whatever the source format (regex, EBNF, Lark, JSON schema).

:func:`shortest_text` computes, for a set of forbidden characters, the shortest text (fewest
characters) the grammar accepts that contains none of them, by a fixpoint over the rules: the
cost of a literal is its length (infinite when it holds a forbidden character), of a class 1 when
it admits an allowed character, of a sequence the sum, of a choice the minimum, of ``x{m, n}``
``m`` times the cost of ``x``.  Lookahead assertions are ignored (they consume nothing), so the
answer is exact for grammars without lookahead and a lower bound on the set of texts otherwise
(a grammar judged satisfiable may still have no text; decoding then ends the row with
``finish_reason="grammar_dead_end"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

#: A character picked for a class, in order of preference (readable witnesses).
_PREFERRED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,"
_ESC = {"n": "\n", "r": "\r", "t": "\t", "v": "\v", "f": "\f", "b": "\b", "0": "\0", "a": "\a", "e": "\x1b"}


class GrammarParseError(ValueError):
    """The printed EBNF uses a construct this checker does not read (the checks are then skipped)."""


@dataclass(frozen=True)
class _Lit:
    text: str


@dataclass(frozen=True)
class _Class:
    ranges: tuple[tuple[int, int], ...]
    negated: bool

    def admits(self, c: int) -> bool:
        return any(lo <= c <= hi for lo, hi in self.ranges) != self.negated

    def pick(self, forbidden: frozenset[str]) -> str | None:
        """An admitted character not in ``forbidden`` (a readable one when possible), else None."""
        for ch in _PREFERRED:
            if self.admits(ord(ch)) and ch not in forbidden:
                return ch
        if self.negated:
            starts = sorted({0} | {hi + 1 for _, hi in self.ranges if hi < 0x10FFFF})
        else:
            starts = sorted(lo for lo, _ in self.ranges)
        for c in starts:  # each run of admitted characters holds at most len(forbidden) forbidden ones
            while c <= 0x10FFFF and self.admits(c):
                if not 0xD800 <= c <= 0xDFFF and chr(c) not in forbidden:
                    return chr(c)
                c += 1
        return None


@dataclass(frozen=True)
class _Ref:
    name: str


@dataclass(frozen=True)
class _Seq:
    items: tuple


@dataclass(frozen=True)
class _Alt:
    options: tuple


@dataclass(frozen=True)
class _Rep:
    item: object
    lo: int


@dataclass(frozen=True)
class _Look:
    pass


class _Parser:
    def __init__(self, text: str):
        self.s, self.i = text, 0

    def error(self, what: str) -> GrammarParseError:
        return GrammarParseError(f"{what} at column {self.i + 1} of {self.s[:120]!r}")

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def peek(self) -> str:
        self.ws()
        return self.s[self.i] if self.i < len(self.s) else ""

    def escape(self) -> str:
        self.i += 1  # the backslash
        c = self.s[self.i]
        self.i += 1
        if c in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[c]
            hexd = self.s[self.i:self.i + n]
            if not re.fullmatch(r"[0-9a-fA-F]+", hexd or "-"):
                raise self.error(f"bad \\{c} escape")
            self.i += n
            return chr(int(hexd, 16))
        return _ESC.get(c, c)

    def literal(self) -> _Lit:
        self.i += 1
        out = []
        while self.i < len(self.s) and self.s[self.i] != '"':
            out.append(self.escape() if self.s[self.i] == "\\" else self._take())
        if self.i >= len(self.s):
            raise self.error("unterminated literal")
        self.i += 1
        return _Lit("".join(out))

    def char_class(self) -> _Class:
        self.i += 1
        negated = self.s[self.i] == "^"
        if negated:
            self.i += 1
        ranges = []
        while self.i < len(self.s) and self.s[self.i] != "]":
            lo = self.escape() if self.s[self.i] == "\\" else self._take()
            hi = lo
            if self.s[self.i] == "-" and self.s[self.i + 1] != "]":
                self.i += 1
                hi = self.escape() if self.s[self.i] == "\\" else self._take()
            ranges.append((ord(lo), ord(hi)))
        if self.i >= len(self.s):
            raise self.error("unterminated class")
        self.i += 1
        return _Class(tuple(ranges), negated)

    def _take(self) -> str:
        c = self.s[self.i]
        self.i += 1
        return c

    def atom(self):
        c = self.peek()
        if c == '"':
            return self.literal()
        if c == "[":
            return self.char_class()
        if c == "(":
            self.i += 1
            if self.s[self.i] == "=":
                self.i += 1
                self.alt()
                self._expect(")")
                return _Look()
            inner = self.alt()
            self._expect(")")
            return inner
        m = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*").match(self.s, self.i)
        if not m:
            raise self.error("expected an element")
        self.i = m.end()
        return _Ref(m.group())

    def _expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise self.error(f"expected {ch!r}")
        self.i += 1

    def item(self):
        a = self.atom()
        c = self.s[self.i] if self.i < len(self.s) else ""
        if c and c in "*?":
            self.i += 1
            return _Rep(a, 0)
        if c == "+":
            self.i += 1
            return _Rep(a, 1)
        if c == "{":
            m = re.compile(r"\{\s*(\d+)\s*(?:,\s*(-?\d+)?\s*)?\}").match(self.s, self.i)
            if not m:
                raise self.error("bad repetition")
            self.i = m.end()
            return _Rep(a, int(m.group(1)))
        return a

    def seq(self):
        items = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.item())
        return _Seq(tuple(items))

    def alt(self):
        opts = [self.seq()]
        while self.peek() == "|":
            self.i += 1
            opts.append(self.seq())
        return opts[0] if len(opts) == 1 else _Alt(tuple(opts))


def parse_ebnf(text: str) -> tuple[str, dict[str, object]]:
    """``(root name, {rule: expression})`` of xgrammar's printed EBNF (see module doc)."""
    rules: dict[str, object] = {}
    root = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*::=", line)
        if not m:
            raise GrammarParseError(f"expected 'name ::= ...', found {line[:80]!r}")
        p = _Parser(line)
        p.i = m.end()
        expr = p.alt()
        if p.peek() == "(":  # a trailing lookahead assertion
            p.atom()
        if p.peek():
            raise p.error("unexpected text")
        rules[m.group(1)] = expr
        root = root or m.group(1)
    if "root" in rules:
        root = "root"
    if not rules:
        raise GrammarParseError("no rules")
    return root, rules


def shortest_text(ebnf: str, forbidden: Iterable[str] = ()) -> str | None:
    """The shortest text the grammar accepts with no character of ``forbidden`` (None: there is none).

    Raises:
        GrammarParseError: the printed grammar uses a construct this checker does not read.
    """
    root, rules = parse_ebnf(ebnf)
    bad = frozenset(forbidden)
    best: dict[str, str | None] = dict.fromkeys(rules)

    def ev(e: object) -> str | None:
        if isinstance(e, _Lit):
            return None if any(c in bad for c in e.text) else e.text
        if isinstance(e, _Class):
            return e.pick(bad)
        if isinstance(e, _Ref):
            if e.name not in rules:
                raise GrammarParseError(f"rule {e.name!r} is used but not defined")
            return best[e.name]
        if isinstance(e, _Look):
            return ""
        if isinstance(e, _Seq):
            parts = []
            for it in e.items:
                w = ev(it)
                if w is None:
                    return None
                parts.append(w)
            return "".join(parts)
        if isinstance(e, _Alt):
            ws = [w for w in (ev(o) for o in e.options) if w is not None]
            return min(ws, key=len) if ws else None
        if isinstance(e, _Rep):
            if e.lo == 0:
                return ""
            w = ev(e.item)
            return None if w is None else w * e.lo
        raise GrammarParseError(f"unknown element {e!r}")

    for _ in range(len(rules) + 2):  # values only shrink; an optimal derivation nests each rule once
        changed = False
        for name, expr in rules.items():
            w = ev(expr)
            if w is not None and (best[name] is None or len(w) < len(best[name])):
                best[name], changed = w, True
        if not changed:
            break
    return best[root]
