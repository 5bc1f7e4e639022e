"""Copy-detection benchmark: nla-probe's longest-shared-run engine vs difflib on the same pairs.

Workload (fixed, independent of the pair under test): 1,000 synthetic explanations, each paired with
its own source context and 20 null contexts of other documents (the assignment of
:func:`nla_probe.copying.null_sources`), i.e. 21,000 pairs.  Sources are ~400 words of Zipf-distributed
pseudo-words in sentences; explanations (~80 words) quote 1–6-word runs copied from their source.
"""

from __future__ import annotations

import difflib
import time

import numpy as np

from nla_probe.bench.registry import BenchContext, BenchResult, register_benchmark

N_SAMPLES = 1000
N_NULL = 20


def synthetic_corpus(n: int = N_SAMPLES, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """``(explanations, sources, doc_ids)`` with one sample per document."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "to", "ri", "mel", "an", "sor", "ve", "lin", "qu", "pa", "de", "mon", "ty", "zu", "ber", "ol"]
    vocab = np.array(["".join(rng.choice(syllables, size=int(rng.integers(1, 4)))) for _ in range(4000)])
    weights = 1.0 / np.arange(1, vocab.size + 1) ** 1.05
    weights /= weights.sum()

    def sentence(k: int) -> str:
        words = list(rng.choice(vocab, size=k, p=weights))
        return " ".join([words[0].capitalize(), *words[1:]]) + "."

    explanations, sources = [], []
    for _ in range(n):
        src = " ".join(sentence(int(rng.integers(8, 25))) for _ in range(int(rng.integers(10, 40))))
        words = src.split()
        parts = []
        for _ in range(int(rng.integers(4, 12))):
            size = int(rng.integers(1, 7))
            at = int(rng.integers(0, max(1, len(words) - size)))
            parts.append(sentence(int(rng.integers(3, 12))) + ' "' + " ".join(words[at:at + size]).strip('."') + '"')
        explanations.append(" ".join(parts))
        sources.append(src)
    return explanations, sources, [f"doc{d}" for d in range(n)]


def _difflib_runs(a_words: list[list[str]], b_words: list[list[str]], pairs: np.ndarray) -> list[int]:
    """Longest-match sizes with difflib, each source's index (``set_seq2``) built once."""
    out = [0] * len(pairs)
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    for j in np.unique(pairs[:, 1]):
        matcher.set_seq2(b_words[j])
        for k in np.flatnonzero(pairs[:, 1] == j):
            a = a_words[pairs[k, 0]]
            matcher.set_seq1(a)
            out[k] = matcher.find_longest_match(0, len(a), 0, len(b_words[j])).size
    return out


@register_benchmark("copy_detection")
def copy_detection_bench(ctx: BenchContext) -> list[BenchResult]:
    """Pairs/s: nla-probe vs difflib on the same 1,000 x 21 pairs, word lists and end to end."""
    from nla_probe.copying import (
        DEFAULT_NORMALIZER,
        copy_detection,
        longest_shared_run,
        null_sources,
        shared_run_lengths,
    )

    expls, sources, docs = synthetic_corpus()
    nulls = null_sources(docs, N_NULL, seed=[0, 0])  # the assignment copy_detection draws (one pool)
    pairs = np.array([(i, j) for i in range(N_SAMPLES) for j in [i, *nulls[i]]])
    t = time.perf_counter()
    a_words = [DEFAULT_NORMALIZER.words(e) for e in expls]
    b_words = [DEFAULT_NORMALIZER.words(s) for s in sources]
    t_tokenize = time.perf_counter() - t

    t = time.perf_counter()
    ref = _difflib_runs(a_words, b_words, pairs)
    t_difflib = time.perf_counter() - t
    t = time.perf_counter()
    ours = shared_run_lengths(a_words, b_words, pairs).tolist()
    t_batch = time.perf_counter() - t
    t = time.perf_counter()
    single = [longest_shared_run(a_words[i], b_words[j]).length for i, j in pairs[:2000]]
    t_single = time.perf_counter() - t
    t = time.perf_counter()
    res = copy_detection(expls, sources, docs, n_null=N_NULL, seed=0, spans=False)
    t_engine = time.perf_counter() - t
    engine = [x for row in res.samples.select("run_len", "null_run_lens").iter_rows() for x in (row[0], *row[1])]
    agree = ours == ref and engine == ref and single == ref[:2000]

    n = float(len(pairs))
    words = {"difflib": n / t_difflib, "shared_run_lengths": n / t_batch, "longest_shared_run": 2000 / t_single}
    end_to_end = {"copy_detection": n / t_engine, "tokenize+difflib": n / (t_tokenize + t_difflib)}
    sizes = (f"{N_SAMPLES} explanations x {N_NULL + 1} contexts; identical run lengths: {agree}; timed: wall "
             "seconds of one pass each (no warm-up, no repetition; one process, no torch)")
    return [
        BenchResult("copy_detection_words", "pairs/s (pre-split word lists)", words,
                    ("shared_run_lengths", "difflib"), target=">= 1.0",
                    passed=agree and words["shared_run_lengths"] >= words["difflib"],
                    notes=f"{sizes}; both index each text once (difflib: set_seq2 per source); "
                          "longest_shared_run (one call per pair, offsets too) timed on the first 2,000 pairs"),
        BenchResult("copy_detection_end_to_end", "pairs/s (texts in, run lengths out)", end_to_end,
                    ("copy_detection", "tokenize+difflib"), target=">= 1.0",
                    passed=agree and end_to_end["copy_detection"] >= end_to_end["tokenize+difflib"],
                    notes=f"{sizes}; copy_detection(spans=False) includes null draw and result frame"),
    ]
