"""Grammar benchmarks: decode throughput with and without each built-in grammar, per backend, and the
per-step mask cost of each grammar as the vocabulary grows."""

from __future__ import annotations

import time

from nla_probe.bench.registry import BenchContext, BenchResult, register_benchmark

#: Generated tokens per decode; every decode is forced to exactly this length in every variant.
DECODE_TOKENS = 64
REPEATS = 5
#: Vocabulary sizes of the mask-cost scaling measurement.
SCALING_VOCABS = (4096, 32768, 151936, 262144)


def open_variants() -> dict:
    """Each built-in grammar with its closing branch removed (``scope="output"``, regex
    ``<explanation>\\n?BODY``), so that a 64-token floor never meets a completed grammar: every
    decode then has exactly ``DECODE_TOKENS`` tokens and the per-step mask is the only difference
    from the unconstrained variant (the closing tag is one branch of the same automaton)."""
    from nla_probe.hooks import Grammar
    from nla_probe.hooks.grammar_text import BUILTINS, OPEN_BODY, builtin_body

    return {name: Grammar(regex=f"{OPEN_BODY}({builtin_body(name, 'toy')})", scope="output") for name in BUILTINS}


@register_benchmark("grammar_throughput")
def grammar_throughput(ctx: BenchContext) -> list[BenchResult]:
    """Greedy new tokens/s with no grammar and with each built-in grammar, side by side, on each
    backend of ``ctx.backends`` (target: a grammar costs <= 15%, i.e. ratio >= 0.85).

    Every variant carries ``MinNewTokens(64)`` with ``max_new_tokens=64`` and the grammars are the
    open variants (:func:`open_variants`), so every decode has exactly 64 tokens.  One warm-up run
    per variant (grammar compilation is cached), then the variants alternate ``REPEATS`` times in
    rotating order and the best throughput of each is reported.
    """
    import warnings

    from nla_probe.bench.common import _eval_vectors
    from nla_probe.hooks import MinNewTokens
    from nla_probe.nla.checkpoint import load_av

    warnings.filterwarnings("ignore", message=r"grammar\(regex=.*has no '</explanation>'", category=UserWarning)
    av = load_av(ctx.av_dir, device=ctx.device)
    n = max(8, min(ctx.n, 64))
    vecs = _eval_vectors(ctx, av.contract.d_model, n)
    floor = MinNewTokens(DECODE_TOKENS)
    variants = {"none": [floor], **{k: [g, floor] for k, g in open_variants().items()}}
    results = []
    for backend in ctx.backends:
        verb = av.verbalizer(backend=backend)
        for hooks in variants.values():
            verb.verbalize(vecs, max_new_tokens=DECODE_TOKENS, hooks=hooks, batch_size=n)
        rates: dict[str, list[float]] = {k: [] for k in variants}
        labels = list(variants)
        for rep in range(REPEATS):
            for label in labels[rep % len(labels):] + labels[:rep % len(labels)]:
                t = time.perf_counter()
                dec = verb.verbalize(vecs, max_new_tokens=DECODE_TOKENS, hooks=variants[label], batch_size=n)
                rates[label].append(sum(d.n_tokens for d in dec) / (time.perf_counter() - t))
        vals = {k: max(v) for k, v in rates.items()}
        for name in labels[1:]:
            ratio = vals[name] / vals["none"]
            results.append(BenchResult(f"grammar_throughput[{backend},{name}]", f"new tokens/s (greedy, {backend})",
                                       {name: vals[name], "none": vals["none"]}, (name, "none"), target=">= 0.85",
                                       passed=ratio >= 0.85,
                                       notes=f"{n} vectors x {DECODE_TOKENS} tokens, best of {REPEATS} rotating runs"))
        del verb
    return results


def synthetic_vocab(size: int, seed: int = 0) -> list[bytes]:
    """``size`` distinct byte strings shaped like a byte-level BPE vocabulary: the 256 single bytes,
    then words and word pieces (lengths 2–12, half with a leading space) drawn from English letter
    frequencies, with some digits, punctuation, quotes and multi-byte characters."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    freq = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0, 1.9,
                     1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1])
    freq = freq / freq.sum()
    extra = list(' .,;:!?"\'()-\n0123456789') + ["\u201c", "\u201d", "\u2014", "\u00e9"]
    out: list[bytes] = [bytes([b]) for b in range(256)]
    seen = set(out)
    while len(out) < size:
        k = int(rng.integers(2, 13))
        word = "".join(rng.choice(list(letters), size=k, p=freq))
        r = rng.random()
        if r < 0.5:
            word = " " + word
        elif r < 0.6:
            word = word + str(rng.choice(extra))
        elif r < 0.65:
            word = str(rng.choice(extra)) + word
        b = word.encode("utf-8")
        if b not in seen:
            seen.add(b)
            out.append(b)
    return out[:size]


@register_benchmark("grammar_mask_scaling")
def grammar_mask_scaling(ctx: BenchContext) -> list[BenchResult]:
    """Per-row, per-step time to fill the token mask of each built-in grammar (xgrammar), on
    synthetic vocabularies of :data:`SCALING_VOCABS` tokens (no model involved), against the cost
    of applying a mask to a ``[64, V]`` logits row block.  Each measurement walks 64 steps of the
    grammar (a seeded random allowed token each step) and reports microseconds per row-step."""
    import numpy as np
    import torch
    import xgrammar as xgr

    from nla_probe.hooks import Grammar

    grammars = {k: g.ebnf_text() for k, g in open_variants().items()}
    grammars["spans_only_closed"] = Grammar(builtin="spans_only").ebnf_text()
    results = []
    for v in SCALING_VOCABS:
        vocab = synthetic_vocab(v)
        info = xgr.TokenizerInfo(vocab, vocab_type=xgr.VocabType.RAW, vocab_size=v, stop_token_ids=[0])
        comp = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        vals: dict[str, float] = {}
        compile_s: dict[str, float] = {}
        for name, ebnf in grammars.items():
            t = time.perf_counter()
            cg = comp.compile_grammar(ebnf)
            compile_s[name] = time.perf_counter() - t
            m = xgr.GrammarMatcher(cg)
            bm = xgr.allocate_token_bitmask(1, v)
            rng = np.random.default_rng(0)
            spent, steps = 0.0, 0
            for _ in range(64):
                t = time.perf_counter()
                m.fill_next_token_bitmask(bm, 0)
                spent += time.perf_counter() - t
                steps += 1
                bits = np.unpackbits(bm[0].numpy().view(np.uint8), bitorder="little")[:v]
                allowed = np.flatnonzero(bits[1:]) + 1  # token 0 is the stop token
                if len(allowed) == 0 or m.is_terminated():
                    break
                m.accept_token(int(rng.choice(allowed)))
            vals[name] = spent / steps * 1e6
        logits = torch.randn(64, v)
        mask = xgr.allocate_token_bitmask(64, v)
        t = time.perf_counter()
        for _ in range(20):
            xgr.apply_token_bitmask_inplace(logits, mask)
        vals["apply_64_rows"] = (time.perf_counter() - t) / 20 * 1e6
        results.append(BenchResult(f"grammar_mask_scaling[{v}]", "µs per row-step to fill the mask (apply: per step, "
                                   "64 rows)", vals, ("spans_only", "apply_64_rows"),
                                   notes="compile s: " + ", ".join(f"{k}={s:.2f}" for k, s in compile_s.items())))
    return results
