"""Core benchmark: AV decode throughput per backend at batch 1, 32 and 64, and what every
benchmark states about its timing.

``av_decode`` decodes the same ``min(ctx.n, 64)`` vectors greedily (``max_new_tokens=64``, no
hooks: each row ends at its own stop token) at batch sizes 1, 32 and 64 on every backend of
``ctx.backends``.  **New tokens/s** = generated tokens (stop token excluded, summed over the
vectors) / wall seconds of the ``verbalize`` calls.  Each batch size is warmed up once at full size
(excluded from timing); the batch sizes then alternate ``REPEATS`` times and the best rate of each
is kept.  A batch runs until its longest row stops, so batched rates count only the tokens of rows
still decoding.  With two backends, one row per batch size compares them on the same vectors and
states how many greedy decodes have identical token ids.

AR scoring throughput (length-bucketed batches vs one text at a time) is ``surgery_scoring`` in
:mod:`nla_probe.bench.surgery`; forced-length decodes (every row exactly 64 tokens) are in
``hook_ban_throughput`` (:mod:`nla_probe.bench.hooks`).
"""

from __future__ import annotations

import time

import numpy as np

from nla_probe.bench.registry import BenchContext, BenchResult, register_benchmark

#: Batch sizes of ``av_decode``.
BATCHES = (1, 32, 64)
#: Alternating repetitions per measurement (best kept).
REPEATS = 3
DECODE_TOKENS = 64


def _eval_vectors(ctx: BenchContext, d: int, n: int) -> np.ndarray:
    from nla_probe.defaults import default_eval_path

    path = default_eval_path()
    if path is not None and path.is_file():
        from nla_probe.nla.extraction import read_activations

        _, v = read_activations(path)
        if v.shape[1] == d and len(v) >= n:
            return v[:n]
    return np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)


def torch_threads() -> int:
    """Intra-op threads torch uses in this process."""
    import torch

    return int(torch.get_num_threads())


def timed(*, warmup: str, repeats: int, what: str, threads: int | None = None) -> str:
    """The standard ``timed:`` note: warm-up, repetitions, threads and the work timed."""
    th = torch_threads() if threads is None else threads
    return f"timed: {what}; warm-up {warmup}; best of {repeats} alternating runs; torch threads {th}"


def best_alternating(fns: dict[str, object], repeats: int) -> dict[str, float]:
    """Call each ``fns[label]() -> (work, seconds)`` ``repeats`` times, the order reversed every
    other round; returns ``label -> max(work / seconds)`` (the least disturbed run)."""
    best: dict[str, float] = {k: 0.0 for k in fns}
    for rep in range(repeats):
        order = list(fns) if rep % 2 == 0 else list(fns)[::-1]
        for label in order:
            work, secs = fns[label]()  # type: ignore[operator]
            best[label] = max(best[label], work / secs if secs > 0 else float("inf"))
    return best


def _decode_rates(verb, vecs: np.ndarray) -> tuple[dict[str, float], dict[int, list], dict[int, int]]:
    """``(label -> best tokens/s, batch -> decodes, batch -> tokens per pass)`` for :data:`BATCHES`."""
    decodes: dict[int, list] = {}
    for bs in BATCHES:  # warm-up: one full batch at each size, not timed
        verb.verbalize(vecs[:bs], max_new_tokens=DECODE_TOKENS, batch_size=bs)

    def run(bs: int):
        def f():
            t = time.perf_counter()
            dec = verb.verbalize(vecs, max_new_tokens=DECODE_TOKENS, batch_size=bs)
            secs = time.perf_counter() - t
            decodes[bs] = dec
            return sum(d.n_tokens for d in dec), secs
        return f

    rates = best_alternating({f"batch{bs}": run(bs) for bs in BATCHES}, REPEATS)
    return rates, decodes, {bs: sum(d.n_tokens for d in decodes[bs]) for bs in BATCHES}


_SHARED: dict = {}


def shared_verbalizer(ctx: BenchContext, backend: str):
    """``(av, verbalizer)``, loaded once per AV directory, device and backend for the whole bench
    process: a second vLLM engine in the same process would find no memory for its KV cache."""
    from nla_probe.nla.checkpoint import load_av

    key = (str(ctx.av_dir), ctx.device)
    if key not in _SHARED:
        _SHARED[key] = (load_av(ctx.av_dir, device=ctx.device), {})
    av, verbs = _SHARED[key]
    if backend not in verbs:
        verbs[backend] = av.verbalizer(backend="vllm", enforce_eager=True) if backend == "vllm" \
            else av.verbalizer(backend=backend)
    return av, verbs[backend]


@register_benchmark("av_decode")
def av_decode(ctx: BenchContext) -> list[BenchResult]:
    """Greedy new tokens/s at batch 1, 32 and 64 per backend (module doc); ``vllm`` vs ``hf`` rows
    when both backends are measured."""
    av, _ = shared_verbalizer(ctx, ctx.backends[0])
    n = max(1, min(ctx.n, 64))
    vecs = _eval_vectors(ctx, av.contract.d_model, n)
    per_backend: dict[str, tuple[dict[str, float], dict[int, list], dict[int, int]]] = {}
    results = []
    for backend in ctx.backends:
        _, verb = shared_verbalizer(ctx, backend)
        rates, decodes, tokens = _decode_rates(verb, vecs)
        per_backend[backend] = (rates, decodes, tokens)
        toks = ", ".join(f"batch {bs}: {tokens[bs]}" for bs in BATCHES)
        results.append(BenchResult(
            f"av_decode[{backend}]", f"new tokens/s (greedy, {backend}, rows end at their stop token)", rates,
            ("batch64", "batch1"),
            notes=timed(warmup="one full batch per batch size, excluded", repeats=REPEATS,
                        what=f"verbalize() of the same {n} vectors at batch 1, 32, 64, max_new_tokens="
                             f"{DECODE_TOKENS}; generated tokens per pass: {toks}")))
    if "hf" in per_backend and "vllm" in per_backend:
        for bs in BATCHES:
            hf_dec, vl_dec = per_backend["hf"][1][bs], per_backend["vllm"][1][bs]
            same = sum(a.token_ids == b.token_ids for a, b in zip(hf_dec, vl_dec))
            vals = {"vllm": per_backend["vllm"][0][f"batch{bs}"], "hf": per_backend["hf"][0][f"batch{bs}"]}
            results.append(BenchResult(
                f"av_decode[batch {bs}]", "new tokens/s (greedy)", vals, ("vllm", "hf"),
                notes=f"same {n} vectors; identical greedy token ids on {same}/{n} decodes; "
                      f"tokens hf {per_backend['hf'][2][bs]}, vllm {per_backend['vllm'][2][bs]}"))
    return results
