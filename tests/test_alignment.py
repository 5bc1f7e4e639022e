"""Cross-tokenizer position alignment by character offset, on handcrafted offsets."""

import re

import polars as pl
import pytest

from nla_probe.analysis.alignment import (
    align_frame,
    align_offset,
    alignment_summary,
    nearest_boundary_error,
    token_offsets,
)
from nla_probe.errors import InputError


class WordTokenizer:
    """Whitespace words as tokens (spans exclude the spaces), optional BOS with an empty span."""

    def __init__(self, bos: bool):
        self.bos = bos

    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False, verbose=True):
        offs = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        if self.bos and add_special_tokens:
            offs = [(0, 0)] + offs
        return {"input_ids": list(range(len(offs))), "offset_mapping": offs}


class PairTokenizer:
    """Fixed two-character pieces (the last one may be shorter), spaces included."""

    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False, verbose=True):
        offs = [(i, min(i + 2, len(text))) for i in range(0, len(text), 2)]
        return {"input_ids": list(range(len(offs))), "offset_mapping": offs}


def test_contained_last_character_and_error():
    # source token "ab|cde" ends at 5 -> last char 4 lies in target span (3, 6): error |6 - 5| = 1
    a = align_offset(5, [(0, 0), (0, 3), (3, 6), (6, 9)])
    assert (a.position, a.char_start, a.char_end, a.error, a.fallback) == (2, 3, 6, 1, False)


def test_same_boundary_gives_zero_error():
    a = align_offset(6, [(0, 3), (3, 6), (6, 9)])
    assert (a.position, a.error) == (1, 0)


def test_several_containing_tokens_take_the_last():
    # two byte-level pieces share the span (2, 3): the later one has read the whole character
    a = align_offset(3, [(0, 2), (2, 3), (2, 3), (3, 5)])
    assert (a.position, a.error, a.fallback) == (2, 0, False)


def test_fallback_when_no_span_contains_the_character():
    # character 3 is a space no target span covers: fall back to the last token starting at or before it
    a = align_offset(4, [(0, 3), (4, 7)])
    assert (a.position, a.error, a.fallback) == (0, 1, True)


def test_special_tokens_never_match():
    a = align_offset(2, [(0, 0), (0, 0), (0, 4)])
    assert (a.position, a.error) == (2, 2)


def test_invalid_source_span_raises():
    with pytest.raises(InputError, match=">= 1"):
        align_offset(0, [(0, 3)])
    with pytest.raises(InputError, match="no target token"):
        align_offset(3, [(5, 8)])


def test_align_frame_word_to_pairs():
    text = "ab cde fghi"
    # word tokenizer with BOS: tokens (0,2) "ab", (3,6) "cde", (7,11) "fghi" at positions 1, 2, 3
    words = WordTokenizer(bos=True)
    offs = token_offsets(words, text)
    assert offs == [(0, 0), (0, 2), (3, 6), (7, 11)]
    frame = pl.DataFrame({"doc_id": ["d"] * 3, "position": [1, 2, 3], "char_start": [0, 3, 7],
                          "char_end": [2, 6, 11], "source_text": [text] * 3})
    out = align_frame(frame, PairTokenizer())
    # pair pieces: (0,2) (2,4) (4,6) (6,8) (8,10) (10,11)
    # "ab" ends at 2 -> char 1 in (0,2): pos 0, error 0; "cde" ends at 6 -> char 5 in (4,6): pos 2, error 0;
    # "fghi" ends at 11 -> char 10 in (10,11): pos 5, error 0
    assert out["tgt_position"].to_list() == [0, 2, 5]
    assert out["align_error"].to_list() == [0, 0, 0]
    back = frame.with_columns(pl.Series("char_end", [4, 8, 10]))  # pair tokens ending at 4, 8, 10
    out2 = align_frame(back, words)
    # char 3 ("c") in (3,6): pos 2, error |6-4| = 2; char 7 ("f") in (7,11): pos 3, error 3;
    # char 9 in (7,11): pos 3, error 1
    assert out2["tgt_position"].to_list() == [2, 3, 3]
    assert out2["align_error"].to_list() == [2, 3, 1]
    assert out2["align_fallback"].to_list() == [False, False, False]


def test_align_frame_fallback_on_space_and_missing_columns():
    text = "ab cd"
    frame = pl.DataFrame({"doc_id": ["d"], "char_end": [3], "source_text": [text]})  # token "ab " ends at 3
    out = align_frame(frame, WordTokenizer(bos=False))
    assert out["tgt_position"].to_list() == [0] and out["align_error"].to_list() == [1]
    assert out["align_fallback"].to_list() == [True]
    with pytest.raises(InputError, match="char_end"):
        align_frame(frame.drop("char_end"), WordTokenizer(bos=False))


def test_alignment_summary_and_nearest_boundary():
    s = alignment_summary([0, 0, 2, 4], [False, True, False, False])
    assert s == {"n": 4, "mean_error": 1.5, "median_error": 1.0, "max_error": 4.0, "frac_exact": 0.5,
                 "n_fallback": 1}
    assert alignment_summary([], [])["n"] == 0
    offs = [(0, 0), (0, 3), (3, 6), (6, 9)]
    assert nearest_boundary_error(5, offs) == 1
    assert nearest_boundary_error(10, offs) == 1
    assert nearest_boundary_error(6, offs) == 0
