"""Core benchmarks: AV decode throughput and AR scoring (length-bucketed batches vs one at a time)."""

from __future__ import annotations

import time

import numpy as np

from ..bench_registry import BenchContext, BenchResult, register_benchmark


def _eval_vectors(ctx: BenchContext, d: int, n: int) -> np.ndarray:
    from ..defaults import default_eval_path

    path = default_eval_path()
    if path is not None and path.is_file():
        from ..extraction import read_activations

        _, v = read_activations(path)
        if v.shape[1] == d and len(v) >= n:
            return v[:n]
    return np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)


@register_benchmark("av_decode")
def av_decode(ctx: BenchContext) -> list[BenchResult]:
    """Greedy decode throughput (new tokens/s): batch of 32 vs one vector at a time."""
    from ..checkpoint import load_av

    av = load_av(ctx.av_dir, device=ctx.device)
    n = min(ctx.n, 64)
    vecs = _eval_vectors(ctx, av.contract.d_model, n)
    verb = av.verbalizer()
    verb.verbalize(vecs[:2], max_new_tokens=8)  # warm-up
    vals = {}
    for label, bs, m in (("batched32", 32, n), ("one_at_a_time", 1, max(4, n // 8))):
        t = time.perf_counter()
        dec = verb.verbalize(vecs[:m], max_new_tokens=64, batch_size=bs)
        vals[label] = sum(d.n_tokens for d in dec) / (time.perf_counter() - t)
    return [BenchResult("av_decode", "new tokens/s (greedy, hf)", vals, ("batched32", "one_at_a_time"),
                        notes=f"{n} vectors batched, {max(4, n // 8)} singly, max_new_tokens=64")]


@register_benchmark("ar_scoring")
def ar_scoring(ctx: BenchContext) -> list[BenchResult]:
    """AR throughput (texts/s): length-bucketed batches of 32 vs one text at a time."""
    from ..checkpoint import load_ar

    ar = load_ar(ctx.ar_dir, device=ctx.device)
    rng = np.random.default_rng(0)
    words = "the a budget \"quoted\" (aside) token genre dictionary hacker 'single' prose word".split()
    n = max(ctx.n, 64)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(10, 120)))) for _ in range(n)]
    ar.reconstruct(texts[:4])
    vals = {}
    for label, bs in (("bucketed32", 32), ("one_at_a_time", 1)):
        t = time.perf_counter()
        ar.reconstruct(texts, batch_size=bs, on_overflow="truncate")
        vals[label] = n / (time.perf_counter() - t)
    ratio = vals["bucketed32"] / vals["one_at_a_time"]
    return [BenchResult("ar_scoring", "texts/s", vals, ("bucketed32", "one_at_a_time"), target=">= 3.0",
                        passed=ratio >= 3.0, notes=f"{n} texts of 10-120 words")]
