"""Ablation engine benchmarks: the cost of the engine over direct calls (``ablate_overhead``), and
what a resumed run saves (``ablate_resume``)."""

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


#: Activations of the large ``ablate_overhead`` case.
LARGE_N = 1000
REPEATS = 3


def _cpu_min(cpu: dict | None, label: str, seconds: float) -> None:
    if cpu is not None:
        cpu[label] = min(cpu.get(label, float("inf")), seconds)


def _direct(pair, vecs, cpu: dict | None = None):
    """The work of a one-condition roundtrip spec, as direct calls: greedy decode + AR scoring.
    ``cpu["direct"]`` receives the least CPU seconds of this process over the calls."""
    def run():
        t, c = time.perf_counter(), time.process_time()
        decs = pair.verbalizer().verbalize(vecs, max_new_tokens=32, batch_size=32)
        pair.reconstructor().reconstruct([d.explanation for d in decs], batch_size=32, on_overflow="truncate")
        _cpu_min(cpu, "direct", time.process_time() - c)
        return 1.0, time.perf_counter() - t
    return run


def _engine(pair, frame, vecs, *, report: bool, attribution_rows: int = 0, record: dict | None = None,
            cpu: dict | None = None):
    """``ablate`` on a fresh directory, then ``summary()``; ``record`` receives the report and
    attribution seconds of the last call (timed apart from the run), ``cpu["ablate"]`` the least
    CPU seconds of this process."""
    from nla_probe.ablate.engine import ablate

    def run():
        with tempfile.TemporaryDirectory() as tmp:
            t, c = time.perf_counter(), time.process_time()
            result = ablate(_spec(len(vecs)), pair, (frame, vecs), out=Path(tmp), batch_size=32, report=False,
                            attribution_rows=0)
            result.summary()
            secs = time.perf_counter() - t
            if report:
                t = time.perf_counter()
                result.write_report()
                if record is not None:
                    record["report_s"] = time.perf_counter() - t
                secs += time.perf_counter() - t
            _cpu_min(cpu, "ablate", time.process_time() - c)
            if record is not None and attribution_rows:
                from nla_probe.ablate.attribution import attribute_run

                t = time.perf_counter()
                attribute_run(result, pair.reconstructor(), lambda ids: vecs[ids], max_rows=attribution_rows)
                record["attribution_s"] = time.perf_counter() - t
        return 1.0, secs
    return run


@register_benchmark("ablate_overhead")
def ablate_overhead(ctx: BenchContext) -> list[BenchResult]:
    """Seconds for the same greedy decode + AR scoring: direct calls vs ``ablate`` (content keys,
    per-chunk fsynced store, parquet results, statistics) on a fresh output directory.

    * ``max(ctx.n, 32)`` activations, no report: target <= 1.25.
    * :data:`LARGE_N` activations with ``report.md``, its figures and ``report.html`` (the report is
      written by ``write_report`` right after the run, as ``ablate(report=True)`` does): target <= 1.1.

    Span attribution (leave-one-out AR passes on up to 100 activations per experiment,
    :mod:`nla_probe.ablate.attribution`) is extra AR work, not bookkeeping: both cases run with
    ``attribution_rows=0`` and its seconds are printed apart.  Warm-up: one small run of every
    variant (models, imports of pyarrow, scipy, plotnine), excluded; then the variants alternate and
    the least time of each is kept.
    """
    from nla_probe.bench.common import best_alternating, timed, torch_threads
    from nla_probe.nla.checkpoint import load_pair

    pair = load_pair(ctx.av_dir, ctx.ar_dir, device=ctx.device)
    n = max(ctx.n, 32)
    frame, vecs = _data(ctx, pair.contract.d_model, max(n, LARGE_N))
    small = (frame[:8], vecs[:8])
    _direct(pair, small[1])()  # warm-up
    extra: dict = {}
    _engine(pair, *small, report=True, attribution_rows=8, record=extra)()
    results = []
    for size, report, target, reps in ((n, False, 1.25, REPEATS), (LARGE_N, True, 1.1, REPEATS)):
        f, v = frame[:size], vecs[:size]
        rec: dict = {}
        cpu: dict = {}
        rates = best_alternating({"direct": _direct(pair, v, cpu),
                                  "ablate": _engine(pair, f, v, report=report, record=rec, cpu=cpu)}, reps)
        secs = {"ablate": 1.0 / rates["ablate"], "direct": 1.0 / rates["direct"]}
        ratio = secs["ablate"] / secs["direct"]
        what = (f"{size} activations, greedy, max_new_tokens=32, batch 32; ablate = run + summary()"
                + (f" + report.md, figures and report.html (last report {rec.get('report_s', float('nan')):.2f} s)"
                   if report else ", no report") + ", attribution_rows=0; the ratio is of wall seconds (fsync "
                f"waits count); of CPU seconds of this process it is {cpu['ablate'] / cpu['direct']:.3f}")
        results.append(BenchResult(f"ablate_overhead[{size}]", "seconds (lower is better)", secs, ("ablate", "direct"),
                                   target=f"<= {target}", passed=ratio <= target,
                                   notes=timed(warmup="one 8-activation run of each variant, excluded", repeats=reps,
                                               what=what)))
    att: dict = {}
    f, v = frame[:n], vecs[:n]
    _engine(pair, f, v, report=False, attribution_rows=n, record=att)()
    secs = {"attribution": att["attribution_s"], "direct": results[0].values["direct"]}
    results.append(BenchResult(f"ablate_attribution[{n}]", "seconds (extra AR work, lower is better)", secs,
                               ("attribution", "direct"),
                               notes=f"span attribution of all {n} activations (the default caps it at 100 per "
                                     "experiment): one AR pass per distinct edited text; not engine overhead; "
                                     f"torch threads {torch_threads()}"))
    return results


@register_benchmark("ablate_resume")
def ablate_resume(ctx: BenchContext) -> list[BenchResult]:
    """Seconds for a fresh run vs the same command rerun into the same directory (all work reused)."""
    from nla_probe.ablate.engine import ablate
    from nla_probe.bench.common import timed
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
                        passed=ratio <= 0.25,
                        notes=timed(warmup="none (the fresh run is the first run in its directory)", repeats=1,
                                    what=f"ablate() of {n} vectors, greedy, max_new_tokens=32, batch 32, no report, "
                                         "default span attribution; rerun = the same call into the same directory"))]
