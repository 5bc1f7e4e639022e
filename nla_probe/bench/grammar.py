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


#: A character class that matches nothing: an open variant can never be completed.
NO_END = r"[^\s\S]"


def open_variants() -> dict:
    """Each built-in grammar with its ending replaced by :data:`NO_END` (``scope="output"``, regex
    ``<explanation>\\n?(BODY)[^\\s\\S]``): the body is unchanged and can always go on, the stop token
    is never allowed, so every decode runs to the length cap — exactly ``DECODE_TOKENS`` tokens —
    without a floor, and the per-step mask is the only difference from the unconstrained variant.
    (A floor would not do: vLLM's ``min_tokens`` adds a full-vocabulary pass per step to requests
    with structured outputs, which would be charged to the grammar.)  The checks before decoding
    would refuse a grammar without an end, so these benchmark-only variants skip them."""
    from dataclasses import dataclass

    from nla_probe.hooks import Grammar
    from nla_probe.hooks.grammar_text import BUILTINS, OPEN_BODY, builtin_body

    @dataclass(frozen=True)
    class OpenGrammar(Grammar):
        def preflight(self, hooks, ctx) -> None:  # no end by design (see above)
            return None

    return {name: OpenGrammar(regex=f"{OPEN_BODY}({builtin_body(name, 'toy')}){NO_END}", scope="output")
            for name in BUILTINS}


@register_benchmark("grammar_throughput")
def grammar_throughput(ctx: BenchContext) -> list[BenchResult]:
    """Greedy new tokens/s with no grammar and with each built-in grammar, side by side, on each
    backend of ``ctx.backends`` (target: a grammar costs <= 15%, i.e. ratio >= 0.85).

    The unconstrained variant carries ``MinNewTokens(64)`` with ``max_new_tokens=64``; the grammars
    are the open variants (:func:`open_variants`), which cannot end before the cap; every decode has
    exactly 64 tokens.  One warm-up run
    per variant (grammar compilation is cached), then the variants alternate ``REPEATS`` times in
    rotating order and the best throughput of each is reported.
    """
    from nla_probe.bench.common import _eval_vectors, shared_verbalizer, torch_threads
    from nla_probe.hooks import MinNewTokens

    av, _ = shared_verbalizer(ctx, ctx.backends[0])  # one vLLM engine per process, shared with av_decode
    n = max(8, min(ctx.n, 64))
    vecs = _eval_vectors(ctx, av.contract.d_model, n)
    floor = MinNewTokens(DECODE_TOKENS)
    variants = {"none": [floor], **{k: [g] for k, g in open_variants().items()}}
    results = []
    for backend in ctx.backends:
        _, verb = shared_verbalizer(ctx, backend)
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
                                       notes=f"{n} vectors x {DECODE_TOKENS} tokens, best of {REPEATS} rotating runs; "
                                             f"timed: verbalize() at batch {n}, warm-up one run per variant excluded; "
                                             f"torch threads {torch_threads()}"))
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


#: A representative explanation per built-in grammar (each accepted by it), walked token by token.
WALK_TEXTS = {
    "spans_only": '<explanation>\n"The phrase" "signals" "a legal clause", "with numbered items". "Final token" '
                  '"opens"; "likely" "the", "a".\n</explanation>',
    "scaffold_spans": '<explanation>\nToken "ing" after "birds were sing".\n\n"A satirical definition", "early".'
                      '\n\n"A word piece".\n</explanation>',
    "no_delimiters": "<explanation>\nThe text is a satirical dictionary entry with a headword and a part of speech, "
                     "early in the text. The final token opens a word piece, likely continuing the verb.\n"
                     "</explanation>",
}


def greedy_tokenize(index: dict, data: bytes) -> list[int]:
    """Longest-match tokenisation of ``data`` over a vocabulary ``{bytes: id}`` holding every single byte."""
    out, i = [], 0
    longest = max(len(t) for t in index)
    while i < len(data):
        for k in range(min(longest, len(data) - i), 0, -1):
            j = index.get(data[i:i + k])
            if j is not None:
                out.append(j)
                i += k
                break
    return out


def walk_masks(compiled, ids: list[int], vocab_size: int) -> tuple[float, list]:
    """Walk a compiled grammar through ``ids``: ``(seconds spent filling masks, the mask before
    each token)``, each mask an int32 tensor of ``ceil(vocab_size / 32)`` words (bit set = allowed).
    Raises if the grammar rejects a token of the walk."""
    import xgrammar as xgr

    m = xgr.GrammarMatcher(compiled)
    bm = xgr.allocate_token_bitmask(1, vocab_size)
    spent, masks = 0.0, []
    for pos, tok in enumerate(ids):
        t = time.perf_counter()
        m.fill_next_token_bitmask(bm, 0)
        spent += time.perf_counter() - t
        masks.append(bm[0].clone())
        if not m.accept_token(tok):
            raise RuntimeError(f"grammar walk: token {tok} at position {pos} was rejected")
    return spent, masks


def apply_seconds(masks: list, vocab_size: int, rows: int = 64, repeats: int = 20) -> float:
    """Seconds per call to apply ``rows`` masks (``masks`` cycled) to ``[rows, vocab_size]`` float32
    logits on the CPU with xgrammar's kernel; one warm-up call, then the mean of ``repeats``."""
    import torch
    import xgrammar as xgr

    logits = torch.randn(rows, vocab_size)
    mask = torch.stack([masks[i % len(masks)] for i in range(rows)])
    xgr.apply_token_bitmask_inplace(logits, mask)
    t = time.perf_counter()
    for _ in range(repeats):
        xgr.apply_token_bitmask_inplace(logits, mask)
    return (time.perf_counter() - t) / repeats


@register_benchmark("grammar_mask_scaling")
def grammar_mask_scaling(ctx: BenchContext) -> list[BenchResult]:
    """Per-row, per-step time to fill the token mask of each built-in grammar (xgrammar, one thread)
    on synthetic vocabularies of :data:`SCALING_VOCABS` tokens (no model involved), and the time to
    apply a mask to ``[64, V]`` logits.  Each grammar walks its :data:`WALK_TEXTS` explanation token
    by token (longest-match tokenisation); the value is the mean over the walk's steps, in µs.  The
    apply time uses real masks: the ``spans_only`` walk's masks, one per step, cycled to 64 rows
    (xgrammar's CPU kernel skips 32-token words that allow every token, so an all-allowed mask
    would time almost nothing)."""
    import numpy as np
    import xgrammar as xgr

    from nla_probe.hooks import Grammar

    grammars = {name: Grammar(builtin=name, scaffold="toy" if name == "scaffold_spans" else "").ebnf_text()
                for name in WALK_TEXTS}  # the real (closed) grammars
    results = []
    for v in SCALING_VOCABS:
        vocab = [b"<|stop|>"] + synthetic_vocab(v)[1:]  # id 0 is the stop token
        index = {t: i for i, t in enumerate(vocab) if i}
        info = xgr.TokenizerInfo(vocab, vocab_type=xgr.VocabType.RAW, vocab_size=v, stop_token_ids=[0])
        comp = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        vals: dict[str, float] = {}
        compile_s: dict[str, float] = {}
        masks: dict[str, list] = {}
        for name, ebnf in grammars.items():
            t = time.perf_counter()
            cg = comp.compile_grammar(ebnf)
            compile_s[name] = time.perf_counter() - t
            ids = greedy_tokenize(index, WALK_TEXTS[name].encode("utf-8"))
            walks = [walk_masks(cg, ids, v) for _ in range(2)]  # the second walk sees warm caches
            vals[name] = min(spent for spent, _ in walks) / len(ids) * 1e6
            masks[name] = walks[-1][1]
        vals["apply_64_rows"] = apply_seconds(masks["spans_only"], v, rows=64) * 1e6
        vals["fill_64_rows_spans_only"] = 64 * vals["spans_only"]
        results.append(BenchResult(f"grammar_mask_scaling[{v}]", "µs per row-step to fill the mask (apply_64_rows: "
                                   "µs per step to apply 64 rows of spans_only walk masks; fill_64_rows_spans_only: "
                                   "64 x spans_only)", vals, ("apply_64_rows", "fill_64_rows_spans_only"),
                                   notes="compile s: " + ", ".join(f"{k}={x:.2f}" for k, x in compile_s.items())
                                         + f"; {np.mean([len(t) for t in WALK_TEXTS.values()]):.0f}-character walks"))
    return results
