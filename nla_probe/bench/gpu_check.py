"""GPU check: the embedded toy pair in bfloat16 on a GPU against float32 decodes on the CPU.

``scripts/gpu_check.sh`` (or ``python -m nla_probe.bench.gpu_check``) runs, with no network, on the
toy pair in ``data/toy/qwen_small``:

1. the **reference**: float32 on the CPU — greedy decodes of ``n`` held-out activations
   (``max_new_tokens`` tokens, batch 32) and the AR's reconstructions of those decodes' explanations;
2. each **configuration** — ``hf`` on ``cuda:0`` in bfloat16; with two or more visible GPUs ``hf``
   with ``device="auto"`` (accelerate's device map; a model this small may stay on GPU 0) and ``hf``
   with the toy's blocks split over GPUs 0 and 1 (:func:`split_maps`); ``vllm`` on ``cuda:0`` when
   vLLM imports — and prints one row per configuration:

   * ``greedy=``: fraction of the ``n`` decodes whose token ids equal the reference's;
   * ``max|Δmse|`` / ``mean|Δmse|``: per-row ``|mse_nrm(config) − mse_nrm(reference)|`` of the AR
     scoring the *reference* explanations (the AR always runs on the transformers path);
   * ``tok/s@B``: new tokens per second of greedy decoding at batch ``B`` (1, 32, 256; B vectors
     drawn from the held-out pool, ``max_new_tokens`` each), after a warm-up;
   * ``rows/s@B``: AR rows per second at batch ``B`` (``batching="exact"``, the default) and
     ``fast@256`` (``batching="fast"``);
   * ``peak``: peak GPU memory allocated by torch in the process during the configuration, summed
     over devices (GiB; vLLM's reservation of :data:`VLLM_GPU_SHARE` of GPU 0 included), or on the
     CPU the process's peak RSS so far (it never decreases, so it bounds every row above it too).

Without CUDA it exits with status 2 and says so, unless ``--device cpu``: then the configurations
are ``hf`` float32 (a self-check: greedy 100 %, Δmse exactly 0), ``hf`` bfloat16, and ``hf`` float32
with the blocks split between the CPU and disk offload (a second self-check of the placement path).
``--quick`` shrinks every size (8 vectors, 12 tokens, batches 1/4/8) for a test run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Exit status when CUDA is needed and absent.
NO_CUDA_STATUS = 2
#: Share of GPU 0 vLLM may reserve (weights + KV cache) for the toy pair; the ``peak`` column includes it.
VLLM_GPU_SHARE = 0.3


@dataclass
class Row:
    """One configuration's measurements (see module doc for the definitions)."""

    name: str
    agreement: float = float("nan")
    max_dmse: float = float("nan")
    mean_dmse: float = float("nan")
    tok_s: dict[int, float] = field(default_factory=dict)
    rows_s: dict[int, float] = field(default_factory=dict)
    fast_rows_s: float = float("nan")
    peak: str = ""
    error: str = ""


@dataclass(frozen=True)
class Sizes:
    n: int
    max_new_tokens: int
    batches: tuple[int, ...]


def sizes(quick: bool) -> Sizes:
    return Sizes(8, 12, (1, 4, 8)) if quick else Sizes(64, 48, (1, 32, 256))


def _pool(d: int) -> np.ndarray:
    from nla_probe.defaults import toy_eval_path
    from nla_probe.nla.extraction import read_activations

    _, v = read_activations(toy_eval_path(), d_model=d)
    return np.asarray(v, dtype=np.float32)


def _draw(pool: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return pool[rng.choice(len(pool), size=n, replace=n > len(pool))]


def _peak_reset() -> None:
    import torch

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(i)


def _peak(device: str) -> str:
    import resource

    import torch

    if device == "cpu":
        return f"RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    total = sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))
    return f"{total / 2**30:.2f} GiB"


def _free() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reference(av_dir: Any, ar_dir: Any, vectors: np.ndarray, sz: Sizes) -> tuple[list, list[str], np.ndarray]:
    """float32 CPU decodes of ``vectors``, their explanations and the AR's reconstructions of them."""
    from nla_probe.nla.checkpoint import load_pair

    pair = load_pair(av_dir, ar_dir, dtype="float32", device="cpu")
    decs = pair.verbalizer().verbalize(vectors, max_new_tokens=sz.max_new_tokens, batch_size=32)
    texts = [d.explanation or d.raw_text for d in decs]
    rec = pair.ar.reconstruct(texts, batch_size=32, on_overflow="truncate")
    return decs, texts, rec


def measure(name: str, av: Any, ar: Any, backend: str, device: str, pool: np.ndarray, vectors: np.ndarray,
            ref: tuple[list, list[str], np.ndarray], sz: Sizes, backend_kwargs: dict | None = None) -> Row:
    """One configuration's row: agreement and Δmse against ``ref``, throughput, peak memory."""
    from nla_probe.analysis.metrics import mse_nrm

    ref_decs, texts, ref_rec = ref
    row = Row(name)
    verb = av.verbalizer(backend=backend, **(backend_kwargs or {}))
    verb.verbalize(vectors[:2], max_new_tokens=4)  # warm-up
    decs = verb.verbalize(vectors, max_new_tokens=sz.max_new_tokens, batch_size=32)
    row.agreement = sum(a.token_ids == b.token_ids for a, b in zip(decs, ref_decs)) / len(ref_decs)
    rec = ar.reconstruct(texts, batch_size=32, on_overflow="truncate")
    d = np.abs(mse_nrm(rec, vectors, ar.contract.mse_scale) - mse_nrm(ref_rec, vectors, ar.contract.mse_scale))
    row.max_dmse, row.mean_dmse = float(d.max()), float(d.mean())
    for b in sz.batches:
        v = _draw(pool, b, seed=b)
        _sync()
        t = time.perf_counter()
        out = verb.verbalize(v, max_new_tokens=sz.max_new_tokens, batch_size=b)
        _sync()
        row.tok_s[b] = sum(x.n_tokens for x in out) / (time.perf_counter() - t)
        batch_texts = [texts[i % len(texts)] for i in range(b)]
        for mode in ("exact", "fast") if b == sz.batches[-1] else ("exact",):
            _sync()
            t = time.perf_counter()
            ar.reconstruct(batch_texts, batch_size=b, on_overflow="truncate", batching=mode)
            _sync()
            rate = b / (time.perf_counter() - t)
            if mode == "exact":
                row.rows_s[b] = rate
            else:
                row.fast_rows_s = rate
    row.peak = _peak(device)
    return row


def split_maps(av_layers: int, ar_layers: int, devices: Sequence[Any]) -> tuple[dict, dict]:
    """Device maps putting the first half of each model's blocks on ``devices[0]`` and the rest on
    ``devices[1]``: the AV's embedding and (tied) LM head on the first, its final norm on the second;
    the AR's embedding on the first and its (Identity) final norm on the second."""
    first, second = devices
    av = {"model.embed_tokens": first, "lm_head": first, "model.norm": second}
    av.update({f"model.layers.{i}": first if i < av_layers // 2 else second for i in range(av_layers)})
    ar = {"embed_tokens": first, "norm": second}
    ar.update({f"layers.{i}": first if i < (ar_layers + 1) // 2 else second for i in range(ar_layers)})
    return av, ar


def configurations(device: str, av_layers: int, ar_layers: int,
                   offload: str | None = None) -> list[tuple[str, str, dict, dict, str, dict]]:
    """``(name, backend, AV placement, AR placement, dtype, engine kwargs)`` to measure (module doc).

    On CUDA with two or more GPUs: ``device="auto"`` (which may keep a model this small on one GPU)
    and the explicit split of :func:`split_maps` over GPUs 0 and 1 (blocks on both, always).  On the
    CPU: float32 (the self-check), bfloat16, and float32 split between the CPU and disk (``offload``).
    """
    import torch

    if device == "cpu":
        av_map, ar_map = split_maps(av_layers, ar_layers, ("cpu", "disk"))
        off = {"offload_folder": offload}
        return [("hf cpu fp32", "hf", {"device": "cpu"}, {"device": "cpu"}, "float32", {}),
                ("hf cpu bf16", "hf", {"device": "cpu"}, {"device": "cpu"}, "bfloat16", {}),
                ("hf cpu+disk split fp32", "hf", {"device_map": av_map, **off}, {"device_map": ar_map, **off},
                 "float32", {})]
    one = {"device": "cuda:0"}
    out = [("hf cuda:0 bf16", "hf", one, one, "bfloat16", {})]
    n = torch.cuda.device_count()
    if n >= 2:
        auto = {"device": "auto"}
        av_map, ar_map = split_maps(av_layers, ar_layers, (0, 1))
        out += [(f"hf auto({n} GPUs) bf16", "hf", auto, auto, "bfloat16", {}),
                ("hf split GPU 0+1 bf16", "hf", {"device_map": av_map}, {"device_map": ar_map}, "bfloat16", {})]
    try:
        import vllm  # noqa: F401

        engine = {"enforce_eager": True, "gpu_memory_utilization": VLLM_GPU_SHARE}
        out.append(("vllm cuda:0 bf16", "vllm", one, one, "bfloat16", engine))
    except ImportError:
        pass
    return out


def _fmt(x: float, spec: str) -> str:
    return "n/a" if math.isnan(x) else format(x, spec)


def format_table(rows: Sequence[Row], sz: Sizes) -> str:
    """The rows as a fixed-width text table (header, one line per row, errors below)."""
    cols = (["config", "greedy=", "max|Δmse|", "mean|Δmse|"] + [f"tok/s@{b}" for b in sz.batches]
            + [f"rows/s@{b}" for b in sz.batches] + [f"fast@{sz.batches[-1]}", "peak"])
    lines = [[r.name, _fmt(r.agreement * 100, ".1f") + "%", _fmt(r.max_dmse, ".2e"), _fmt(r.mean_dmse, ".2e")]
             + [_fmt(r.tok_s.get(b, float("nan")), ",.0f") for b in sz.batches]
             + [_fmt(r.rows_s.get(b, float("nan")), ",.0f") for b in sz.batches]
             + [_fmt(r.fast_rows_s, ",.0f"), r.peak or "n/a"] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in lines)) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(x, widths)) for x in lines]
    out += [f"{r.name}: FAILED: {r.error}" for r in rows if r.error]
    return "\n".join(out)


def no_cuda_message() -> str | None:
    """Why CUDA cannot be used here, or None when it can."""
    import torch

    if torch.cuda.is_available():
        return None
    why = (f"this torch build ({torch.__version__}) has no CUDA support" if torch.version.cuda is None
           else "no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)")
    return (f"gpu_check: CUDA is not available: {why}. Run it on a machine with an NVIDIA GPU and a CUDA build "
            "of torch, or pass --device cpu --quick to exercise the check on the CPU.")


def run(device: str = "cuda", quick: bool = False, av_dir: Any = None, ar_dir: Any = None) -> list[Row]:
    """Measure every configuration for ``device`` and print the table; returns the rows."""
    from nla_probe.defaults import toy_pair_dirs
    from nla_probe.nla.checkpoint import load_ar, load_av

    sz = sizes(quick)
    d_av, d_ar = toy_pair_dirs()
    av_dir, ar_dir = av_dir or d_av, ar_dir or d_ar
    import shutil
    import tempfile

    from transformers import AutoConfig

    from nla_probe.nla.arch import text_config

    ar0 = load_ar(ar_dir, dtype="float32")
    pool = _pool(ar0.contract.d_model)
    ar_layers = len(ar0.model.backbone.layers)
    del ar0
    av_layers = text_config(AutoConfig.from_pretrained(str(av_dir))).num_hidden_layers
    offload = tempfile.mkdtemp(prefix="nla-probe-gpu-check-")
    vectors = _draw(pool, sz.n, seed=0)
    t0 = time.perf_counter()
    ref = reference(av_dir, ar_dir, vectors, sz)
    print(f"reference: float32 on the CPU, {sz.n} vectors, {sz.max_new_tokens} new tokens, "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    for name, backend, av_place, ar_place, dtype, kwargs in configurations(device, av_layers, ar_layers, offload):
        _peak_reset()
        t = time.perf_counter()
        try:
            av = load_av(av_dir, dtype=dtype, backend=backend, **av_place)
            ar = load_ar(ar_dir, dtype=dtype, **ar_place)
            rows.append(measure(name, av, ar, backend, device, pool, vectors, ref, sz, kwargs))
            del av, ar
            _free()
        except Exception as e:  # noqa: BLE001 - one failing configuration must not hide the others' rows
            rows.append(Row(name, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
        print(f"{name}: {time.perf_counter() - t:.1f} s", flush=True)
    shutil.rmtree(offload, ignore_errors=True)
    print()
    print(format_table(rows, sz))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cuda (default; exits with status 2 without CUDA) or cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (a test run)")
    parser.add_argument("--av", default=None, help="AV directory (default: the toy pair)")
    parser.add_argument("--ar", default=None, help="AR directory (default: the toy pair)")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        msg = no_cuda_message()
        if msg:
            print(msg, file=sys.stderr)
            return NO_CUDA_STATUS
    rows = run(args.device, args.quick, args.av, args.ar)
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
