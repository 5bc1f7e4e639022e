"""Copy detection: exact agreement with difflib, normalisation, contexts, nulls, streaming, summaries."""

import difflib
import json
import random

import numpy as np
import polars as pl
import pytest
from rapidfuzz import fuzz

from nla_probe import copying
from nla_probe.analysis.stats import cluster_bootstrap_ci, cluster_quantile_ci
from nla_probe.copying import (
    CopyResult,
    CopySettings,
    WordNormalizer,
    copy_detection,
    copy_detection_to_parquet,
    doc_derangement,
    longest_shared_run,
    null_sources,
    source_context,
    summarize_copying,
    summarize_spans,
    wordruns,
)
from nla_probe.errors import InputError


def _difflib(a, b, alo=0, ahi=None):
    ahi = len(a) if ahi is None else ahi
    m = difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match(alo, ahi, 0, len(b))
    return m.size, m.a, m.b


def _random_pairs(rng: random.Random, count: int):
    """Word lists with heavy repetition (small alphabets), empty lists and a few long ones."""
    pairs = []
    for k in range(count):
        alphabet = [f"w{i}" for i in range(rng.choice([1, 2, 3, 5, 8, 30]))]
        if k % 50 == 0:
            na, nb = rng.randint(150, 400), rng.randint(150, 400)  # beyond difflib's autojunk size
        else:
            na, nb = rng.choice([0, 1, 2, rng.randint(0, 40)]), rng.choice([0, 1, rng.randint(0, 60)])
        a = [rng.choice(alphabet) for _ in range(na)]
        b = [rng.choice(alphabet) for _ in range(nb)]
        if a and b and rng.random() < 0.5:  # plant a copied run
            i, j = rng.randrange(len(a)), rng.randrange(len(b))
            a[i:i] = b[j:j + rng.randint(1, 12)]
        pairs.append((a, b))
    return pairs


def test_longest_run_matches_difflib_on_1200_random_word_lists():
    pairs = _random_pairs(random.Random(0), 1200)
    assert sum(1 for a, b in pairs if not a or not b) > 100  # empties are really in the sample
    for a, b in pairs:
        run = longest_shared_run(a, b)
        size, i, j = _difflib(a, b)
        assert (run.length, run.a_start, run.b_start) == (size, i, j), (a, b)
        assert run.a_end - run.a_start == run.b_end - run.b_start == size
        assert list(run.words) == a[i:i + size] == b[j:j + size]


def test_block_carry_path_matches_difflib(monkeypatch):
    """With tiny row blocks every run crosses block boundaries; results must not change."""
    monkeypatch.setattr(wordruns, "_MAX_PAIRS", 3)
    for a, b in _random_pairs(random.Random(1), 400):
        run = longest_shared_run(a, b)
        assert (run.length, run.a_start, run.b_start) == _difflib(a, b)


def test_range_runs_match_difflib_with_a_limits():
    rng = random.Random(2)
    for a, b in _random_pairs(rng, 1000):
        vocab = {}
        ta, tb = wordruns.IndexedWords(a, vocab), wordruns.IndexedWords(b, vocab)
        _, ell = wordruns.run_profile(ta, tb, need_ell=True)
        lo = rng.randint(0, len(a))
        hi = rng.randint(lo, len(a))
        assert wordruns.locate_run(ta, tb, ell, lo, hi) == _difflib(a, b, lo, hi)
        ranges = [(lo, hi), (0, len(a)), (hi, hi), (lo // 2, lo)]
        expected = [_difflib(a, b, x, y)[0] for x, y in ranges]
        assert wordruns.range_maxes(ell, wordruns.range_layout(ranges)).tolist() == expected


def test_text_runs_match_difflib_on_normalised_words_and_offsets_point_at_the_run():
    rng = random.Random(3)
    vocab = ["the", "The", "cat", "CAT", "sat", "on", "mat", "don't", "don’t", "ﬁsh", "fish", "Straße", "strasse"]
    norm = WordNormalizer()
    for _ in range(300):
        def text():
            marks = ["", "", ",", ".", '"', "!"]
            return " ".join(rng.choice(vocab) + rng.choice(marks) for _ in range(rng.randint(0, 25)))

        ta, tb = text(), text()
        aw, bw = norm.words(ta), norm.words(tb)
        run = longest_shared_run(ta, tb, norm)
        assert (run.length, run.a_start, run.b_start) == _difflib(aw, bw)
        if run.length:
            assert norm.words(ta[run.a_char_start:run.a_char_end]) == list(run.words)
            assert norm.words(tb[run.b_char_start:run.b_char_end]) == list(run.words)


def test_normalizer_modes_and_unicode():
    text = 'He said: "Don’t stop," well-known ＦＵＬＬ ﬁsh Straße -- 3.14!'
    assert WordNormalizer().words(text) == [
        "he", "said", "don't", "stop", "well-known", "full", "fish", "strasse", "3.14"]
    assert WordNormalizer(punctuation="split").words(text) == [
        "he", "said", "don", "t", "stop", "well", "known", "full", "fish", "strasse", "3", "14"]
    assert WordNormalizer(punctuation="keep", casefold=False, nfkc=False, fold_apostrophes=False).words(text) == [
        "He", "said:", '"Don’t', 'stop,"', "well-known", "ＦＵＬＬ", "ﬁsh", "Straße", "--", "3.14!"]
    assert WordNormalizer(fold_apostrophes=False).words("don’t") == ["don’t"]
    words = WordNormalizer().tokenize('x "⑴ y"')  # NFKC turns ⑴ into (1): stripped again
    assert words.words == ("x", "1", "y") and words.starts == (0, 3, 5) and words.ends == (1, 4, 6)


def test_ascii_fast_path_equals_the_unicode_path():
    rng = random.Random(4)
    alphabet = "ab C.,'\"-!?\t\n\x0b\x0c\r\x1c\x1f\x00_~"
    for mode in copying.PUNCTUATION_MODES:
        norm = WordNormalizer(punctuation=mode)
        for _ in range(300):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
            fast = norm.tokenize(text)
            pattern = wordruns._compiled(mode)
            slow = [(w, m.start(), m.end()) for m in pattern.finditer(text) for w in norm.normalize_token(m.group())]
            assert list(zip(fast.words, fast.starts, fast.ends)) == slow, repr(text)


def test_normalizer_rejects_bad_options_and_round_trips():
    with pytest.raises(InputError, match="punctuation"):
        WordNormalizer(punctuation="drop")
    with pytest.raises(InputError, match="casefold"):
        WordNormalizer(casefold="yes")
    norm = WordNormalizer(punctuation="split", nfkc=False)
    assert WordNormalizer.from_dict(norm.to_dict()) == norm
    with pytest.raises(InputError, match="unknown key"):
        WordNormalizer.from_dict({"lowercase": True})


def test_source_context_prefix_and_window():
    text = "Alpha beta  gamma delta epsilon"
    end = text.index("delta") + len("delta")
    assert source_context(text, end) == "Alpha beta  gamma delta"
    assert source_context(text, end, window=2) == "gamma delta"
    assert source_context(text, end - 2, window=1) == "del"  # a chunk cut by char_end counts
    assert source_context(text, end, window=10) == "Alpha beta  gamma delta"
    assert source_context(text, 0) == ""
    with pytest.raises(InputError, match="char_end"):
        source_context(text, len(text) + 1)
    with pytest.raises(InputError, match="window"):
        source_context(text, 3, window=0)


def test_null_sources_are_valid_derangements():
    rng = np.random.default_rng(5)
    docs = [f"d{k}" for k in rng.integers(0, 40, size=300)]
    out = null_sources(docs, 20, seed=7)
    codes = np.unique(docs, return_inverse=True)[1]
    assert out.shape == (300, 20)
    for k in range(20):
        assert sorted(out[:, k]) == list(range(300))  # each column is a permutation
    assert not np.any(codes[out] == codes[:, None])  # never the sample's own document
    assert all(len(set(row)) == 20 for row in out)  # a row never repeats a source
    assert np.array_equal(out, null_sources(docs, 20, seed=7))
    assert not np.array_equal(out, null_sources(docs, 20, seed=8))
    perm = doc_derangement([1, 1, 2, 2, 3, 3, 3], seed=0)
    assert sorted(perm) == list(range(7))
    assert all([1, 1, 2, 2, 3, 3, 3][p] != d for p, d in zip(perm, [1, 1, 2, 2, 3, 3, 3]))


def test_null_sources_tight_and_infeasible_cases():
    docs = ["a"] * 5 + ["b"] * 5  # only derangement type: every a -> some b and vice versa
    out = null_sources(docs, 5, seed=0)
    assert set(out[:5].ravel()) == set(range(5, 10)) and set(out[5:].ravel()) == set(range(5))
    assert all(len(set(r)) == 5 for r in out)
    with pytest.raises(InputError, match="n_null=6"):
        null_sources(docs, 6)
    with pytest.raises(InputError, match="other documents"):
        null_sources(["a", "a", "a", "b"], 1)
    assert null_sources(["a"], 0).shape == (1, 0)


def _corpus(n_docs=12, per_doc=2, seed=0):
    rng = random.Random(seed)
    words = [f"tok{k}" for k in range(60)]
    sources, expls, docs, ends = [], [], [], []
    for d in range(n_docs):
        src = " ".join(rng.choice(words) for _ in range(80)) + "."
        for p in range(per_doc):
            end = rng.randint(len(src) // 2, len(src))
            ctx_words = src[:end].split()
            copied = " ".join(ctx_words[5:12])
            expls.append(f'It reads "{copied}" and then "{rng.choice(words)} zzz" plus prose {rng.choice(words)}.')
            sources.append(src)
            docs.append(f"doc{d}")
            ends.append(end)
    return expls, sources, docs, ends


def test_copy_detection_true_runs_nulls_and_spans_against_difflib():
    expls, sources, docs, ends = _corpus()
    res = copy_detection(expls, sources, docs, char_ends=ends, n_null=5, seed=3, conditions=["c"] * len(docs))
    s, sp = res.samples, res.spans
    norm = WordNormalizer()
    contexts = [source_context(t, e) for t, e in zip(sources, ends)]
    assert s["sample_id"].to_list() == list(range(len(expls)))
    for row in s.iter_rows(named=True):
        i = row["sample_id"]
        aw, cw = norm.words(expls[i]), norm.words(contexts[i])
        assert (row["run_len"], row["expl_word_start"], row["ctx_word_start"]) == _difflib(aw, cw)
        assert row["run_len"] >= 7  # the planted quote
        assert norm.words(sources[i][row["src_char_start"]:row["src_char_end"]]) == row["run_text"].split()
        assert norm.words(expls[i][row["expl_char_start"]:row["expl_char_end"]]) == row["run_text"].split()
        assert all(docs[j] != docs[i] for j in row["null_sample_ids"])
        assert row["null_run_lens"] == [_difflib(aw, norm.words(contexts[j]))[0] for j in row["null_sample_ids"]]
        nl = np.array(row["null_run_lens"])
        assert row["null_max"] == nl.max() and row["null_median"] == np.median(nl)
        below, ties = np.sum(nl < row["run_len"]), np.sum(nl == row["run_len"])
        assert row["run_percentile"] == pytest.approx(100 * (below + 0.5 * ties) / 5)
        assert row["n_spans"] == 2
    assert sp.height == 2 * len(expls)
    for row in sp.iter_rows(named=True):
        i = row["sample_id"]
        span_words = norm.words(row["span_text"])
        assert row["n_words"] == len(span_words)
        assert row["run_len"] == _difflib(span_words, norm.words(contexts[i]))[0]
        assert row["verbatim"] == (row["run_len"] == len(span_words))
        expected = fuzz.partial_ratio(" ".join(span_words), " ".join(norm.words(contexts[i])))
        assert row["fuzzy_score"] == pytest.approx(expected)
        nulls = s.filter(pl.col("sample_id") == i)["null_sample_ids"].item().to_list()
        assert row["null_run_lens"] == [_difflib(span_words, norm.words(contexts[j]))[0] for j in nulls]
    first = sp.filter(pl.col("span_index") == 0)
    assert first["verbatim"].all()  # the copied 7-word quote
    assert not sp.filter(pl.col("span_index") == 1)["verbatim"].any()  # "... zzz" never occurs


def test_near_verbatim_span_with_a_typo_and_window():
    src = "Yesterday the cat sat on the mat while it rained all day long."
    res = copy_detection(['Quote: "the cat sat on teh mat"', "x"], [src, "other words entirely here"], ["a", "b"],
                         n_null=1, window=8)
    span = res.spans.row(0, named=True)
    # context = the last 8 chunks, "the mat while it rained all day long."
    assert res.samples["context_char_start"][0] == src.index("the mat")
    assert span["n_words"] == 6 and span["run_len"] == 1 and not span["verbatim"]
    res = copy_detection(['Quote: "the cat sat on teh mat"', "x"], [src, "other words entirely here"], ["a", "b"],
                         n_null=1, fuzzy_threshold=90)
    span = res.spans.row(0, named=True)
    assert span["run_len"] == 4 and not span["verbatim"]  # "the cat sat on"
    assert span["fuzzy_score"] == pytest.approx(100 * (1 - 2 / 44)) and span["near_verbatim"]


def test_streaming_writes_one_part_per_pool_and_equals_in_memory(tmp_path):
    expls, sources, docs, ends = _corpus(n_docs=25, per_doc=2, seed=1)  # 50 samples
    kwargs = dict(char_ends=ends, n_null=4, seed=11, pool_size=10)
    out = copy_detection_to_parquet(tmp_path / "run", expls, sources, docs, **kwargs)
    assert len(list((out / "samples").glob("part-*.parquet"))) == 5
    assert len(list((out / "spans").glob("part-*.parquet"))) == 5
    info = json.loads((out / "info.json").read_text())
    assert info["n_parts"] == 5 and info["settings"]["seed"] == 11 and info["settings"]["pool_size"] == 10
    for k in range(5):  # each part holds one pool, and its nulls come from inside that pool
        part = pl.read_parquet(out / "samples" / f"part-{k:05d}.parquet")
        assert part.height == 10
        ids = set(part["sample_id"].to_list())
        assert all(set(x) <= ids for x in part["null_sample_ids"].to_list())
    loaded = CopyResult.load(out)
    mem = copy_detection(expls, sources, docs, **kwargs)
    assert loaded.samples.equals(mem.samples) and loaded.spans.equals(mem.spans)
    with pytest.raises(InputError, match="overwrite"):
        copy_detection_to_parquet(out, expls, sources, docs, **kwargs)
    copy_detection_to_parquet(out, expls[:20], sources[:20], docs[:20], overwrite=True,
                              **{**kwargs, "char_ends": ends[:20]})
    assert len(list((out / "samples").glob("part-*.parquet"))) == 2


def test_save_load_round_trip_and_empty_input(tmp_path):
    res = copy_detection(["a b", "c d"], ["a b c", "c d e"], [1, 2], n_null=1)
    assert res.samples["doc_id"].dtype == pl.Int64
    back = CopyResult.load(res.save(tmp_path / "r"))
    assert back.samples.equals(res.samples) and back.info["settings"] == res.info["settings"]
    empty = copy_detection([], [], [], n_null=3)
    assert empty.samples.height == 0 and "null_run_lens" in empty.samples.columns


def test_input_errors():
    with pytest.raises(InputError, match="doc_ids: expected 2"):
        copy_detection(["a", "b"], ["a", "b"], ["x"])
    with pytest.raises(InputError, match="explanations\\[1\\]"):
        copy_detection(["a", None], ["a", "b"], ["x", "y"], n_null=1)
    with pytest.raises(InputError, match="n_null"):
        CopySettings(n_null=-1)
    assert CopySettings.from_dict(CopySettings(window=5).to_dict()) == CopySettings(window=5)


def test_cluster_quantile_ci_equals_generic_bootstrap():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 9, size=400)
    clusters = rng.integers(0, 37, size=400)
    for q in (0.5, 0.9, 0.37):
        fast = cluster_quantile_ci(values, clusters, q, n_boot=300, seed=4)
        slow = cluster_bootstrap_ci(values, clusters, stat=lambda v, q=q: float(np.quantile(v, q)), n_boot=300, seed=4)
        assert fast.estimate == pytest.approx(np.quantile(values, q))
        assert (fast.low, fast.high) == pytest.approx((slow.low, slow.high))


@pytest.mark.filterwarnings("ignore:bootstrap over only")
def test_summaries_against_hand_computed_values():
    frame = pl.DataFrame({
        "doc_id": [f"d{k // 2}" for k in range(12)],
        "condition": ["a"] * 6 + ["b"] * 6,
        "run_len": [0, 1, 4, 6, 2, 9, 1, 1, 1, 1, 1, 8],
        "null_run_lens": [[0, 1], [4, 0], [1, 1], [0, 0], [6, 2], [0, 3]] * 2,
    })
    out = summarize_copying(frame, ns=(4, 6), n_boot=200)
    a = {(r["source"], r["statistic"]): r for r in out.filter(pl.col("condition") == "a").iter_rows(named=True)}
    assert a[("true", "median")]["estimate"] == 3.0
    assert a[("true", "p90")]["estimate"] == pytest.approx(np.quantile([0, 1, 4, 6, 2, 9], 0.9))
    assert a[("true", "rate_ge_4")]["estimate"] == pytest.approx(3 / 6)
    assert a[("true", "rate_ge_6")]["estimate"] == pytest.approx(2 / 6)
    assert a[("null", "median")]["estimate"] == 1.0 and a[("null", "median")]["n"] == 12
    assert a[("null", "rate_ge_4")]["estimate"] == pytest.approx((0 + 0.5 + 0 + 0 + 0.5 + 0) / 6)
    assert a[("true", "rate_ge_4")]["n_clusters"] == 3
    assert out.filter(pl.col("condition") == "b", pl.col("statistic") == "rate_ge_6", pl.col("source") == "true")[
        "estimate"].item() == pytest.approx(1 / 6)
    spans = pl.DataFrame({"doc_id": ["x", "x", "y", "z", "z"], "condition": ["a"] * 5, "n_words": [3, 0, 2, 5, 1],
                          "verbatim": [True, False, False, True, False],
                          "near_verbatim": [True, False, True, True, False],
                          "null_verbatim_rate": [0.0, 0.0, 0.5, 0.0, 0.25]})
    with pytest.warns(UserWarning, match="clusters"):
        ss = summarize_spans(spans, n_boot=100)
    got = {(r["source"], r["statistic"]): r["estimate"] for r in ss.iter_rows(named=True)}
    assert got == pytest.approx({("true", "verbatim_rate"): 2 / 4, ("true", "near_verbatim_rate"): 3 / 4,
                                 ("null", "verbatim_rate"): 0.75 / 4})
