"""Span parser: delimiter families, nesting, apostrophes, problems, lines, and properties."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nla_probe.errors import InputError, UnknownNameError
from nla_probe.text import spans as spans_mod
from nla_probe.text.spans import Problem, Span, find_spans, paired_straight_quotes, parse_raw, sentence_bounds

# In the style of the released Qwen-7B L20 worked examples (paragraphs separated by blank lines).
RELEASED_STYLE = (
    'Structured text with formal description format ("A poem named \'Happy\' by Alibaba Cloud"), implying '
    "a model or chat interface context.\n\n"
    'The phrase "This character is a large language model created by Alibaba Cloud" signals a closing '
    "attribution clause, likely completing a company's branding.\n\n"
    'Final token "Cloud" ends an incomplete attribution phrase ("created by Alibaba Cloud"), part of the '
    "authors' parenthetical clause, strongly expecting \".\" or \"Inc\" or similar."
)


def spans_as(text, families="all", **kw):
    return [(s.text(text), s.family, s.depth) for s in find_spans(text, families, **kw).spans]


def test_nested_quotes_offsets_and_depth():
    text = "\"he said 'no'\" ok"
    r = find_spans(text)
    assert r.spans == (
        Span(0, 14, 1, 13, "double_quotes", '"', '"', 0),
        Span(9, 13, 10, 12, "single_quotes", "'", "'", 1),
    )
    assert r.problems == ()
    assert r.outermost() == (r.spans[0],)
    assert r.spans[0].inner(text) == "he said 'no'"
    assert r.span_chars() == 14


@pytest.mark.parametrize("text", ["don't", "Qwen's model", "the students' books", "don\u2019t",
                                  "the students\u2019 books", "5'11 tall", "it's the users' turn"])
def test_apostrophes_are_not_quotes(text):
    r = find_spans(text)
    assert r.spans == ()
    assert r.problems == ()


def test_apostrophe_inside_double_quotes_and_closing_single_quote():
    text = "\"The authors' text,\" and 'Qwen's' model"
    assert spans_as(text) == [("\"The authors' text,\"", "double_quotes", 0), ("'Qwen's'", "single_quotes", 0)]


def test_unterminated_quote_is_reported_and_does_not_swallow():
    text = 'Final token "Kwen ends here. And "ok" done'
    r = find_spans(text)
    assert [(s.start, s.end) for s in r.spans] == [(33, 37)]
    assert r.problems == (Problem("unterminated", 12, 13, "double_quotes", '"'),)


def test_unterminated_quote_stops_at_line_break():
    text = 'a "b c\nthen "d" e'
    r = find_spans(text)
    assert [s.text(text) for s in r.spans] == ['"d"']
    assert [(p.kind, p.start) for p in r.problems] == [("unterminated", 2)]


def test_across_lines_crosses_single_breaks_but_not_blank_lines():
    assert spans_as('"a\nb"', "quotes", across_lines=True) == [('"a\nb"', "double_quotes", 0)]
    assert spans_as('"a\nb"', "quotes") == []
    r = find_spans('"a\n\nb"', "quotes", across_lines=True)
    assert r.spans == ()
    assert [p.kind for p in r.problems] == ["unterminated", "unmatched_close"]


def test_crossing_delimiters_report_both_sides():
    text = '(see "x) y"'
    r = find_spans(text)
    assert [s.text(text) for s in r.spans] == ['(see "x)']
    assert [(p.kind, p.start, p.family) for p in r.problems] == [
        ("unterminated", 5, "double_quotes"), ("unmatched_close", 10, "double_quotes")]


def test_unmatched_close_and_stray():
    r = find_spans("a \u201d b \" c")
    assert [(p.kind, p.start, p.mark) for p in r.problems] == [("unmatched_close", 2, "\u201d"), ("stray", 6, '"')]


def test_typographic_and_other_families():
    text = "\u201ccurly\u201d \u2018single\u2019 \u201egerman\u201c \u00abfr\u00bb \u300cja\u300d (p) [b] **bold** _it_"
    got = spans_as(text)
    assert got == [("\u201ccurly\u201d", "double_quotes", 0), ("\u2018single\u2019", "single_quotes", 0),
                   ("\u201egerman\u201c", "double_quotes", 0), ("\u00abfr\u00bb", "guillemets", 0),
                   ("\u300cja\u300d", "corner_brackets", 0), ("(p)", "parentheses", 0),
                   ("[b]", "square_brackets", 0), ("**bold**", "emphasis", 0), ("_it_", "emphasis", 0)]


def test_emphasis_marks_inside_words_and_bullets_are_text():
    r = find_spans("snake_case and 2*3*4\n* bullet item\n- a * b")
    assert r.spans == ()
    assert r.problems == ()


def test_families_restrict_what_is_parsed():
    text = "(\"a\" 'b')"
    assert spans_as(text, "double_quotes") == [('"a"', "double_quotes", 0)]
    assert spans_as(text, "quotes") == [('"a"', "double_quotes", 0), ("'b'", "single_quotes", 0)]
    assert [d for _, _, d in spans_as(text, "all")] == [0, 1, 1]


def test_released_style_multiline_explanation():
    r = find_spans(RELEASED_STYLE, "quotes")
    outer = [s.text(RELEASED_STYLE) for s in r.outermost()]
    assert outer == ["\"A poem named 'Happy' by Alibaba Cloud\"",
                     '"This character is a large language model created by Alibaba Cloud"',
                     '"Cloud"', '"created by Alibaba Cloud"', '"."', '"Inc"']
    assert [s.text(RELEASED_STYLE) for s in r.spans if s.depth == 1] == ["'Happy'"]
    assert r.problems == ()


def test_errors():
    with pytest.raises(UnknownNameError, match="double_quotes"):
        find_spans("x", "dubble_quotes")
    with pytest.raises(InputError, match="str"):
        find_spans(b"x")  # type: ignore[arg-type]


def test_reregistered_family_is_parsed_with_its_new_marks():
    from nla_probe.text import delimiters
    from nla_probe.text.delimiters import DelimiterFamily, register_family

    try:
        register_family(DelimiterFamily("test_marks", "<>", (("<", ">"),)))
        assert [(s.start, s.end) for s in find_spans("a <b> [c]", "test_marks").spans] == [(2, 5)]
        register_family(DelimiterFamily("test_marks", "[]", (("[", "]"),)), overwrite=True)
        assert [(s.start, s.end) for s in find_spans("a <b> [c]", "test_marks").spans] == [(6, 9)]
    finally:
        delimiters._REGISTRY.pop("test_marks", None)


def test_sentence_end_needs_any_whitespace_after_it():
    text = "A.\u2003B. C.x D"
    assert sentence_bounds(text) == [(0, 2), (3, 5), (6, 11)]  # em space ends "A."; ".x" is no end


def test_apostrophes_inside_words_are_not_marks():
    text = "it's 'the model's' \u2018don\u2019t\u2019"
    got = [(text[s.start:s.end], s.depth) for s in find_spans(text, "quotes").spans]
    assert got == [("'the model's'", 0), ("\u2018don\u2019t\u2019", 0)]
    assert find_spans(text, "quotes").problems == ()


def test_sentence_bounds_ignore_ends_inside_quotes():
    text = 'The phrase "I am Qwen. I belong." suggests more. Final token here!\n\nNext (a. b) x.'
    got = [text[a:b] for a, b in sentence_bounds(text)]
    assert got == ['The phrase "I am Qwen. I belong." suggests more.', "Final token here!", "Next (a.", "b) x."]
    assert sentence_bounds("   ") == []


# Straight double quotes around tokens quoted verbatim, leading space included (NLA explanations).
VERBATIM = [
    ('Final token " " opens a new clause.', [" "]),
    ('The marker " **" starts bold text.', [" **"]),
    ('A bullet " * " begins the item.', [" * "]),
    ('It ends with " (the AI model)." here.', [" (the AI model)."]),
    ('Then " : the famous Eiffel Tower" follows.', [" : the famous Eiffel Tower"]),
    ('Token " the" after " of" in a list.', [" the", " of"]),
    ('"Cloud" then " Inc" then "." closes.', ["Cloud", " Inc", "."]),
]


@pytest.mark.parametrize("text, inners", VERBATIM)
def test_verbatim_quotes_with_leading_space_pair_in_order(text, inners):
    r = find_spans(text, "quotes")
    assert [s.inner(text) for s in r.spans if s.family == "double_quotes"] == inners
    assert r.problems == ()


def test_verbatim_quote_holding_brackets_nests_them():
    text = 'It ends with " (the AI model)." here.'
    assert spans_as(text) == [('" (the AI model)."', "double_quotes", 0), ("(the AI model)", "parentheses", 1)]


def test_prose_only_drops_verbatim_quotes():
    from nla_probe.surgery.functional import prose_only

    for text, _ in VERBATIM:
        assert '"' not in prose_only(text), text


@pytest.mark.parametrize("text", [
    'Token " and then "word',        # three quotes: odd count
    'He said "hi"there " ok "',      # the 2nd quote is glued to a word on its right
    'a 5"11 tall "b" c',             # a quote inside a word is not counted; the rest pair
])
def test_lines_that_do_not_pair_cleanly_keep_the_flanking_rules(text):
    paired = paired_straight_quotes(text)
    flanking = _without_pairing(text)
    if not paired:
        assert find_spans(text, "quotes") == flanking
    else:
        assert [s.inner(text) for s in find_spans(text, "quotes").spans] == ["b"]


def _without_pairing(text, families="quotes"):
    from unittest import mock

    with mock.patch.object(spans_mod, "paired_straight_quotes", lambda t: {}):
        return find_spans(text, families)


def test_pairing_is_per_line():
    text = 'one " a" two\nthree "b" and " c'
    r = find_spans(text, "quotes")
    assert paired_straight_quotes(text) == {4: True, 7: False}  # the second line has three quotes
    assert [s.inner(text) for s in r.spans] == [" a", "b"]  # "b" by the flanking rules
    assert [(p.kind, p.start) for p in r.problems] == [("stray", 27)]


MARKS = list("\"'`*_()[]\u201c\u201d\u2018\u2019\u201e\u00ab\u00bb\u300c\u300d\uff02") + ["**", "__"]
ALPHABET = st.sampled_from(MARKS + list("ab  .,\n\u0301\u00e9") + ["don't", "x\u2019s "])


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_unicode_parses_with_consistent_offsets(text):
    for across in (False, True):
        r = find_spans(text, "all", across_lines=across)
        for s in r.spans:
            assert text[s.start:s.inner_start] == s.open
            assert text[s.inner_end:s.end] == s.close
            assert s.start < s.inner_start <= s.inner_end < s.end
            if not across:
                assert "\n" not in text[s.start:s.end]
        for p in r.problems:
            assert text[p.start:p.end] == p.mark


@settings(max_examples=400, deadline=None)
@given(st.lists(ALPHABET, max_size=40).map("".join))
def test_spans_nest_without_crossing_and_depth_counts_enclosers(text):
    r = find_spans(text, "all")
    spans = r.spans
    assert list(spans) == sorted(spans, key=lambda s: (s.start, -s.end))
    for s in spans:
        enclosers = [o for o in spans if o is not s and o.start <= s.start and s.end <= o.end]
        assert s.depth == len(enclosers)
        for o in spans:
            assert not (o.start < s.start < o.end < s.end), "spans cross"
    outer = r.outermost()
    assert all(a.end <= b.start for a, b in zip(outer, outer[1:]))


@settings(max_examples=600, deadline=None)
@given(st.lists(ALPHABET, max_size=40).map("".join), st.sampled_from(["quotes", "all", "double_quotes"]))
def test_fast_path_matches_general_rules(text, families):
    assert parse_raw(text, families) == parse_raw(text, families, _fast=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(MARKS + list("ab  .!?\n") + ["Yes. ", "No! ", "\u2026 "]), max_size=40).map("".join))
def test_sentences_are_ordered_trimmed_and_never_split_a_quote(text):
    bounds = sentence_bounds(text)
    assert all(a < b for a, b in bounds)
    assert all(b1 < a2 for (_, b1), (a2, _) in zip(bounds, bounds[1:]))
    for a, b in bounds:
        assert text[a:b] == text[a:b].strip()
    for s in find_spans(text, "quotes").outermost():
        inside = [(a, b) for a, b in bounds if a < s.inner_end and s.inner_start < b]
        assert len(inside) <= 1


_NOT_QUOTE = st.text(st.characters(blacklist_characters='"\n', blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=400, deadline=None)
@given(_NOT_QUOTE, _NOT_QUOTE, _NOT_QUOTE)
def test_one_clean_pair_on_a_line_is_found_whatever_its_content(prefix, content, suffix):
    """A line with exactly two straight quotes, the first not after a letter/digit and the second not
    before one, gives one double-quote span holding exactly the content (leading space included)."""
    if prefix and spans_mod._wordy(prefix[-1]) or suffix and spans_mod._wordy(suffix[0]):
        return
    text = prefix + '"' + content + '"' + suffix
    dq = [s for s in find_spans(text, "double_quotes").spans if s.family == "double_quotes"]
    assert [(s.start, s.inner(text)) for s in dq] == [(len(prefix), content)]


@settings(max_examples=400, deadline=None)
@given(st.lists(ALPHABET, max_size=40).map("".join))
def test_without_clean_pairs_the_result_is_the_flanking_rules(text):
    if not paired_straight_quotes(text):
        assert find_spans(text, "all") == _without_pairing(text, "all")
