"""``nla-probe ablate`` / ``report`` / ``merge``: run ablation specs, rebuild reports, join shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from nla_probe import defaults


def _backend_options(items: Optional[list[str]]) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--backend-opt: expected KEY=VALUE, found {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def parse_denominator(value: Optional[str]) -> float | str | None:
    """``--denominator``: a number, else a registered name (resolved and checked by the metrics)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _print_summary(result) -> None:
    s = result.summary()
    if s.height == 0:
        return
    for name in result.experiments:
        part = s.filter(s["experiment"] == name)
        if part.height == 0:
            continue
        metric = part["metric"][0]
        typer.echo(f"{name} ({metric}, mean [95% CI], n; Δ vs baseline, BH-adjusted p):")
        for r in part.iter_rows(named=True):
            line = f"  {r['condition']:<24} {r['estimate']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] n={r['n']}"
            if r["diff"] is not None:
                line += f"   Δ {r['diff']:+.3f}  p_bh={r['p_bh']:.2g}"
            typer.echo(line)


def ablate(
    specs: Annotated[Optional[list[str]], typer.Argument(
        help="Spec files (TOML) or spec names under ablations/. Default: the default suite "
             f"({', '.join(defaults.DEFAULT_SUITE)}; first {defaults.DEFAULT_SUITE_LIMIT} activations "
             "unless --limit).")] = None,
    av: Annotated[Optional[Path], typer.Option(help="AV checkpoint directory (default: the embedded toy pair).")] = None,
    ar: Annotated[Optional[Path], typer.Option(help="AR checkpoint directory (with --av).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Activation parquet (default: the toy evaluation set).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output directory; rerunning into it resumes. "
                                                "Default: runs/ablate.")] = None,
    backend: Annotated[str, typer.Option(help="Generation backend: hf or vllm.")] = "hf",
    device: Annotated[str, typer.Option(help="torch device (cpu, cuda, cuda:N), or auto: accelerate device map over the visible GPUs.")] = "cpu",
    dtype: Annotated[Optional[str], typer.Option(help="bfloat16|float16|float32 (default: bf16 on CUDA, fp32 on CPU).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use at most the first N activations (per spec).")] = None,
    shard: Annotated[Optional[str], typer.Option(help="Run shard i of n ('i/n'; whole documents per shard).")] = None,
    batch_size: Annotated[int, typer.Option(help="Activations per chunk (generation/AR batch, resume unit).")] = 32,
    denominator: Annotated[Optional[str], typer.Option(
        help="FVE denominator for every spec: a number or a registered name (default: the toy's training "
             "constant on an embedded toy pair, else the spec's).")] = None,
    backend_opt: Annotated[Optional[list[str]], typer.Option(
        help="Backend option KEY=VALUE (repeatable), e.g. tensor_parallel_size=4 for vllm.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch CPU threads (>= 1).",
                                                   show_default="torch's own: one per physical CPU core")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Store results only (e.g. on shards).")] = False,
    attribution_rows: Annotated[int, typer.Option(
        help="Activations per experiment whose spans and sentences get a leave-one-out ΔFVE for "
             "report.html (0: none).")] = 100,
) -> None:
    """Run ablation experiments: decode, edit, reconstruct, score; write results, statistics, report.md, report.html."""
    from nla_probe.ablate.engine import ablate as run
    from nla_probe.errors import InputError

    if (av is None) != (ar is None):
        raise InputError("--av and --ar: give both checkpoint directories or neither (neither = the toy pair)")
    spec_args = list(specs) if specs else [str(p) for p in defaults.default_suite_paths()]
    if not specs and limit is None:
        limit = defaults.DEFAULT_SUITE_LIMIT
        typer.echo(f"default suite {', '.join(defaults.DEFAULT_SUITE)} on the first {limit} activations "
                   "(--limit N to change)")
    from nla_probe.ablate.spec import load_spec

    loaded = [load_spec(s) for s in spec_args]  # validate every spec before any work
    denom = parse_denominator(denominator)
    if av is None:
        if not defaults.toy_pair_present():
            raise InputError(f"the toy pair is not built ({defaults.TOY_DIR / defaults.TOY_FAMILY}); build it with "
                             "`nla-probe toy build` or pass --av, --ar and --data")
        pair = defaults.toy_pair_dirs()
        data = data if data is not None else defaults.toy_eval_path()
    else:
        pair = (av, ar)
        if data is None:
            raise InputError("--data: an activation parquet is required with --av/--ar")
    if denom is None:
        denom = defaults.toy_denominator_for(pair[1])
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    out = out if out is not None else defaults.DEFAULT_ABLATE_OUT
    result = run(loaded, pair, data, out=out, backend=backend, device=device, dtype=dtype,
                 backend_options=_backend_options(backend_opt), limit=limit, shard=shard, batch_size=batch_size,
                 denominator=denom, progress=True, report=not no_report, attribution_rows=attribution_rows)
    if not no_report:
        _print_summary(result)
    totals: dict[str, list[int]] = {}
    for per_exp in result.info.get("counts", {}).values():
        for step, c in per_exp.items():
            t = totals.setdefault(step, [0, 0])
            t[0] += c.get("computed", 0)
            t[1] += c.get("reused", 0)
    work = "; ".join(f"{step} rows: {c} computed, {r} reused" for step, (c, r) in totals.items())
    typer.echo(f"results: {out / 'results'} ({work or 'nothing to do'}; cache {out / 'store'})")
    if not no_report:
        typer.echo(f"report: {result.report_path}")
        typer.echo(f"explorer (open in a browser): {result.html_path.resolve()}")


def report(
    out: Annotated[Path, typer.Argument(help="Output directory of `nla-probe ablate` (or of `merge`).")],
    to: Annotated[Optional[Path], typer.Option("--to", help="Write the report here instead of into OUT.")] = None,
) -> None:
    """Rebuild report.md, report.html, figures and tables from stored results (no model needed)."""
    from nla_probe.ablate.result import AblationResult

    path = AblationResult.load(out).write_report(to)
    typer.echo(f"report: {path}")
    typer.echo(f"explorer (open in a browser): {(path.parent / 'report.html').resolve()}")


def merge(
    shards: Annotated[list[Path], typer.Argument(help="Output directories of `ablate --shard i/n` runs.")],
    out: Annotated[Path, typer.Option(help="Output directory of the merged results and report.")],
    no_report: Annotated[bool, typer.Option("--no-report", help="Merge results only.")] = False,
) -> None:
    """Join shard outputs into one result set (checks they ran the same specs, pair and data)."""
    from nla_probe.ablate.result import merge as do_merge

    result = do_merge(shards, out, report=not no_report)
    n = sum(v["n_selected"] for v in result.info["selection"].values())
    typer.echo(f"merged {len(shards)} shard(s) into {out}: {n} activation-experiment rows")
    if not no_report:
        typer.echo(f"report: {result.report_path}")
        typer.echo(f"explorer (open in a browser): {result.html_path.resolve()}")


def register(app: typer.Typer) -> None:
    """Add ``ablate``, ``report`` and ``merge`` to the ``nla-probe`` app."""
    app.command("ablate")(ablate)
    app.command("report")(report)
    app.command("merge")(merge)
