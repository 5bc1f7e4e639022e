"""The toy labeler: exact wording, quote-style mix, genre and token-kind rules."""

import collections

from nla_probe.text.spans import find_spans
from nla_probe.toy.labeler import QUOTE_STYLES, guess_genre, label, position_phrase, token_kind


def _style_of(expl: str) -> str:
    first = expl.split("\n")[1]
    for name, open_q, _ in QUOTE_STYLES:
        if first.startswith(f"Token {open_q}"):
            return name
    return "none"


def test_label_has_three_paragraphs_inside_tags():
    toks = ["Birds", " were", " sing", "ing"]
    out = label(toks)
    assert out.startswith("<explanation>\n") and out.endswith("\n</explanation>")
    body = out[len("<explanation>\n"):-len("\n</explanation>")]
    paras = body.split("\n\n")
    assert len(paras) == 3
    q = {"double": '"', "single": "'", "paren": "("}[_style_of(out)]
    close = ")" if q == "(" else q
    assert paras[0] == f"Token {q}ing{close} after {q}were sing{close}."
    assert paras[1] == "Plain example sentences, at the very start."
    assert paras[2] == "A word piece, mid-word."


def test_label_first_token_and_whitespace_token():
    assert "first in the text." in label(["Hello"])
    assert label(["a", " "]).split("\n")[1].startswith("A whitespace token after ")


def test_quote_style_mix_is_mostly_double():
    counts = collections.Counter(_style_of(label(["The", f" w{i}"])) for i in range(2000))
    assert counts["none"] == 0
    assert 0.64 < counts["double"] / 2000 < 0.76
    assert 0.10 < counts["single"] / 2000 < 0.20
    assert 0.10 < counts["paren"] / 2000 < 0.20


def test_every_label_has_a_delimited_span():
    for i in range(50):
        assert find_spans(label(["x", f" y{i}", "z"]), "all").spans


def test_guess_genre_from_prefix():
    assert guess_genre("ABSURDITY, n.  A statement") == "devil"
    assert guess_genre("kludge: n. A clever") == "jargon"
    assert guess_genre("He is every bit as mean as she is.") == "wordnet"
    assert guess_genre("ABS") == "wordnet"  # heading not visible yet


def test_token_kind_and_position_buckets():
    assert token_kind("\n", "a") == "A line break."
    assert token_kind(" 12", "a") == "A number."
    assert token_kind(".", "a") == "Punctuation, ending a sentence."
    assert token_kind(",", "a") == "Punctuation."
    assert token_kind(" The", "a") == "A capitalised word start."
    assert token_kind("ing", "sing") == "A word piece, mid-word."
    assert [position_phrase(i) for i in (0, 3, 4, 23, 24, 63, 64)] == [
        "at the very start", "at the very start", "early in the text", "early in the text",
        "in the middle of the text", "in the middle of the text", "late in the text"]
