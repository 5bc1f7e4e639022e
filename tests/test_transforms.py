"""Transforms: definitions on realistic explanations, properties, composition, spec round trips."""

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nla_probe import surgery as T
from nla_probe.errors import InputError, SpecError, UnknownNameError
from nla_probe.surgery.functional import ENGLISH_WORDS, vocab_from_tokenizer
from nla_probe.text.spans import find_spans, sentence_bounds

EX = ("Final token \"Cloud\" ends a phrase (\"created by 'Qwen'\"), the students' choice. Don't \"stop.\n"
      "Next line \u201ccurly\u201d here.")

BUILTIN = ["identity", "spans_only", "spans_only_bare", "prose_only", "strip_delimiters", "replace_delimiters",
           "replace_spans", "delete_spans", "keep_first_tokens", "shuffle_sentences", "callable", "compose"]


def _upper(text: str) -> str:
    return text.upper()


T.register_callable("test-upper", _upper, overwrite=True)


def all_instances():
    """One instance per registered transform (and the variants of the multi-mode ones)."""
    vocab = (" the", "ing", "cat", "x")
    return [
        T.Identity(), T.SpansOnly(), T.SpansOnly("all", sep=""), T.SpansOnlyBare(), T.ProseOnly(),
        T.ProseOnly("all"), T.StripDelimiters(), T.StripDelimiters("all", scope="chars"),
        T.ReplaceDelimiters({"quotes": ["<", ">"], "parentheses": ""}),
        T.ReplaceSpans("redacted"), T.ReplaceSpans("empty"), T.ReplaceSpans("nothing"),
        T.ReplaceSpans("words", seed=3), T.ReplaceSpans("tokens", vocab=vocab, seed=1),
        T.ReplaceSpans("redacted", placeholder="[X]"),
        T.DeleteSpans(indices=(0, -1)), T.DeleteSpans(fraction=0.5, seed=2), T.DeleteSpans(),
        T.KeepFirstTokens(3), T.KeepFirstTokens(7, unit="chars"), T.ShuffleSentences(seed=4),
        T.FromCallable(label="test-upper"), T.SpansOnly() | T.StripDelimiters() | T.KeepFirstTokens(2),
    ]


def test_registry_lists_builtins():
    assert T.list_transforms() == BUILTIN
    assert {type(t).name for t in all_instances()} == set(BUILTIN)
    with pytest.raises(UnknownNameError, match="spans_only"):
        T.get_transform("span_only")


@pytest.mark.parametrize("transform, expected", [
    (T.SpansOnly(), "\"Cloud\" \"created by 'Qwen'\" \u201ccurly\u201d"),
    (T.SpansOnly(sep=" | "), "\"Cloud\" | \"created by 'Qwen'\" | \u201ccurly\u201d"),
    (T.SpansOnlyBare(), "Cloud created by Qwen curly"),
    (T.ProseOnly(), "Final token  ends a phrase (), the students' choice. Don't \"stop.\nNext line  here."),
    (T.StripDelimiters(),
     "Final token Cloud ends a phrase (created by Qwen), the students' choice. Don't stop.\nNext line curly here."),
    (T.StripDelimiters(scope="chars"),
     "Final token Cloud ends a phrase (created by Qwen), the students choice. Dont stop.\nNext line curly here."),
    (T.StripDelimiters("parentheses"),
     "Final token \"Cloud\" ends a phrase \"created by 'Qwen'\", the students' choice. Don't \"stop.\n"
     "Next line \u201ccurly\u201d here."),
    (T.ReplaceDelimiters({"double_quotes": ["\u00ab", "\u00bb"]}),
     "Final token \u00abCloud\u00bb ends a phrase (\u00abcreated by 'Qwen'\u00bb), the students' choice. "
     "Don't \u00abstop.\nNext line \u00abcurly\u00bb here."),
    (T.ReplaceDelimiters({"single_quotes": '"'}),
     "Final token \"Cloud\" ends a phrase (\"created by \"Qwen\"\"), the students' choice. Don't \"stop.\n"
     "Next line \u201ccurly\u201d here."),
    (T.ReplaceSpans(),
     "Final token \"REDACTED\" ends a phrase (\"REDACTED\"), the students' choice. Don't \"stop.\n"
     "Next line \u201cREDACTED\u201d here."),
    (T.ReplaceSpans("empty"),
     "Final token \"\" ends a phrase (\"\"), the students' choice. Don't \"stop.\nNext line \u201c\u201d here."),
    (T.ReplaceSpans("nothing"), "Final token  ends a phrase (), the students' choice. Don't \"stop.\nNext line  here."),
    (T.DeleteSpans(indices=(1,)),
     "Final token \"Cloud\" ends a phrase (), the students' choice. Don't \"stop.\nNext line \u201ccurly\u201d here."),
    (T.DeleteSpans(indices=(-1, 7)),
     "Final token \"Cloud\" ends a phrase (\"created by 'Qwen'\"), the students' choice. Don't \"stop.\n"
     "Next line  here."),
    (T.KeepFirstTokens(3), "Final token \"Cloud\""),
    (T.KeepFirstTokens(0), ""),
    (T.KeepFirstTokens(100), EX),
    (T.KeepFirstTokens(5, unit="chars"), "Final"),
    (T.FromCallable(_upper, label="upper"), EX.upper()),
    (T.SpansOnly() | T.StripDelimiters(), "Cloud created by Qwen curly"),
])
def test_definitions_on_a_realistic_explanation(transform, expected):
    assert transform(EX) == expected
    assert transform.apply([EX, EX]) == [expected, expected]


def test_junk_words_match_word_lengths_and_keep_layout():
    t = T.ReplaceSpans("words", seed=7)
    out = t(EX)
    before = [s.inner(EX) for s in find_spans(EX, "quotes").outermost()]
    after = [s.inner(out) for s in find_spans(out, "quotes").outermost()]
    assert len(after) == len(before) == 3
    for a, b in zip(before, after):
        assert [len(w) for w in a.split(" ")] == [len(w) for w in b.split(" ")]
        assert a != b
        lengths = {len(w) for w in ENGLISH_WORDS}
        assert all(w in ENGLISH_WORDS for w in b.split(" ") if len(w) in lengths)
    assert find_spans(EX, "quotes").problems == find_spans(out, "quotes").problems


def test_junk_tokens_keep_span_structure():
    vocab = (" the", "ing", "cat ", "x")
    out = T.ReplaceSpans("tokens", vocab=vocab, seed=0)(EX)
    before = find_spans(EX, "quotes").outermost()
    after = find_spans(out, "quotes").outermost()
    assert len(after) == len(before)
    for a, b in zip(before, after):
        inner = b.inner(out)
        assert len(inner) >= len(a.inner(EX)) and inner == inner.strip()
        assert set(inner.replace(" ", "")) <= set("theingcatx")


def test_seeded_transforms_are_deterministic_and_seed_dependent():
    for cls_args in [("words",), ("tokens",)]:
        kw = {"vocab": ("ab", "cd", "efg", "h")} if cls_args == ("tokens",) else {}
        a = T.ReplaceSpans(*cls_args, seed=1, **kw)
        assert a(EX) == T.ReplaceSpans(*cls_args, seed=1, **kw)(EX)
        assert a(EX) != T.ReplaceSpans(*cls_args, seed=2, **kw)(EX)
    long = " ".join(f"Sentence number {i} here." for i in range(12))
    assert T.ShuffleSentences(seed=5)(long) == T.ShuffleSentences(seed=5)(long)
    assert T.ShuffleSentences(seed=5)(long) != T.ShuffleSentences(seed=6)(long)
    assert T.ShuffleSentences(seed=5)(long) != long


def test_shuffle_sentences_permutes_whole_sentences():
    text = 'One "a. b" first. Two here!\n\nThree (x) there? Four.'
    out = T.ShuffleSentences(seed=3)(text)
    sents = sorted(text[a:b] for a, b in sentence_bounds(text))
    assert sorted(out[a:b] for a, b in sentence_bounds(out)) == sents
    assert "\n\n" in out and Counter(out) == Counter(text)


def test_delete_fraction_deletes_rounded_share():
    text = " ".join(f'"s{i}"' for i in range(10))
    out = T.DeleteSpans(fraction=0.3, seed=0)(text)
    assert len(find_spans(out, "quotes").spans) == 7


class FakeTokenizer:
    """Characters as tokens; ids 0-2 special."""

    all_special_ids = [0, 1, 2]
    vocab = ["<s>", "</s>", "<pad>", " the", "ing", "a\nb", "\"q", "\ufffd", "x", "  ", "cat", "x"]

    def __len__(self):
        return len(self.vocab)

    def batch_decode(self, ids, **kw):
        return [self.vocab[i[0]] for i in ids]

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        return {"input_ids": list(range(len(text))), "offset_mapping": [(i, i + 1) for i in range(len(text))]}


def test_binding_a_tokenizer():
    assert vocab_from_tokenizer(FakeTokenizer()) == (" the", "ing", "x", "cat")
    unbound = T.ReplaceSpans("tokens")
    with pytest.raises(InputError, match="bind"):
        unbound(EX)
    bound = unbound.bind(tokenizer=FakeTokenizer())
    assert bound.vocab == (" the", "ing", "x", "cat")
    assert bound.to_spec()["vocab"] == [" the", "ing", "x", "cat"]
    keep = T.KeepFirstTokens(4, unit="tokens")
    with pytest.raises(InputError, match="bind"):
        keep(EX)
    assert keep.bind(tokenizer=FakeTokenizer())(EX) == "Fina"
    assert "tokenizer" not in keep.to_spec()
    both = (unbound | keep).bind(tokenizer=FakeTokenizer())
    assert both.steps[0].vocab is not None and both.steps[1].tokenizer is not None
    assert T.SpansOnly().bind(tokenizer=FakeTokenizer()) == T.SpansOnly()


def test_spec_round_trip_for_every_transform():
    for t in all_instances():
        spec = t.to_spec()
        assert spec["version"] == T.SPEC_VERSION and spec["name"] == t.name
        back = T.from_spec(json.loads(json.dumps(spec)))
        assert back == t, spec
        assert back(EX) == t(EX)
        no_version = {k: v for k, v in spec.items() if k != "version"}
        assert T.from_spec(no_version) == t
    assert T.to_spec(T.ReplaceSpans("words", seed=2)) == {
        "version": 1, "name": "replace_spans", "with": "words", "families": ["quotes"], "placeholder": "REDACTED",
        "seed": 2, "vocab": None}


def test_spec_errors_name_what_is_valid():
    with pytest.raises(UnknownNameError, match="prose_only"):
        T.from_spec({"name": "prose"})
    with pytest.raises(SpecError, match="valid keys: \\['families', 'sep'\\]"):
        T.from_spec({"name": "spans_only", "seperator": " "})
    with pytest.raises(SpecError, match="version"):
        T.from_spec({"name": "identity", "version": 99})
    with pytest.raises(SpecError, match="name"):
        T.from_spec({"families": "quotes"})
    with pytest.raises(SpecError, match="with"):
        T.from_spec({"name": "replace_spans", "with": "garbage"})
    with pytest.raises(UnknownNameError, match="callable"):
        T.from_spec({"name": "callable", "label": "never-registered"})
    with pytest.raises(UnknownNameError, match="dubble"):
        T.SpansOnly("dubble_quotes")


@pytest.mark.parametrize("make, match", [
    (lambda: T.ReplaceSpans("empty", placeholder="X"), "placeholder"),
    (lambda: T.ReplaceSpans("redacted", seed=3), "seed"),
    (lambda: T.ReplaceSpans("words", vocab=["a b\nc"]), "line breaks"),
    (lambda: T.DeleteSpans(indices=(1,), fraction=0.5), "not both"),
    (lambda: T.DeleteSpans(fraction=1.5), "fraction"),
    (lambda: T.DeleteSpans(seed=3), "seed"),
    (lambda: T.KeepFirstTokens(-1), ">= 0"),
    (lambda: T.KeepFirstTokens(2, unit="lines"), "unit"),
    (lambda: T.StripDelimiters(scope="everything"), "scope"),
    (lambda: T.ReplaceDelimiters({}), "at least one"),
    (lambda: T.ReplaceDelimiters({"quotes": 3}), "open, close"),
    (lambda: T.Compose([]), "at least one"),
    (lambda: T.Compose([T.Identity(), str.upper]), "FromCallable"),
])
def test_parameters_are_validated(make, match):
    with pytest.raises(InputError, match=match):
        make()


def test_compose_flattens_and_describes():
    a, b, c = T.SpansOnly(), T.StripDelimiters(), T.KeepFirstTokens(2)
    composed = a | b | c
    assert composed == T.Compose([a, b, c]) == (a | (b | c))
    assert composed.steps == (a, b, c)
    assert composed(EX) == c(b(a(EX)))
    assert composed.describe() == "spans_only | strip_delimiters | keep_first_tokens(n=2)"
    assert T.ReplaceSpans("words", seed=2).describe() == "replace_spans(with=words, seed=2)"


def test_from_callable_checks_result_type():
    with pytest.raises(InputError, match="returned int"):
        T.FromCallable(len, label="len")(EX)
    with pytest.raises(InputError, match="already registered"):
        T.register_callable("test-upper", str.lower)


def test_register_transform():
    from dataclasses import dataclass
    from typing import ClassVar

    @dataclass(frozen=True)
    class Reverse(T.Transform):
        name: ClassVar[str] = "test_reverse"

        def __call__(self, text: str) -> str:
            return text[::-1]

    T.register_transform(Reverse)
    try:
        assert "test_reverse" in T.list_transforms()
        assert T.from_spec({"name": "test_reverse"})("abc") == "cba"
        with pytest.raises(InputError, match="already registered"):
            T.register_transform(type("Other", (Reverse,), {}))
    finally:
        T.base._REGISTRY.pop("test_reverse")


# ------------------------------------------------------------------------------------------ properties


@settings(max_examples=300, deadline=None)
@given(st.text(), st.sampled_from(["quotes", "all", "double_quotes"]))
def test_spans_only_and_prose_only_partition_the_characters(text, families):
    spans = T.SpansOnly(families, sep="")(text)
    prose = T.ProseOnly(families)(text)
    assert len(spans) + len(prose) == len(text)
    assert Counter(spans) + Counter(prose) == Counter(text)
    # and they interleave back into the text in offset order
    pieces, pos = [], 0
    for s in find_spans(text, families).outermost():
        pieces.append(text[pos:s.start])
        pos = s.end
    pieces.append(text[pos:])
    assert "".join(pieces) == prose


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_no_transform_raises_and_all_are_deterministic(text):
    for t in all_instances():
        out = t(text)
        assert isinstance(out, str)
        assert t(text) == out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list("ab .!?\n\"'()\u201c\u201d") + ["Yes. ", "No! "])).map("".join),
       st.integers(0, 9))
def test_shuffle_sentences_preserves_characters(text, seed):
    assert Counter(T.ShuffleSentences(seed=seed)(text)) == Counter(text)
