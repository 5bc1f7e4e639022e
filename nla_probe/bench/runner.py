"""Runs the registered benchmarks and prints one table of side-by-side ratios."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from nla_probe.bench.registry import BenchContext, BenchResult, get_benchmark, load_benchmarks


def default_pair() -> tuple[Path, Path]:
    """The embedded toy pair if it is installed, else a fixture pair written to a temp dir."""
    from nla_probe.toy.fixtures import default_pair_dirs

    return default_pair_dirs()


def run_benchmarks(*, av: Path | None = None, ar: Path | None = None, n: int = 64, only: Sequence[str] | None = None,
                   backends: tuple[str, ...] = ("hf",), device: str = "cpu", out: Path | None = None) -> list[BenchResult]:
    from rich.console import Console

    if av is None or ar is None:
        d_av, d_ar = default_pair()
        av, ar = av or d_av, ar or d_ar
    ctx = BenchContext(av_dir=Path(av), ar_dir=Path(ar), n=n, device=device, backends=backends)
    names = list(only) if only else list(load_benchmarks())
    results: list[BenchResult] = []
    console = Console()
    for name in names:
        console.print(f"[bold]{name}[/bold] ...")
        results.extend(get_benchmark(name)(ctx))
    console.print(f"\n[bold]nla-probe bench[/bold]  AV {av}  AR {ar}  n={n}")
    for r in results:
        ok = "" if r.passed is None else ("  [green]ok[/green]" if r.passed else "  [red]BELOW TARGET[/red]")
        vals = "  ".join(f"{k}={v:,.1f}" for k, v in r.values.items())
        target = f"  target {r.target}" if r.target else ""
        console.print(f"- {r.name}: {r.metric}: {vals}\n    ratio {r.ratio_of[0]}/{r.ratio_of[1]} = "
                      f"{r.ratio:.3f}{target}{ok}" + (f"\n    {r.notes}" if r.notes else ""))
    if out is not None:
        out.write_text(json.dumps([{**asdict(r), "ratio": r.ratio} for r in results], indent=2))
    return results
