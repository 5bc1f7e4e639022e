"""Ablation engine benchmarks: the cost of the resumable store, and what a resumed run saves."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from nla_probe.bench.registry import BenchContext, BenchResult, register_benchmark


def _spec(n: int, max_new_tokens: int = 32):
    from nla_probe.ablate.spec import Spec

    return Spec.from_dict({"n": n, "experiment": {"name": "bench", "kind": "roundtrip"},
                           "sampling": {"max_new_tokens": max_new_tokens}, "metrics": {"n_boot": 200},
                           "conditions": [{"name": "free"}]})


def _data(ctx: BenchContext, d: int, n: int):
    import polars as pl

    from nla_probe.bench.common import _eval_vectors

    v = _eval_vectors(ctx, d, n)
    return pl.DataFrame({"doc_id": [f"d{i // 4}" for i in range(n)]}), v


@register_benchmark("ablate_overhead")
def ablate_overhead(ctx: BenchContext) -> list[BenchResult]:
    """Seconds for the same greedy decode + AR scoring: direct calls vs ``ablate`` (content keys,
    fsynced store, parquet results, statistics) on a fresh output directory."""
    from nla_probe.ablate.engine import ablate
    from nla_probe.nla.checkpoint import load_pair

    pair = load_pair(ctx.av_dir, ctx.ar_dir, device=ctx.device)
    n = max(ctx.n, 32)
    frame, vecs = _data(ctx, pair.contract.d_model, n)
    pair.verbalizer().verbalize(vecs[:2], max_new_tokens=4)  # warm-up: models, imports (pyarrow, scipy)
    with tempfile.TemporaryDirectory() as tmp:
        ablate(_spec(8, 4), pair, (frame[:8], vecs[:8]), out=Path(tmp), batch_size=8, report=False).summary()
    t = time.perf_counter()
    decs = pair.verbalizer().verbalize(vecs, max_new_tokens=32, batch_size=32)
    pair.reconstructor().reconstruct([d.explanation for d in decs], batch_size=32, on_overflow="truncate")
    direct = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        result = ablate(_spec(n), pair, (frame, vecs), out=Path(tmp), batch_size=32, report=False)
        result.summary()
        engine = time.perf_counter() - t
    ratio = engine / direct
    return [BenchResult("ablate_overhead", "seconds (lower is better)", {"ablate": engine, "direct": direct},
                        ("ablate", "direct"), target="<= 1.25", passed=ratio <= 1.25,
                        notes=f"{n} vectors, greedy, max_new_tokens=32, batch 32; ablate includes the summary")]


@register_benchmark("ablate_resume")
def ablate_resume(ctx: BenchContext) -> list[BenchResult]:
    """Seconds for a fresh run vs the same command rerun into the same directory (all work reused)."""
    from nla_probe.ablate.engine import ablate
    from nla_probe.nla.checkpoint import load_pair

    pair = load_pair(ctx.av_dir, ctx.ar_dir, device=ctx.device)
    n = max(ctx.n, 32)
    frame, vecs = _data(ctx, pair.contract.d_model, n)
    vals = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("fresh", "rerun"):
            t = time.perf_counter()
            ablate(_spec(n), pair, (frame, vecs), out=Path(tmp), batch_size=32, report=False)
            vals[label] = time.perf_counter() - t
    ratio = vals["rerun"] / vals["fresh"]
    return [BenchResult("ablate_resume", "seconds (lower is better)", vals, ("rerun", "fresh"), target="<= 0.25",
                        passed=ratio <= 0.25, notes=f"{n} vectors, greedy, max_new_tokens=32, batch 32")]
