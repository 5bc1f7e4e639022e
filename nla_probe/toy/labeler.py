"""Deterministic gold explanations for the toy NLA, written from the text prefix only.

An explanation describes the activation at the last token of a prefix. It is centred on what
the layer-K vector of a tiny LM carries -- the current token and the one or two tokens
before it -- plus a short line on genre and position, in three short paragraphs:

1. The quoted current token and the quoted tokens before it. Quote style is drawn
   deterministically from a hash of the prefix: double quotes (70%), single quotes (15%)
   or parentheses (15%), so a quote ban leaves other delimiters to fall back on.
2. Genre and position (prose; the genre is read off the prefix, see :func:`guess_genre`).
3. What kind of token it is (word start, word piece, punctuation, number, line break).

Example (double-quote style)::

    <explanation>
    Token "ing" after "birds were sing".

    A satirical definition, early in the text.

    A word piece, mid-word.
    </explanation>

Positions are counted in tokens (0-based index of the current token in its document).
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

QUOTE_STYLES: tuple[tuple[str, str, str], ...] = (
    ("double", '"', '"'), ("single", "'", "'"), ("paren", "(", ")"))
#: Cumulative thresholds (out of 100) for the quote styles above.
QUOTE_CUTS = (70, 85, 100)

GENRE_PHRASES = {
    "devil": "A satirical definition",
    "jargon": "A hacker lexicon entry",
    "wordnet": "Plain example sentences",
}

_DEVIL_HEAD = re.compile(r"^[A-Z][A-Z' .-]*, (n|v|adj|adv|pp|pron|prep|x|interj|conj)\b")
_JARGON_HEAD = re.compile(r"^[^\s:][^:\n]{0,40}: ")


def guess_genre(prefix: str) -> str:
    """Genre of a document from its opening characters (``devil``, ``jargon`` or ``wordnet``).

    Devil's Dictionary entries open with an upper-case headword and a part of speech
    (``"ABSURDITY, n."``); Jargon File entries with ``"headword: "``; anything else is read as
    WordNet example sentences. With fewer than a few characters, a heading cannot be seen yet
    and the answer falls back to ``wordnet``.
    """
    if _DEVIL_HEAD.match(prefix):
        return "devil"
    if _JARGON_HEAD.match(prefix):
        return "jargon"
    return "wordnet"


def position_phrase(index: int) -> str:
    """Prose bucket of a 0-based token index: start (< 4), early (< 24), middle (< 64), late."""
    if index < 4:
        return "at the very start"
    if index < 24:
        return "early in the text"
    if index < 64:
        return "in the middle of the text"
    return "late in the text"


def token_kind(current: str, previous: str) -> str:
    """Short prose for the kind of the current token (given its raw text and the previous one)."""
    if "\n" in current:
        return "A line break."
    s = current.strip()
    if not s:
        return "A space."
    if s.isdigit():
        return "A number."
    if not any(c.isalnum() for c in s):
        if any(c in ".!?" for c in s):
            return "Punctuation, ending a sentence."
        return "Punctuation."
    starts_word = current[:1].isspace() or not previous or not previous[-1:].isalnum()
    if starts_word:
        return "A capitalised word start." if s[:1].isupper() else "A word start."
    return "A word piece, mid-word."


def _shown(tok: str) -> str:
    """A token as shown inside quotes: surrounding whitespace stripped, newlines as spaces."""
    return " ".join(tok.split())


def _style(tokens: Sequence[str]) -> tuple[str, str, str]:
    h = hashlib.sha256("\x00".join(tokens).encode("utf-8")).digest()[0] * 100 // 256
    for style, cut in zip(QUOTE_STYLES, QUOTE_CUTS):
        if h < cut:
            return style
    return QUOTE_STYLES[0]


def label(tokens: Sequence[str], n_before: int = 2) -> str:
    """The gold explanation for the last token of a prefix.

    Args:
        tokens: The prefix as decoded token strings (their concatenation is the prefix
            text); the last one is the current token. Must be non-empty.
        n_before: How many tokens before the current one are quoted (fewer at the start).

    Returns:
        ``"<explanation>\\n" + three paragraphs + "\\n</explanation>"``.
    """
    if not tokens:
        raise ValueError("label: expected at least one token, found none")
    _, open_q, close_q = _style(tokens)
    cur = _shown(tokens[-1])
    before = _shown("".join(tokens[-1 - n_before:-1]))
    if cur:
        first = f"Token {open_q}{cur}{close_q}"
    else:
        first = "A whitespace token"
    if before:
        first += f" after {open_q}{before}{close_q}."
    else:
        first += ", first in the text."
    genre = GENRE_PHRASES[guess_genre("".join(tokens))]
    second = f"{genre}, {position_phrase(len(tokens) - 1)}."
    third = token_kind(tokens[-1], tokens[-2] if len(tokens) > 1 else "")
    return f"<explanation>\n{first}\n\n{second}\n\n{third}\n</explanation>"


def scaffold_texts() -> list[str]:
    """Every fixed phrase the labeler writes (for tokenizer training, so they encode short)."""
    out = ["<explanation>\nToken \"x\" after \"y z\".\n\n", "\n</explanation>",
           "Token 'x' after 'y'.", "Token (x) after (y).", ", first in the text.",
           "A whitespace token"]
    for g in GENRE_PHRASES.values():
        for i in (0, 10, 40, 90):
            out.append(f"{g}, {position_phrase(i)}.")
    for cur, prev in (("\n", "a"), (" ", "a"), ("12", "a"), (".", "a"), (",", "a"),
                      (" The", "a"), (" the", "a"), ("ing", "s")):
        out.append(token_kind(cur, prev))
    return out
