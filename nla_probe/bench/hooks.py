"""Hook benchmark: AV decode throughput with and without a two-family character ban, per backend."""

from __future__ import annotations

import time

from nla_probe.bench.registry import BenchContext, BenchResult, register_benchmark

#: Generated tokens per decode; every decode is forced to exactly this length in both variants.
DECODE_TOKENS = 64
REPEATS = 9


@register_benchmark("hook_ban_throughput")
def hook_ban_throughput(ctx: BenchContext) -> list[BenchResult]:
    """Greedy new tokens/s with ``BanChars(double_quotes, single_quotes)`` vs no ban, on each
    backend of ``ctx.backends`` (target: the ban costs <= 5%, i.e. ratio >= 0.95).

    Both variants carry ``MinNewTokens(64)`` with ``max_new_tokens=64``, so every decode has
    exactly 64 tokens and the ban is the only difference.  The ban set is resolved during the
    warm-up (one full-size run of each variant; the set is cached per tokenizer); the variants then
    alternate ``REPEATS`` times and the best throughput of each is reported (the least disturbed
    run, as ``timeit`` does: on a shared machine the median mostly measures the neighbours).
    """
    from nla_probe.bench.common import _eval_vectors, shared_verbalizer, timed
    from nla_probe.hooks import BanChars, MinNewTokens

    av, _ = shared_verbalizer(ctx, ctx.backends[0])
    n = max(8, min(ctx.n, 64))
    vecs = _eval_vectors(ctx, av.contract.d_model, n)
    floor = MinNewTokens(DECODE_TOKENS)
    ban = BanChars(families=("double_quotes", "single_quotes"))
    variants = {"no_ban": [floor], "ban": [ban, floor]}
    results = []
    for backend in ctx.backends:
        _, verb = shared_verbalizer(ctx, backend)
        for hooks in variants.values():  # warm-up at full size; resolves and caches the ban set
            verb.verbalize(vecs, max_new_tokens=DECODE_TOKENS, hooks=hooks, batch_size=n)
        rates: dict[str, list[float]] = {k: [] for k in variants}
        for rep in range(REPEATS):
            order = list(variants) if rep % 2 == 0 else list(variants)[::-1]
            for label in order:
                t = time.perf_counter()
                dec = verb.verbalize(vecs, max_new_tokens=DECODE_TOKENS, hooks=variants[label], batch_size=n)
                rates[label].append(sum(d.n_tokens for d in dec) / (time.perf_counter() - t))
        vals = {k: max(v) for k, v in rates.items()}
        n_ids = ban.ban_set(verb.hook_context(_sampling())).count
        ratio = vals["ban"] / vals["no_ban"]
        results.append(BenchResult(f"hook_ban_throughput[{backend}]",
                                   f"new tokens/s (greedy, {backend}, every row forced to {DECODE_TOKENS} tokens)",
                                   vals,
                                   ("ban", "no_ban"), target=">= 0.95", passed=ratio >= 0.95,
                                   notes=timed(warmup="one full run per variant, excluded", repeats=REPEATS,
                                               what=f"verbalize() of {n} vectors at batch {n}, {n} x {DECODE_TOKENS} = "
                                                    f"{n * DECODE_TOKENS} tokens per pass (stop ids blocked until "
                                                    f"{DECODE_TOKENS})")
                                         + f"; ban = double+single quotes ({n_ids} token ids)"))
    return results


def _sampling():
    from nla_probe.nla.generation import Sampling

    return Sampling(max_new_tokens=DECODE_TOKENS)
