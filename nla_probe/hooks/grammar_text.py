"""Texts of the built-in grammars and the scaffold language (regular expressions).

Every built-in grammar describes the explanation **body**, the text between the tags; the
:class:`~nla_probe.hooks.grammar.Grammar` hook wraps a body as ``<explanation>\\n?BODY\\n?</explanation>``
(:func:`wrap_body`), after which only a stop token is allowed.

Pieces (regular expressions in the syntax xgrammar reads, a subset of Python's ``re``):

* ``SPAN = "[^"\\n<]+"`` — one double-quoted span: at least one character, none of them a double
  quote, a newline or ``<`` (so a span can neither run across paragraphs nor write the closing tag);
* ``SEP = [ \\n,.;:!?–—-]{1,4}`` — a separator: one to four spaces, newlines or punctuation marks;
* ``SPANS = SPAN(SEP SPAN)*SEP?`` — spans separated by separators, optionally ending in one.

Built-ins:

==================  =====================================================================================
name                body
==================  =====================================================================================
``spans_only``      ``SPANS``: nothing but quoted spans between the tags.
``scaffold_spans``  a scaffold (below) whose slots are filled with quoted spans only: the frame's words
                    are forced, free text exists only inside quotes.
``no_delimiters``   ``[^D<]*`` with ``D`` every character of every registered delimiter family
                    (:func:`nla_probe.text.delimiters.resolve_chars` of ``"all"``): the structural
                    equivalent of banning every delimiter family.
==================  =====================================================================================

**Scaffold language.** A scaffold is the explanation body as text with slots:

* ``"…"`` (U+2026 between straight double quotes) — exactly one quoted span ``SPAN``;
* ``…`` elsewhere — a run of spans ``SPANS``;
* ``{a|b|…}`` — one of the literal alternatives (``{signals|establishes}``);
* anything else — literal text, written exactly (newlines included).

Registered scaffolds (:data:`SCAFFOLDS`): ``released`` — the frame of the released explanations
(a first paragraph on the kind of text, a second ``The phrase "…" signals/establishes …``, a
third ``Final token "…" opens …, immediately expecting … — likely "…" or "…".``); ``toy`` — the
frame of the toy pair's labels (``Token "…" after "…".`` then two paragraphs).
"""

from __future__ import annotations

import re

from nla_probe.errors import InputError, UnknownNameError

ELLIPSIS = "\u2026"
SPAN = r'"[^"\n<]+"'
SEP = r"[ \n,.;:!?\u2013\u2014-]{1,4}"
SPANS = f"{SPAN}({SEP}{SPAN})*({SEP})?"
OPEN_BODY, CLOSE_BODY = r"<explanation>\n?", r"\n?</explanation>"

SCAFFOLDS: dict[str, str] = {
    "released": (f"{ELLIPSIS}\n\n"
                 f'The phrase "{ELLIPSIS}" {{signals|establishes}} {ELLIPSIS}\n\n'
                 f'Final token "{ELLIPSIS}" opens {ELLIPSIS}, immediately expecting {ELLIPSIS} \u2014 likely '
                 f'"{ELLIPSIS}" or "{ELLIPSIS}".'),
    "toy": f'Token "{ELLIPSIS}" after "{ELLIPSIS}".\n\n{ELLIPSIS}\n\n{ELLIPSIS}',
}
BUILTINS = ("spans_only", "scaffold_spans", "no_delimiters")
_SLOT = re.compile(r'"\u2026"|\u2026|\{([^{}|]*(?:\|[^{}|]*)+)\}')
_REGEX_SPECIAL = set("\\.^$|?*+()[]{}/")


def regex_escape(text: str) -> str:
    """``text`` as a regex matching it literally (metacharacters and ``/`` escaped, newline as ``\\n``)."""
    out = []
    for ch in text:
        if ch in _REGEX_SPECIAL:
            out.append("\\" + ch)
        elif ch == "\n":
            out.append(r"\n")
        elif ch == "\t":
            out.append(r"\t")
        else:
            out.append(ch)
    return "".join(out)


def resolve_scaffold(scaffold: str) -> str:
    """The scaffold text for a registered name or a literal scaffold (which must hold a slot)."""
    if isinstance(scaffold, str) and scaffold in SCAFFOLDS:
        return SCAFFOLDS[scaffold]
    if not isinstance(scaffold, str) or ELLIPSIS not in scaffold:
        raise InputError(f"grammar.scaffold: expected a registered scaffold ({', '.join(SCAFFOLDS)}) or a scaffold "
                         f"text with at least one slot ('{ELLIPSIS}'), found {scaffold!r}")
    return scaffold


def scaffold_regex(scaffold: str) -> str:
    """The body regex of a scaffold (see module doc)."""
    text = resolve_scaffold(scaffold)
    out, pos = [], 0
    for m in _SLOT.finditer(text):
        out.append(regex_escape(text[pos:m.start()]))
        if m.group(0) == f'"{ELLIPSIS}"':
            out.append(SPAN)
        elif m.group(0) == ELLIPSIS:
            out.append(f"({SPANS})")
        else:
            out.append("(" + "|".join(regex_escape(a) for a in m.group(1).split("|")) + ")")
        pos = m.end()
    out.append(regex_escape(text[pos:]))
    return "".join(out)


def scaffold_opening(scaffold: str) -> str:
    """The scaffold's fixed opening: its text before the first slot (the prefix of an unforced run).

    A quoted-span slot keeps its opening quote (``Token "…"`` gives ``Token "``).
    """
    text = resolve_scaffold(scaffold)
    m = _SLOT.search(text)
    if m is None:
        return text
    head = text[:m.start()]
    return head + '"' if m.group(0).startswith('"') else head


def no_delimiters_regex() -> str:
    """``[^D<]*`` with ``D`` every registered delimiter character (see module doc)."""
    from nla_probe.text.delimiters import resolve_chars

    chars = sorted(resolve_chars(("all",), "") | {"<"})
    return "[^" + "".join(("\\" + c) if c in "\\]^-[" else c for c in chars) + "]*"


def builtin_body(name: str, scaffold: str = "released") -> str:
    """The body regex of a built-in grammar; raises :class:`UnknownNameError` listing the valid names."""
    if name == "spans_only":
        return SPANS
    if name == "scaffold_spans":
        return scaffold_regex(scaffold)
    if name == "no_delimiters":
        return no_delimiters_regex()
    raise UnknownNameError("built-in grammar", name, BUILTINS)


def wrap_body(body_regex: str) -> str:
    """``<explanation>\\n?(BODY)\\n?</explanation>`` as one regex."""
    return f"{OPEN_BODY}({body_regex}){CLOSE_BODY}"
