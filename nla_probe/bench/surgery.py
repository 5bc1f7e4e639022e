"""Surgery benchmarks: transform throughput, and AR scoring of a variant grid (bucketed vs one by one).

``transform_throughput`` times every built-in transform on synthetic ~1,000-character explanations
in the style of the released examples (about 11 quote spans and ~21 % of characters in spans, with
apostrophes, nested single quotes, parentheses, curly quotes and the odd unterminated quote), as CPU
time of this process on one core (``time.process_time``, best of 3), so other load on the machine
does not count.  Bar: the slowest transform >= 20,000 explanations/s.

``surgery_scoring`` runs :func:`nla_probe.surgery.scoring.score_variants` on
:func:`~nla_probe.surgery.scoring.redaction_grid` for ``ctx.n`` synthetic explanations cut to 100–600
characters (the fixture pair's context is 512 tokens), once with length-bucketed batches of 32 and
once with ``batch_size=1`` (one text per AR forward): wall clock, same texts, same run, the two
modes alternated twice and the best time of each kept.  Both modes reconstruct each distinct text
once, so the ratio isolates batching.  Bar: ratio >= 3.
"""

from __future__ import annotations

import random
import time

from nla_probe.bench.registry import BenchContext, BenchResult, register_benchmark

_NOUNS = ("platform attribution phrase clause token sentence header template profile model assistant company "
          "article section answer student teacher report table forum post recipe chapter game rule author "
          "name identity capability context list value title").split()
_ADJS = "formal technical structured incomplete repeated common informal humorous celebratory numbered".split()
_VERBS = "signals mirrors suggests implies completes opens closes repeats follows continues".split()
_POSS = ("the model's", "Anthropic's", "the authors'", "the students'", "Alibaba's", "its", "the user's")
_CONTRACT = ("don't", "it's", "can't", "isn't", "won't")
_FILLER = ("the", "a", "of", "by", "and", "to", "is", "with", "for", "in")


def _words(rng: random.Random, k: int) -> str:
    pool = _NOUNS + _ADJS + list(_FILLER)
    return " ".join(rng.choice(pool) for _ in range(k))


def _quote(rng: random.Random) -> str:
    body = _words(rng, rng.randint(1, 4))
    r = rng.random()
    if r < 0.1:
        body = f"{_words(rng, 1)} '{rng.choice(_NOUNS).title()}' {_words(rng, 1)}"
    elif r < 0.18:
        body = f"{rng.choice(_POSS)} {_words(rng, 1)}"
    if rng.random() < 0.1:
        return f"\u201c{body}\u201d"
    return f'"{body}{rng.choice(["", "", "", ",", "."])}"'


def _sentence(rng: random.Random) -> str:
    kind = rng.randrange(5)
    noun, adj, verb = rng.choice(_NOUNS), rng.choice(_ADJS), rng.choice(_VERBS)
    if kind == 0:
        s = f"{adj.title()} {noun} format with {_quote(rng)} {verb} a {rng.choice(_ADJS)} {rng.choice(_NOUNS)} context"
    elif kind == 1:
        s = (f"The phrase {_quote(rng)} {verb} {rng.choice(_POSS)} {noun} ({_quote(rng)}), implying a "
             f"{rng.choice(_NOUNS)} that {rng.choice(_CONTRACT)} change")
    elif kind == 2:
        s = (f"Final token {_quote(rng)} ends an {adj} {noun} ({_words(rng, 3)}), strongly expecting "
             f"{_quote(rng)} or {_quote(rng)} or similar")
    elif kind == 3:
        s = f"It {verb} {_words(rng, rng.randint(6, 14))}, *{rng.choice(_ADJS)}* in tone"
    else:
        s = f"{adj.title()} {noun} {verb} {_words(rng, rng.randint(8, 16))}"
    if rng.random() < 0.04:
        s += f' and "{_words(rng, 3)}'  # an unterminated quote
    return s + "."


def synthetic_explanations(n: int, *, seed: int = 0, target_chars: int = 1000) -> list[str]:
    """``n`` synthetic explanations of at least ``target_chars`` characters, 2–3 sentences per
    paragraph, paragraphs separated by blank lines (the released format).  Seeded and deterministic."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        paras, total = [], 0
        while total < target_chars:
            para = []
            for _ in range(rng.randint(2, 3)):
                para.append(_sentence(rng))
                total += len(para[-1]) + 1
                if total >= target_chars:
                    break
            paras.append(" ".join(para))
        out.append("\n\n".join(paras))
    return out


def _throughput_transforms() -> dict:
    from nla_probe.surgery import (
        DeleteSpans,
        KeepFirstTokens,
        ProseOnly,
        ReplaceDelimiters,
        ReplaceSpans,
        ShuffleSentences,
        SpansOnly,
        SpansOnlyBare,
        StripDelimiters,
    )

    vocab = tuple(f" {w}" for w in _NOUNS) + tuple(_NOUNS)
    ts = [SpansOnly(), SpansOnlyBare(), ProseOnly(), StripDelimiters(), StripDelimiters(scope="chars"),
          ReplaceDelimiters({"double_quotes": "'"}), ReplaceSpans("redacted"), ReplaceSpans("empty"),
          ReplaceSpans("nothing"), ReplaceSpans("words"), ReplaceSpans("tokens", vocab=vocab),
          DeleteSpans(indices=(0,)), DeleteSpans(fraction=0.5), KeepFirstTokens(64), ShuffleSentences(),
          SpansOnly() | StripDelimiters()]
    return {t.describe(): t for t in ts}


@register_benchmark("transform_throughput")
def transform_throughput(ctx: BenchContext) -> list[BenchResult]:
    """Explanations/s of each transform (one core, CPU time, best of 3); bar: slowest >= 20,000/s."""
    from nla_probe.text.spans import find_spans

    n = max(ctx.n * 32, 2000)
    texts = synthetic_explanations(n, seed=0)
    values: dict[str, float] = {}
    for name, t in _throughput_transforms().items():
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            for x in texts:
                t(x)
            best = min(best, time.process_time() - start)
        values[name] = n / best if best > 0 else float("inf")
    slowest = min(values, key=values.get)
    values["slowest"] = values[slowest]
    values["target"] = 20000.0
    parsed = [find_spans(x, "quotes") for x in texts[:500]]
    notes = (f"{n} synthetic explanations, mean {sum(map(len, texts)) / n:.0f} chars, "
             f"{sum(len(p.outermost()) for p in parsed) / len(parsed):.1f} quote spans, "
             f"{sum(p.span_chars() / len(x) for p, x in zip(parsed, texts)) / len(parsed):.0%} chars in spans; "
             f"slowest: {slowest}; timed: each transform over all {n} texts, CPU seconds of this process "
             f"(time.process_time, one thread), no warm-up, best of 3 consecutive passes")
    ratio = values["slowest"] / values["target"]
    return [BenchResult("transform_throughput", "explanations/s (CPU time, one core)", values,
                        ("slowest", "target"), target=">= 1.0 (slowest >= 20,000/s)", passed=ratio >= 1.0,
                        notes=notes)]


@register_benchmark("surgery_scoring")
def surgery_scoring(ctx: BenchContext) -> list[BenchResult]:
    """score_variants on the redaction grid: bucketed batches of 32 vs one text per forward."""
    import numpy as np

    from nla_probe.bench.common import torch_threads
    from nla_probe.nla.checkpoint import load_ar
    from nla_probe.surgery.scoring import redaction_grid, score_variants

    ar = load_ar(ctx.ar_dir, device=ctx.device)
    n = max(ctx.n, 32)
    rng = random.Random(1)
    texts = [x[: rng.randint(100, 600)] for x in synthetic_explanations(n, seed=1)]
    vectors = np.random.default_rng(0).normal(size=(n, ar.contract.d_model)).astype(np.float32)
    grid = redaction_grid()
    score_variants(ar, texts[:2], vectors[:2], grid, denominator=1.0, on_overflow="truncate")  # warm-up
    seconds = {"bucketed32": float("inf"), "one_at_a_time": float("inf")}
    rows = 0
    for _ in range(2):  # alternate the two modes and keep the best of each (robust to other load)
        for label, bs in (("bucketed32", 32), ("one_at_a_time", 1)):
            start = time.perf_counter()
            frame = score_variants(ar, texts, vectors, grid, denominator=1.0, batch_size=bs,
                                   on_overflow="truncate")
            seconds[label] = min(seconds[label], time.perf_counter() - start)
            rows = frame.height
    values = {label: rows / s for label, s in seconds.items()}
    ratio = values["bucketed32"] / values["one_at_a_time"]
    return [BenchResult("surgery_scoring", "scored rows/s (sample x variant, wall clock)", values,
                        ("bucketed32", "one_at_a_time"), target=">= 3.0", passed=ratio >= 3.0,
                        notes=f"{n} explanations x {len(grid)} variants of the redaction grid, 100-600 chars; "
                              "both modes reconstruct each distinct text once; timed: score_variants() wall "
                              "seconds, warm-up on 2 texts excluded, best of 2 alternating runs; torch threads "
                              f"{torch_threads()}")]
