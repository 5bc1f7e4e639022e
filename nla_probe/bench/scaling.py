"""``nla-probe bench --scaling``: how time and memory grow with the work.

Two workloads, each size in a fresh child process (so its peak RSS is its own):

* **Default ablation suite** (:data:`nla_probe.defaults.DEFAULT_SUITE`) on the toy pair at
  ``N`` activations (default 100, 400, 1,600), report and span attribution included.  The toy
  evaluation set has 1,000 activations; beyond that its rows are repeated with the vectors scaled
  by ``1 + 1e-3 · copy`` and the documents renamed, so no decode is reused from an earlier copy.
  Timed: ``ablate()`` on an already loaded pair into a fresh directory (``load_s``, loading the
  pair, is reported apart).  ``s_per_activation = run_s / N``.
* **Copy detection** (:func:`nla_probe.copying.copy_detection`, ``spans=False``, 20 nulls) on
  ``P`` explanation–context pairs (default 10,000 and 100,000) of the synthetic corpus of
  :mod:`nla_probe.bench.copying` (``P / 21`` explanations).  ``s_per_1k_pairs = 1000 · run_s / P``.

Peak RSS is the child's ``ru_maxrss`` (MiB) at the end; ``base_rss_mib`` is the same before the
timed work (after imports, the pair and the inputs), so ``peak − base`` is what the work itself
added.  :func:`growth` turns the rows into the two checks: the per-unit cost of the largest size
over the smallest (linear cost: close to 1, or below when fixed costs are amortized) and the peak
RSS added per 1,000 units.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ABLATE_NS = (100, 400, 1600)
COPY_PAIRS = (10_000, 100_000)
N_NULL = 20


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process so far: unlike wall time, not stretched by other load."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _tiled(frame, vectors, n: int):
    """The first ``n`` rows of ``frame``/``vectors``, repeated (scaled, renamed) past their end."""
    import numpy as np
    import polars as pl

    reps, parts, vecs = -(-n // frame.height), [], []
    for k in range(reps):
        parts.append(frame.with_columns((pl.col("doc_id").cast(pl.Utf8) + (f"#{k}" if k else "")).alias("doc_id")))
        vecs.append(vectors * np.float32(1.0 + 1e-3 * k))
    return pl.concat(parts)[:n], np.concatenate(vecs)[:n]


def child_ablate(n: int, threads: int | None) -> dict:
    """Run the default suite on ``n`` activations in this process; the measurement row."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from nla_probe import defaults
    from nla_probe.ablate.engine import ablate
    from nla_probe.nla.checkpoint import load_pair
    from nla_probe.nla.extraction import read_activations

    t = time.perf_counter()
    pair = load_pair(*defaults.toy_pair_dirs())
    load_s = time.perf_counter() - t
    frame, vectors = read_activations(defaults.toy_eval_path())
    frame, vectors = _tiled(frame, vectors, n)
    base = _rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        t, c = time.perf_counter(), _cpu_s()
        result = ablate([str(p) for p in defaults.default_suite_paths()], pair, (frame, vectors), out=Path(tmp),
                        denominator=defaults.toy_denominator())
        run_s, cpu_s = time.perf_counter() - t, _cpu_s() - c
        work = _work(result)
    return {"workload": "default_suite", "n": n, "unit": "activation", "load_s": load_s, "run_s": run_s,
            "cpu_s": cpu_s, "per_unit_s": run_s / n, "cpu_per_unit_s": cpu_s / n, **work, "base_rss_mib": base,
            "peak_rss_mib": _rss_mib()}


def _work(result) -> dict:
    """Work done by a run: computed records per type summed over experiments (``computed_<type>``)
    and the mean generated tokens per row of the experiments that computed decodes
    (``mean_decode_tokens``)."""
    import polars as pl

    out: dict = {}
    for counts in result.info.get("counts", {}).values():
        for type_, c in counts.items():
            out[f"computed_{type_}"] = out.get(f"computed_{type_}", 0) + int(c.get("computed", 0))
    tokens = []
    for name in result.experiments:  # experiments that decoded (not those reusing another's decodes)
        if not result.info.get("counts", {}).get(name, {}).get("decode", {}).get("computed"):
            continue
        f = result.scan(name).collect()
        if "n_tokens" in f.columns:
            tokens.append(f["n_tokens"].cast(pl.Float64))
    if tokens:
        out["mean_decode_tokens"] = float(pl.concat(tokens).mean())
    return out


def child_copy(pairs: int) -> dict:
    """Copy detection on ``pairs`` pairs (``pairs // 21`` explanations) in this process."""
    from nla_probe.bench.copying import synthetic_corpus
    from nla_probe.copying import copy_detection

    n = max(1, pairs // (N_NULL + 1))
    expls, sources, docs = synthetic_corpus(n)
    base = _rss_mib()
    t, c = time.perf_counter(), _cpu_s()
    copy_detection(expls, sources, docs, n_null=N_NULL, seed=0, spans=False)
    run_s, cpu_s = time.perf_counter() - t, _cpu_s() - c
    done = n * (N_NULL + 1)
    return {"workload": "copy_detection", "n": done, "unit": "pair", "load_s": 0.0, "run_s": run_s,
            "cpu_s": cpu_s, "per_unit_s": run_s / done, "cpu_per_unit_s": cpu_s / done, "base_rss_mib": base,
            "peak_rss_mib": _rss_mib()}


def growth(rows: Sequence[dict]) -> dict:
    """``{"cost_ratio", "rss_growth_mib", "rss_per_1k_mib"}`` from the smallest to the largest row.

    ``cost_ratio`` = per-unit seconds at the largest size / at the smallest (1.0: exactly linear;
    below 1: fixed costs amortized); ``rss_growth_mib`` = peak RSS difference; ``rss_per_1k_mib`` =
    that difference per 1,000 additional units.
    """
    lo, hi = min(rows, key=lambda r: r["n"]), max(rows, key=lambda r: r["n"])
    extra = hi["n"] - lo["n"]
    d_rss = hi["peak_rss_mib"] - lo["peak_rss_mib"]
    return {"cost_ratio": hi["per_unit_s"] / lo["per_unit_s"], "rss_growth_mib": d_rss,
            "rss_per_1k_mib": 1000.0 * d_rss / extra if extra else 0.0}


def _child(args: list[str], log: Path | None) -> dict:
    out = subprocess.run([sys.executable, "-m", "nla_probe.bench.scaling", *args], capture_output=True, text=True,
                         check=False)
    if log is not None:
        with log.open("a", encoding="utf-8") as f:
            f.write(out.stderr[-4000:] + out.stdout)
    if out.returncode != 0:
        last = next((ln for ln in reversed(out.stderr.splitlines()) if ln.strip()), "no error output")
        raise RuntimeError(f"scaling child {' '.join(args)} failed: {last.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_scaling(ns: Sequence[int] = ABLATE_NS, pairs: Sequence[int] = COPY_PAIRS, *, threads: int | None = None,
                log: Path | None = None, echo=print) -> dict:
    """Every size of both workloads, each in a child process; ``{"default_suite": [...],
    "copy_detection": [...], "growth": {...}}``."""
    rows: dict[str, list[dict]] = {"default_suite": [], "copy_detection": []}
    for n in ns:
        rows["default_suite"].append(_child(["ablate", str(n), str(threads or 0)], log))
        echo(format_row(rows["default_suite"][-1]))
    for p in pairs:
        rows["copy_detection"].append(_child(["copy", str(p)], log))
        echo(format_row(rows["copy_detection"][-1]))
    result = {**rows, "growth": {k: growth(v) for k, v in rows.items() if len(v) > 1}, "threads": threads}
    for k, g in result["growth"].items():
        echo(f"{k}: per-unit cost largest/smallest = {g['cost_ratio']:.2f}; peak RSS +{g['rss_growth_mib']:.0f} MiB "
             f"({g['rss_per_1k_mib']:.1f} MiB per 1,000 more)")
    return result


def format_row(r: dict) -> str:
    per = (f"{r['per_unit_s']:.3f} s/{r['unit']}" if r["unit"] == "activation"
           else f"{1000 * r['per_unit_s']:.3f} s/1k {r['unit']}s")
    return (f"{r['workload']}: N={r['n']:,} {r['unit']}s  run {r['run_s']:.1f} s  {per}  "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB (before the work {r['base_rss_mib']:.0f} MiB)")


def main(argv: Sequence[str]) -> int:
    kind, size = argv[0], int(argv[1])
    row = child_ablate(size, int(argv[2]) or None) if kind == "ablate" else child_copy(size)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
