"""Runs the registered benchmarks and prints one table of side-by-side ratios."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from nla_probe.bench.registry import (
    BenchContext,
    BenchResult,
    get_benchmark,
    load_benchmarks,
)


def default_pair() -> tuple[Path, Path]:
    """The embedded toy pair if it is installed, else a fixture pair written to a temp dir."""
    from nla_probe.toy.fixtures import default_pair_dirs

    return default_pair_dirs()


def machine_line(threads: int | None = None) -> str:
    """CPU count, load averages and torch threads: the conditions the numbers were taken under."""
    import os

    from nla_probe.bench.common import torch_threads

    try:
        load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    th = threads or torch_threads()
    return f"machine: {os.cpu_count()} CPUs, load average (1/5/15 min) {load}, torch threads {th}"


def vllm_mode_line() -> str:
    """How vLLM's engine runs in this process: its default multi-process mode (engine core in a
    child process) or in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``).  The two give different
    per-step costs on a CPU (docs/hooks.md, "Grammars")."""
    import os

    flag = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    if flag is not None and flag.strip().lstrip("-").isdigit() and int(flag) == 0:  # vLLM reads bool(int(...))
        return f"vLLM engine: in-process (VLLM_ENABLE_V1_MULTIPROCESSING={flag})"
    return f"vLLM engine: multi-process (VLLM_ENABLE_V1_MULTIPROCESSING={flag if flag is not None else 'unset'})"


def format_result(r: BenchResult, escape=lambda s: s) -> str:
    """Rich markup of one result: values, ratio against its target, then what was timed."""
    ok = "" if r.passed is None else ("  [green]ok[/green]" if r.passed else "  [red]BELOW TARGET[/red]")
    vals = "  ".join(f"{k}={v:,.3g}" if abs(v) < 10 else f"{k}={v:,.1f}" for k, v in r.values.items())
    target = f"  target {r.target}" if r.target else ""
    return (escape(f"- {r.name}: {r.metric}: {vals}\n    ratio {r.ratio_of[0]}/{r.ratio_of[1]} = "
                   f"{r.ratio:.3f}{target}") + ok + (escape(f"\n    {r.notes}") if r.notes else ""))


def run_benchmarks(*, av: Path | None = None, ar: Path | None = None, n: int = 64, only: Sequence[str] | None = None,
                   backends: tuple[str, ...] = ("hf",), device: str = "cpu", out: Path | None = None,
                   threads: int | None = None, startup: bool = True) -> list[BenchResult]:
    """Run the benchmarks named in ``only`` (default: all) and print one table.

    ``threads`` sets torch's intra-op threads first (None: torch's default).  The header states the
    machine's load and the start-up times (:mod:`nla_probe.bench.startup`) unless ``startup=False``.
    """
    from rich.console import Console
    from rich.markup import escape

    from nla_probe.bench.startup import format_startup, startup_times

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if av is None or ar is None:
        d_av, d_ar = default_pair()
        av, ar = av or d_av, ar or d_ar
    ctx = BenchContext(av_dir=Path(av), ar_dir=Path(ar), n=n, device=device, backends=backends)
    names = list(only) if only else list(load_benchmarks())
    fns = {name: get_benchmark(name) for name in names}  # unknown names fail before anything is timed
    results: list[BenchResult] = []
    console = Console()
    before = machine_line()
    start = startup_times() if startup else None
    console.print(f"[bold]nla-probe bench[/bold]  AV {escape(str(av))}  AR {escape(str(ar))}  n={n}")
    console.print(before, markup=False)
    if "vllm" in backends:
        console.print(vllm_mode_line(), markup=False)
    if start is not None:
        console.print(format_startup(start), markup=False)
    for name in names:  # each benchmark's rows are printed as soon as it ends
        console.print(f"[bold]{name}[/bold] ...")
        rows = fns[name](ctx)
        results.extend(rows)
        for r in rows:
            console.print(format_result(r, escape))
    console.print(f"{machine_line()} (at the end)", markup=False)
    if out is not None:
        rows = [{**asdict(r), "ratio": r.ratio} for r in results]
        out.write_text(json.dumps({"machine": {"before": before, "after": machine_line(),
                                               "vllm": vllm_mode_line() if "vllm" in backends else None},
                                   "startup": start,
                                   "results": rows}, indent=2))
    return results
