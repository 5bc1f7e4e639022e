"""Scoring variants through the fixture AR, checked against independent numpy computations."""

import json

import numpy as np
import polars as pl
import pytest

from nla_probe.errors import InputError, UnknownNameError
from nla_probe.surgery import Identity, ProseOnly, ReplaceSpans, SpansOnly, from_spec
from nla_probe.surgery.scoring import (
    ATTRIBUTION_COLUMNS,
    SCORE_COLUMNS,
    redaction_grid,
    resolve_variants,
    score_variants,
    span_attribution,
    summarize_variants,
)

EXPLANATIONS = [
    "Final token \"Cloud\" ends a phrase (\"created by 'Qwen'\"), the students' choice.\n\n"
    "The phrase \u201ccurly\u201d is here. Don't \"stop.",
    "No quotes at all here. Second sentence.",
    'Technical prompt format with "Generate a response" structure.',
]
B = 0.7335


@pytest.fixture(scope="module")
def ar(fixture_pairs):
    from nla_probe.nla.checkpoint import load_ar

    return load_ar(fixture_pairs["qwen2"][1])


@pytest.fixture(scope="module")
def gold(ar):
    return np.random.default_rng(0).normal(size=(len(EXPLANATIONS), ar.contract.d_model)).astype(np.float32)


def reference(ar, texts, gold_rows):
    """mse_nrm, cos, fve_nrm computed here from one-at-a-time reconstructions."""
    pred = np.concatenate([ar.reconstruct([t], batch_size=1) for t in texts]).astype(np.float64)
    g = np.asarray(gold_rows, dtype=np.float64)
    s = ar.contract.mse_scale
    pn = pred / np.linalg.norm(pred, axis=1, keepdims=True) * s
    gn = g / np.linalg.norm(g, axis=1, keepdims=True) * s
    mse = ((pn - gn) ** 2).mean(1)
    cos = (pred * g).sum(1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(g, axis=1))
    return mse, cos, 1 - mse / B


def test_score_variants_matches_independent_metrics(ar, gold):
    variants = {"baseline": Identity(), "spans": SpansOnly(), "prose": ProseOnly()}
    frame = score_variants(ar, EXPLANATIONS, gold, variants, denominator=B, sample_ids=["a", "b", "c"],
                           batch_size=2)
    assert frame.columns == list(SCORE_COLUMNS)
    assert frame.height == 9
    assert frame["variant"].to_list() == ["baseline"] * 3 + ["spans"] * 3 + ["prose"] * 3
    assert frame["sample_id"].to_list() == ["a", "b", "c"] * 3
    expected_texts = [t for v in variants.values() for t in map(v, EXPLANATIONS)]
    assert frame["text"].to_list() == expected_texts
    mse, cos, fve = reference(ar, expected_texts, np.tile(gold, (3, 1)))
    np.testing.assert_allclose(frame["mse_nrm"].to_numpy(), mse, atol=2e-4)
    np.testing.assert_allclose(frame["cos"].to_numpy(), cos, atol=1e-4)
    np.testing.assert_allclose(frame["fve_nrm"].to_numpy(), fve, atol=3e-4)
    tok = ar.tokenizer
    assert frame["n_tokens"].to_list() == [len(tok(t, add_special_tokens=False)["input_ids"]) for t in expected_texts]
    assert frame["n_chars"].to_list() == [len(t) for t in expected_texts]
    # Spans of explanation 0: "Cloud", "created by 'Qwen'" (with marks), curly; "stop is unterminated.
    assert frame["n_spans"].to_list()[:3] == [3, 0, 1]
    share0 = (len('"Cloud"') + len("\"created by 'Qwen'\"") + len("\u201ccurly\u201d")) / len(EXPLANATIONS[0])
    assert frame["span_char_share"][0] == pytest.approx(share0)
    assert frame["span_char_share"][3] == pytest.approx(1.0 - 2 / len(frame["text"][3]))  # 3 spans, 2 spaces
    assert frame["span_char_share"][4] is None  # empty text
    assert frame["ar_ood"].to_list() == [False, False, False, True, True, True, True, False, True]
    assert set(frame["denominator"].to_list()) == {B}
    assert from_spec(json.loads(frame["spec"][3])) == SpansOnly()


def test_empty_text_rows_and_named_denominator(ar, gold):
    frame = score_variants(ar, EXPLANATIONS[1:2], gold[1:2], [SpansOnly()], denominator="qwen2.5-7b-L20")
    assert frame["text"].to_list() == [""]
    assert frame["span_char_share"].to_list() == [None]
    assert frame["variant"].to_list() == ["spans_only"]
    mse, _, _ = reference(ar, [""], gold[1:2])
    assert frame["fve_nrm"][0] == pytest.approx(1 - mse[0] / 0.7335, abs=3e-4)


def test_redaction_grid_runs_in_one_call(ar, gold):
    grid = redaction_grid()
    assert list(grid) == ["baseline", "spans_only", "spans_only_bare", "prose_only", "redacted", "junk"]
    frame = score_variants(ar, EXPLANATIONS, gold, grid, denominator=B)
    assert frame.height == 6 * len(EXPLANATIONS)
    junk = frame.filter(pl.col("variant") == "junk")["text"].to_list()
    assert junk[1] == EXPLANATIONS[1]  # nothing to replace
    assert junk[0] != EXPLANATIONS[0] and junk[0].count('"') == EXPLANATIONS[0].count('"')
    redacted = frame.filter(pl.col("variant") == "redacted")["text"][2]
    assert redacted == 'Technical prompt format with "REDACTED" structure.'
    summary = summarize_variants(frame)
    assert summary["variant"].to_list() == list(grid)
    base = frame.filter(pl.col("variant") == "baseline")
    assert summary["fve_nrm"][0] == pytest.approx(float(np.mean(base["fve_nrm"].to_numpy())))
    assert summary["n"].to_list() == [3] * 6
    assert summary["share_edited"][0] == 0.0


def test_bucketing_does_not_change_scores(ar, gold):
    a = score_variants(ar, EXPLANATIONS, gold, redaction_grid(junk="words"), denominator=B, batch_size=16)
    b = score_variants(ar, EXPLANATIONS, gold, redaction_grid(junk="words"), denominator=B, batch_size=1)
    assert a["text"].to_list() == b["text"].to_list()
    np.testing.assert_allclose(a["mse_nrm"].to_numpy(), b["mse_nrm"].to_numpy(), atol=2e-4)


def test_span_attribution_leaves_one_part_out(ar, gold):
    frame = span_attribution(ar, EXPLANATIONS[:1], gold[:1], denominator=B)
    assert frame.columns == list(ATTRIBUTION_COLUMNS)
    spans = frame.filter(pl.col("unit") == "span")
    sents = frame.filter(pl.col("unit") == "sentence")
    text = EXPLANATIONS[0]
    assert spans["part"].to_list() == ['"Cloud"', "\"created by 'Qwen'\"", "\u201ccurly\u201d"]
    assert sents["part"].to_list() == [
        "Final token \"Cloud\" ends a phrase (\"created by 'Qwen'\"), the students' choice.",
        "The phrase \u201ccurly\u201d is here.", "Don't \"stop."]
    assert all(text[a:b] == p for a, b, p in zip(frame["start"], frame["end"], frame["part"]))
    without = [text[:a] + text[b:] for a, b in zip(spans["start"], spans["end"])]
    s0, s1 = sents["start"].to_list(), sents["end"].to_list()
    without += [text[:s0[0]] + text[s0[1]:], text[:s0[1]] + text[s0[2]:], text[:s1[1]] + text[s1[2]:]]
    mse, _, fve = reference(ar, [text, *without], np.repeat(gold[:1], len(without) + 1, axis=0))
    np.testing.assert_allclose(frame["fve_without"].to_numpy(), fve[1:], atol=3e-4)
    np.testing.assert_allclose(frame["fve_full"].to_numpy(), fve[0], atol=3e-4)
    np.testing.assert_allclose(frame["delta_fve"].to_numpy(), fve[0] - fve[1:], atol=3e-4)
    assert spans["family"].to_list() == ["double_quotes"] * 3
    assert sents["family"].to_list() == [None] * 3


def test_span_attribution_units_and_ids(ar, gold):
    frame = span_attribution(ar, EXPLANATIONS, gold, denominator=B, units=["span"], sample_ids=[10, 11, 12])
    assert frame["unit"].unique().to_list() == ["span"]
    assert frame.group_by("sample_id", maintain_order=True).len()["sample_id"].to_list() == [10, 12]
    with pytest.raises(InputError, match="units"):
        span_attribution(ar, EXPLANATIONS, gold, denominator=B, units=["word"])


def test_resolve_variants_names():
    got = resolve_variants([SpansOnly(), SpansOnly(), ("mine", ProseOnly()), {"name": "replace_spans"}])
    assert [n for n, _ in got] == ["spans_only", "spans_only-2", "mine", "replace_spans"]
    assert got[3][1] == ReplaceSpans()
    with pytest.raises(InputError, match="twice"):
        resolve_variants([("a", Identity()), ("a", SpansOnly())])
    with pytest.raises(InputError, match="at least one"):
        resolve_variants({})
    with pytest.raises(UnknownNameError):
        resolve_variants([{"name": "nope"}])


@pytest.mark.parametrize("kwargs, match", [
    ({"explanations": EXPLANATIONS[:2]}, "same length"),
    ({"explanations": "one string"}, "list of strings"),
    ({"sample_ids": [1]}, "sample_ids"),
    ({"denominator": -1.0}, "denominator"),
])
def test_input_errors(ar, gold, kwargs, match):
    args = {"explanations": EXPLANATIONS, "denominator": B} | kwargs
    with pytest.raises(InputError, match=match):
        score_variants(ar, args.pop("explanations"), gold, [Identity()], **args)
