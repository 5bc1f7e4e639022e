"""``nla-probe plan``: the memory plan of a pair from config.json and the sidecars (no weights read)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

#: GPU counts planned when ``--gpus`` is not given.
DEFAULT_GPU_COUNTS = (1, 2, 4, 8)


def render(plan: Any, gpu_counts: list[int], gpu_mem_gib: float, utilization: float = 0.9) -> str:
    """The plan as text: the memory table, then each GPU count's options and recommendation."""
    w = plan.workload
    lines = [f"memory plan ({w.dtype}; batch {w.batch_size}, AV prompt ~{w.prompt_tokens} + {w.max_new_tokens} "
             f"new tokens, AR ~{w.ar_tokens} tokens; GiB = 2^30 bytes; estimates from config.json)",
             f"  {'':4} {'params':>10} {'weights':>11} {'KV cache':>11} {'activations':>12} {'total':>11}"]
    from nla_probe.nla.plan import GiB, best, count_text, gib_text

    for c, s in ((plan.av_mem, plan.av), (plan.ar_mem, plan.ar)):
        if c is None:
            continue
        lines.append(f"  {c.name:4} {count_text(c.params):>10} {gib_text(c.weights):>11} {gib_text(c.kv_cache):>11} "
                     f"{gib_text(c.activations):>12} {gib_text(c.total):>11}   ({s.model_type}, {s.layers} blocks)")
    stage = "pair" if plan.av_mem and plan.ar_mem else ("av" if plan.av_mem else "ar")
    if stage == "pair":
        lines.append(f"  {'pair':4} {'':>10} {'':>11} {'':>11} {'':>12} "
                     f"{gib_text(plan.av_mem.total + plan.ar_mem.total):>11}")
    for n in gpu_counts:
        opts = plan.options(n, gpu_mem_gib, utilization, stage)
        pick = best(opts)
        each = gib_text(int(gpu_mem_gib * GiB * utilization))
        lines.append(f"{n} x {gpu_mem_gib:g} GiB GPU(s) ({each} usable each):")
        for o in opts:
            lines.append(f"  [{'fits' if o.fits else 'no'}] {o.name}: {o.reason}")
        if pick is not None:
            lines.append(f"  => {pick.name}: {' '.join(pick.args)}")
            continue
        if stage != "pair":
            lines.append(f"  => does not fit on {n} x {gpu_mem_gib:g} GiB")
            continue
        lines.append(f"  => the pair does not fit on {n} GPU(s) together; per stage, in separate processes:")
        for one, cmd in (("av", "verbalize"), ("ar", "reconstruct")):
            alone = best(plan.options(n, gpu_mem_gib, utilization, one))
            args = alone.args[2:] if alone is not None and one == "ar" else (alone.args if alone else ())
            lines.append(f"     {cmd}: " + (f"{alone.name}: {' '.join(args)}" if alone else  # reconstruct: no --backend
                                            f"does not fit on {n} x {gpu_mem_gib:g} GiB"))
    return "\n".join(lines)


def plan(
    av: Annotated[Optional[Path], typer.Option(help="AV checkpoint directory (config.json + nla_meta.yaml).")] = None,
    ar: Annotated[Optional[Path], typer.Option(help="AR checkpoint directory (config.json + nla_meta.yaml).")] = None,
    gpus: Annotated[Optional[int], typer.Option(help="Number of GPUs (default: plan for 1, 2, 4 and 8).")] = None,
    gpu_mem: Annotated[float, typer.Option(help="Memory per GPU in GiB (an '80 GB' A100/H100 is ~80).")] = 80.0,
    batch_size: Annotated[int, typer.Option(help="Rows per generation/AR batch.")] = 32,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per decode.")] = 200,
    prompt_tokens: Annotated[int, typer.Option(help="AV prompt tokens (the canonical prompts are 108-131).")] = 192,
    dtype: Annotated[str, typer.Option(help="Run dtype: bfloat16 (GPU default), float16 or float32.")] = "bfloat16",
    utilization: Annotated[float, typer.Option(help="Share of each GPU the plan may fill.")] = 0.9,
) -> None:
    """Print the memory plan (weights, KV cache, activations) and which backend/GPU layout fits."""
    from nla_probe.errors import InputError
    from nla_probe.nla.plan import Workload, plan_pair

    if gpus is not None and gpus < 1:
        raise InputError(f"--gpus: expected a positive number of GPUs, found {gpus}")
    p = plan_pair(av, ar, Workload(batch_size=batch_size, max_new_tokens=max_new_tokens,
                                    prompt_tokens=prompt_tokens, dtype=dtype))
    typer.echo(render(p, [gpus] if gpus is not None else list(DEFAULT_GPU_COUNTS), gpu_mem, utilization))


def register(app: typer.Typer) -> None:
    """Add ``plan`` to the ``nla-probe`` app."""
    app.command("plan")(plan)
