"""Refusing, before any weight is read, a run whose memory plan cannot fit (GPU or CPU).

:func:`check_before_loading` is what ``nla-probe verbalize``, ``reconstruct`` and ``ablate`` (and
:func:`nla_probe.ablate.engine.ablate` with checkpoint directories) call first.  It sizes the run with
:mod:`nla_probe.nla.plan` from ``config.json`` and the sidecars, then compares it with what the
machine has: on GPUs (``device`` ``cuda``, ``cuda:i`` or ``auto``) the visible CUDA devices, their
count and smallest memory; on the CPU the kernel's ``MemAvailable``.  ``cuda`` without CUDA, or the
CPU where the available RAM is unknown, is not checked (the loader reports a missing GPU itself);
``auto`` without CUDA is checked as the CPU, and with the ``hf`` backend it may spill to CPU RAM.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from nla_probe.errors import InputError, NLAProbeWarning
from nla_probe.nla.plan import (
    DTYPE_BYTES,
    GiB,
    Option,
    PairPlan,
    Workload,
    best,
    gib_text,
    plan_pair,
    prompt_embedding_bytes,
    valid_tensor_parallel,
    vllm_need,
)

#: vLLM's default share of each GPU (``gpu_memory_utilization``) when the backend options do not set it.
VLLM_DEFAULT_UTILIZATION = 0.9
#: Memory a process needs on a GPU outside tensors (CUDA context, cuBLAS workspaces), an estimate.
CUDA_CONTEXT = 1 * GiB


def requested_option(plan: PairPlan, stage: str, *, gpus: int, gpu_mem: int, backend: str, device: str,
                     tensor_parallel: int = 1, vllm_utilization: float = VLLM_DEFAULT_UTILIZATION,
                     utilization: float = 0.9) -> Option:
    """Whether the configuration asked for (backend, device, tensor parallelism, vLLM's share) fits.

    ``device``: ``cuda``/``cuda:i`` (one GPU) or ``auto`` (sharded over all GPUs).  With vLLM the AR
    sits on ``device``: beside vLLM's share on a GPU vLLM uses (then it must fit in the
    ``1 - gpu_memory_utilization`` vLLM leaves, minus :data:`CUDA_CONTEXT`), on a GPU of its own, or
    sharded (``auto``, 1/gpus of it on each GPU); the AV's prompt embeddings of one batch go with it.
    """
    opts = plan.options(gpus, gpu_mem / GiB, utilization, stage)
    if backend != "vllm":
        want = 'hf, device="auto"' if device == "auto" and gpus >= 2 else "hf, one GPU"
        return next(o for o in opts if o.name == want)
    cav = plan.av_mem if stage in ("pair", "av") else None
    if cav is None:
        raise InputError("backend 'vllm' decodes with the AV; the plan has no AV")
    t = tensor_parallel
    if t > gpus:
        return Option(f"vllm tp={t}", "vllm", t, False, f"tensor_parallel_size={t} but {gpus} GPU(s) are visible", 0)
    if not valid_tensor_parallel(plan.av, t):
        return Option(f"vllm tp={t}", "vllm", t, False, f"tensor_parallel_size={t} does not divide the "
                      f"{plan.av.heads} attention heads / {plan.av.kv_heads} KV heads", 0)
    w = plan.workload
    need, _, _ = vllm_need(plan.av, cav, w, t, 256 * math.ceil(w.seq_tokens / 256))
    share = int(vllm_utilization * gpu_mem)
    if need > share:
        return Option(f"vllm tp={t}", "vllm", t, False, f"vLLM needs {gib_text(need)} per GPU, its share "
                      f"gpu_memory_utilization={vllm_utilization:g} x {gib_text(gpu_mem)} is {gib_text(share)}", need)
    car = plan.ar_mem if stage == "pair" else None
    host = prompt_embedding_bytes(plan.av, w) + (car.total if car is not None else 0)
    what = "the AR and the AV prompt embeddings" if car is not None else "the AV prompt embeddings"
    idx = device.partition(":")[2]
    left = gpu_mem - share - CUDA_CONTEXT
    if device == "auto":
        here, where = -(-host // gpus), f"sharded over {gpus} GPUs"
    elif idx.isdigit() and int(idx) >= t:
        here, where, left = host, f"on {device}, a GPU of its own", int(gpu_mem * utilization)
    else:
        here, where = host, f"on {device} beside vLLM's share"
    if here > left:
        return Option(f"vllm tp={t}", "vllm", t, False, f"{what} ({gib_text(here)} {where}) do not fit in the "
                      f"{gib_text(left)} left next to vLLM's gpu_memory_utilization={vllm_utilization:g}", need)
    return Option(f"vllm tp={t}", "vllm", t, True, f"vLLM needs {gib_text(need)} of its {gib_text(share)} per GPU",
                  need)


def _gpu_inventory() -> tuple[int, int] | None:
    """(visible CUDA devices, smallest total memory in bytes), or None without CUDA."""
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return None
    n = torch.cuda.device_count()
    return n, min(torch.cuda.get_device_properties(i).total_memory for i in range(n))


def _available_ram() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _dtype_name(dtype: Any, on_gpu: bool) -> str:
    if dtype is None:
        return "bfloat16" if on_gpu else "float32"
    name = str(dtype).replace("torch.", "")
    if name not in DTYPE_BYTES:
        raise InputError(f"dtype: expected one of {sorted(DTYPE_BYTES)}, found {dtype!r}")
    return name


def check_before_loading(av_dir: str | Path | None, ar_dir: str | Path | None, *, device: str | None,
                         backend: str = "hf", batch_size: int = 32, max_new_tokens: int = 200, dtype: Any = None,
                         backend_options: dict | None = None) -> Option | None:
    """Refuse, before any weight is read, a run whose memory plan cannot fit; returns the checked
    option, or None when nothing was checked.

    GPU devices (``cuda``, ``cuda:i``, ``auto``): the visible GPUs (count, smallest memory) against
    :func:`requested_option`.  ``auto`` with the ``hf`` backend may also spill layers to CPU RAM
    (accelerate's device map does): it is refused only when the GPUs plus ``MemAvailable`` are too
    small, and warned about (:class:`~nla_probe.errors.NLAProbeWarning`) when it spills.  Without
    CUDA, ``cuda`` is left to the loader to report and ``auto`` is checked as the CPU.  CPU: the
    weights, KV cache and activations in the run dtype (fp32 by default) against ``MemAvailable``;
    skipped where that is unknown.  Raises :class:`~nla_probe.errors.InputError` with the reason and
    the plan's recommendation.
    """
    dev = (device or "cpu").strip()
    on_gpu = dev == "auto" or dev.startswith("cuda")
    if not on_gpu and dev != "cpu":
        return None
    inv = _gpu_inventory() if on_gpu else None
    if inv is None and dev.startswith("cuda"):
        return None
    on_gpu = inv is not None
    stage = "pair" if av_dir is not None and ar_dir is not None else ("av" if av_dir is not None else "ar")
    w = Workload(batch_size=batch_size, max_new_tokens=max_new_tokens, dtype=_dtype_name(dtype, on_gpu))
    plan = plan_pair(av_dir, ar_dir, w)
    what = {"pair": "the AV and AR", "av": "the AV", "ar": "the AR"}[stage]
    cmd = "nla-probe plan" + (f" --av {av_dir}" if av_dir else "") + (f" --ar {ar_dir}" if ar_dir else "")
    need = sum(c.total for c in (plan.av_mem, plan.ar_mem) if c is not None)
    if not on_gpu:
        ram = _available_ram()
        if ram is None:
            return None
        ok = need <= ram
        opt = Option("cpu", backend, 0, ok, f"needs ~{gib_text(need)} of RAM in {w.dtype}, {gib_text(ram)} available",
                     need)
        if not ok:
            raise InputError(f"{what} on the CPU will not fit: {opt.reason}; use a GPU or a smaller --batch-size "
                             f"(memory plan: {cmd} --dtype {w.dtype})")
        return opt
    gpus, mem = inv
    opts = dict(backend_options or {})
    opt = requested_option(plan, stage, gpus=gpus, gpu_mem=mem, backend=backend, device=dev,
                           tensor_parallel=int(opts.get("tensor_parallel_size", 1)),
                           vllm_utilization=float(opts.get("gpu_memory_utilization", VLLM_DEFAULT_UTILIZATION)))
    if not opt.fits and dev == "auto" and backend != "vllm":
        spill = need - gpus * int(mem * 0.9)
        if spill <= 0:  # one block larger than a GPU: that block goes to the CPU
            spill = max(c.largest_block for c in (plan.av_mem, plan.ar_mem) if c is not None)
        ram = _available_ram()
        if ram is None or spill <= ram:
            warnings.warn(f"{what}: {opt.reason}; about {gib_text(spill)} will be placed in CPU RAM by the device "
                          "map (much slower than on the GPUs)", NLAProbeWarning, stacklevel=2)
            return replace(opt, fits=True, reason=f"{opt.reason}; {gib_text(spill)} spills to CPU RAM")
        opt = replace(opt, reason=f"{opt.reason}, and the {gib_text(spill)} beyond the GPUs exceed the "
                                  f"{gib_text(ram)} of RAM available")
    if not opt.fits:
        alt = best(plan.options(gpus, mem / GiB, stage=stage))
        hint = (f"the plan suggests {alt.name}: {' '.join(alt.args)}" if alt else
                f"no option fits on {gpus} x {gib_text(mem)}")
        raise InputError(f"{what} with backend {backend} on {dev} will not fit on {gpus} x {gib_text(mem)} GPU(s): "
                         f"{opt.reason}; {hint} (details: {cmd} --gpus {gpus} --gpu-mem {mem / GiB:.0f})")
    return opt
