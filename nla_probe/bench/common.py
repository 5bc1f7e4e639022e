"""Core benchmark: AV decode throughput (batched vs one vector at a time).

AR scoring throughput (length-bucketed batches vs one text at a time) is ``surgery_scoring`` in
:mod:`nla_probe.bench.surgery`."""

from __future__ import annotations

import time

import numpy as np

from nla_probe.bench.registry import BenchContext, BenchResult, register_benchmark


def _eval_vectors(ctx: BenchContext, d: int, n: int) -> np.ndarray:
    from nla_probe.defaults import default_eval_path

    path = default_eval_path()
    if path is not None and path.is_file():
        from nla_probe.nla.extraction import read_activations

        _, v = read_activations(path)
        if v.shape[1] == d and len(v) >= n:
            return v[:n]
    return np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)


@register_benchmark("av_decode")
def av_decode(ctx: BenchContext) -> list[BenchResult]:
    """Greedy decode throughput (new tokens/s): batch of 32 vs one vector at a time."""
    from nla_probe.nla.checkpoint import load_av

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
