"""Memory plan for an AV/AR pair, computed from ``config.json`` and the sidecars only (no weights read).

Units: bytes in the data structures; GiB (2^30 bytes) in printed text.  Every estimate is per process.

**Weights.** Parameters are counted from the (text) config: input embedding ``V·d``; an LM head ``V·d``
unless ``tie_word_embeddings``; per decoder block the attention projections ``d·H·h`` (q),
``2·d·K_v·h`` (k, v), ``H·h·d`` (o) with ``h`` = head_dim and ``K_v`` = KV heads (GQA), q/k/v biases
on Qwen2, the gated MLP ``3·d·I``, the block norms (2·d; Gemma-3: 4·d plus q/k norms of width h);
the final norm ``d``.  A multimodal Gemma-3 config also counts its SigLIP vision tower and projector
(from ``vision_config``).  The AR counts its own config: embedding plus K+1 blocks (the final norm and
LM head are Identity, not stored) plus the value head ``d·d``.  Bytes = params × the run dtype's
width (bf16 = 2 on GPUs, fp32 = 4 on CPUs by default, as the loader does).

**KV cache** (AV decoding only; the AR runs without cache): ``2 · L · K_v · h · b`` bytes per token
and sequence (b = dtype bytes), for ``batch × (prompt_tokens + max_new_tokens)`` tokens.  Gemma-3's
sliding-window layers are counted as full attention: exact while prompt + new tokens ≤ the window
(1024 on the released models), an over-estimate beyond.

**Activations** (estimates, not measurements): a prefill of ``n = batch × prompt_tokens`` tokens
holds ``n·(2·d + (H + 2·K_v)·h + 3·I)·b`` bytes of block intermediates, the fp32 attention scores
``batch·H·P²·4`` and the fp32 logits ``2·batch·V·4``; the AR the same for ``batch × ar_tokens``
tokens without logits.  vLLM's activation pool is estimated for its default 8,192 batched tokens,
plus :data:`VLLM_OVERHEAD` for CUDA graphs and non-torch memory.

**Fit.** A GPU offers ``gpu_mem × utilization`` (default 0.9, vLLM's default share; the rest covers
the CUDA context and fragmentation).  Options, each with the reason it does or does not fit:
``hf`` on one GPU (AV and AR together); ``hf`` with ``device="auto"`` over g GPUs (the total over g
GPUs, and no single block larger than one GPU); ``vllm`` with tensor parallelism t (t divides the
attention heads; vLLM's share per GPU = AV weights/t + activations/t + KV for one full sequence +
overhead; the torch side of the process, the AV's prompt embeddings of one batch (their rows are read
from the checkpoint file; no second copy of the AV or of its embedding table) and the AR, goes beside vLLM's share on ``cuda:0`` with ``gpu_memory_utilization`` lowered to
leave it room, else on a GPU of its own ``cuda:t``, else sharded with ``device="auto"``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nla_probe.errors import ContractError, InputError

GiB = 2 ** 30
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}
#: vLLM memory outside weights, KV cache and activations (CUDA graphs, NCCL, allocator), an estimate.
VLLM_OVERHEAD = int(1.5 * GiB)
VLLM_BATCHED_TOKENS = 8192
#: AR prompt tokens beyond the explanation (template words, BOS); the explanation is at most
#: ``max_new_tokens`` tokens.
AR_TEMPLATE_TOKENS = 32
DEFAULT_PROMPT_TOKENS = 192
_QKV_BIAS_TYPES = frozenset({"qwen2", "qwen2_vl", "qwen2_5_vl"})
_QK_NORM_TYPES = frozenset({"gemma3_text", "gemma3", "qwen3"})
_FOUR_NORM_TYPES = frozenset({"gemma2", "gemma3_text", "gemma3"})


@dataclass(frozen=True)
class Shape:
    """What the plan needs from a (text) config.  ``vision_params`` counts a vision tower + projector."""

    model_type: str
    layers: int
    d: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    vision_params: int = 0


def _get(cfg: dict, key: str, path: Path, default: Any = None) -> Any:
    value = cfg.get(key, default)
    if value is None:
        raise ContractError(path, key, "a value (needed for the memory plan)", None, "the field is missing")
    return value


def _config_defaults(model_type: str) -> dict:
    """Defaults transformers fills for fields a published config.json may omit (no import needed for
    the released families; other types ask transformers)."""
    if model_type == "gemma3_text":  # transformers Gemma3TextConfig defaults
        return {"vocab_size": 262208, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                "tie_word_embeddings": True}
    if model_type in ("qwen2", "llama"):
        return {"tie_word_embeddings": False}
    return {}


def siglip_params(vc: dict) -> int:
    """Parameters of a SigLIP vision tower (Gemma-3's ``vision_config``; its pooling head only when
    ``vision_use_head`` is true, which Gemma-3 sets false)."""
    d, i, n = vc.get("hidden_size", 768), vc.get("intermediate_size", 3072), vc.get("num_hidden_layers", 12)
    p, img, ch = vc.get("patch_size", 16), vc.get("image_size", 224), vc.get("num_channels", 3)
    layer = 4 * (d * d + d) + 2 * 2 * d + (d * i + i) + (i * d + d)  # q,k,v,o + 2 LayerNorms + fc1 + fc2
    embeddings = ch * p * p * d + d + (img // p) ** 2 * d          # patch conv + positions
    head = 0 if not vc.get("vision_use_head", False) else (d * d * 4 + 4 * d) + 2 * d + (d * i + i + i * d + d) + d
    return n * layer + embeddings + 2 * d + head                    # + post LayerNorm


def shape_from_config(cfg: dict, path: str | Path = "config.json") -> Shape:
    """:class:`Shape` of a config.json mapping; a nested ``text_config`` (Gemma-3) is used for the text
    model and ``vision_config`` counted as a SigLIP tower plus the multimodal projector."""
    path = Path(path)
    if not isinstance(cfg, dict):
        raise ContractError(path, "<document>", "a JSON object", type(cfg).__name__)
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else None
    tc = dict(text) if text is not None else dict(cfg)
    model_type = str(tc.get("model_type") or cfg.get("model_type") or "")
    if text is not None and not tc.get("model_type") and cfg.get("model_type") == "gemma3":
        model_type = "gemma3_text"
    for k, v in _config_defaults(model_type).items():
        tc.setdefault(k, v)
    if text is not None and "tie_word_embeddings" in cfg:
        tc["tie_word_embeddings"] = cfg["tie_word_embeddings"]
    d = int(_get(tc, "hidden_size", path))
    heads = int(_get(tc, "num_attention_heads", path))
    head_dim = tc.get("head_dim") or d // heads
    vision = 0
    vc = cfg.get("vision_config")
    if isinstance(vc, dict):
        vision = siglip_params(vc) + vc.get("hidden_size", 0) * d + vc.get("hidden_size", 0)  # + projector, norm
    return Shape(model_type=model_type, layers=int(_get(tc, "num_hidden_layers", path)), d=d, heads=heads,
                 kv_heads=int(tc.get("num_key_value_heads") or heads), head_dim=int(head_dim),
                 intermediate=int(_get(tc, "intermediate_size", path)), vocab=int(_get(tc, "vocab_size", path)),
                 tied=bool(tc.get("tie_word_embeddings", False)), vision_params=vision)


def read_config(directory: str | Path) -> dict:
    """``directory/config.json`` as a mapping; a missing or unreadable file is a one-line ContractError."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise ContractError(path, "<file>", "the model's config.json (layers, widths, vocabulary)", "no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ContractError(path, "<document>", "valid JSON", str(e)) from None


def block_params(s: Shape) -> int:
    """Parameters of one decoder block (attention with GQA, gated MLP, norms)."""
    attn = s.d * s.heads * s.head_dim + 2 * s.d * s.kv_heads * s.head_dim + s.heads * s.head_dim * s.d
    if s.model_type in _QKV_BIAS_TYPES:
        attn += s.heads * s.head_dim + 2 * s.kv_heads * s.head_dim
    norms = (4 if s.model_type in _FOUR_NORM_TYPES else 2) * s.d
    if s.model_type in _QK_NORM_TYPES:
        norms += 2 * s.head_dim
    return attn + 3 * s.d * s.intermediate + norms


def av_params(s: Shape) -> int:
    """AV (full base model): embedding, blocks, final norm, LM head unless tied, vision tower if any."""
    return s.vocab * s.d * (1 if s.tied else 2) + s.layers * block_params(s) + s.d + s.vision_params


def ar_params(s: Shape) -> int:
    """AR: embedding + its config's blocks (K+1) + value head d×d; no final norm, no LM head."""
    return s.vocab * s.d + s.layers * block_params(s) + s.d * s.d


def prompt_embedding_bytes(s: Shape, w: Workload) -> int:
    """The prompt embeddings of one batch, ``B·T_prompt·d`` in the run dtype: what the vLLM path holds
    beside vLLM (it reads only the prompt's rows of the embedding table from the checkpoint file)."""
    return w.batch_size * w.prompt_tokens * s.d * w.dtype_bytes


def kv_bytes_per_token(s: Shape, dtype_bytes: int) -> int:
    """KV cache bytes per token of one sequence: 2 (K and V) × layers × KV heads × head_dim × b."""
    return 2 * s.layers * s.kv_heads * s.head_dim * dtype_bytes


def _block_activation(s: Shape, tokens: int, b: int) -> int:
    return tokens * (2 * s.d + (s.heads + 2 * s.kv_heads) * s.head_dim + 3 * s.intermediate) * b


@dataclass(frozen=True)
class Workload:
    """Batch rows, AV prompt tokens, new tokens per decode, run dtype."""

    batch_size: int = 32
    max_new_tokens: int = 200
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    dtype: str = "bfloat16"

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def seq_tokens(self) -> int:
        return self.prompt_tokens + self.max_new_tokens

    @property
    def ar_tokens(self) -> int:
        return self.max_new_tokens + AR_TEMPLATE_TOKENS


@dataclass(frozen=True)
class Component:
    """Memory of one side of the pair (bytes)."""

    name: str
    params: int
    weights: int
    kv_cache: int
    activations: int
    largest_block: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations


def components(av: Shape | None, ar: Shape | None, w: Workload) -> tuple[Component | None, Component | None]:
    """AV and AR memory for the HF backend at workload ``w`` (module doc); None for a side not given."""
    b, n = w.dtype_bytes, w.batch_size
    cav = car = None
    if av is not None:
        p = av_params(av)
        act = (_block_activation(av, n * w.prompt_tokens, b) + n * av.heads * w.prompt_tokens ** 2 * 4
               + 2 * n * av.vocab * 4)
        kv = kv_bytes_per_token(av, b) * n * w.seq_tokens
        cav = Component("AV", p, p * b, kv, act, max(av.vocab * av.d, block_params(av)) * b)
    if ar is not None:
        p = ar_params(ar)
        act = _block_activation(ar, n * w.ar_tokens, b) + n * ar.heads * w.ar_tokens ** 2 * 4
        car = Component("AR", p, p * b, 0, act, max(ar.vocab * ar.d, block_params(ar)) * b)
    return cav, car


@dataclass(frozen=True)
class Option:
    """One way to run the pair on the GPUs, whether it fits, and why."""

    name: str
    backend: str
    gpus: int
    fits: bool
    reason: str
    per_gpu: int
    args: tuple[str, ...] = ()
    tensor_parallel: int = 1


def gib_text(x: float) -> str:
    """``x`` bytes as GiB with one decimal; below 0.1 GiB (but above 0) as MiB, so that a small
    component does not read as 0.0 GiB."""
    if 0 < x < 0.1 * GiB:
        return f"{x / 2 ** 20:.1f} MiB"
    return f"{x / GiB:.1f} GiB"


def count_text(n: int) -> str:
    """A parameter count with a unit and two decimals: 7.62B, 1.31M, 12.35K."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def valid_tensor_parallel(s: Shape, t: int) -> bool:
    """vLLM's rule: t divides the attention heads, and the KV heads divide or are divided by t."""
    return s.heads % t == 0 and (s.kv_heads % t == 0 or t % s.kv_heads == 0)


def vllm_need(av: Shape, cav: Component, w: Workload, t: int, max_len: int) -> tuple[int, int, int]:
    """(bytes vLLM needs per GPU at tensor parallelism t, KV bytes of one max_len sequence per GPU,
    activation estimate per GPU)."""
    b = w.dtype_bytes
    per_seq = 2 * av.layers * max(1, av.kv_heads // t) * av.head_dim * b * max_len
    act = (_block_activation(av, VLLM_BATCHED_TOKENS, b) + 256 * av.vocab * 4) // t
    return cav.weights // t + act + per_seq + VLLM_OVERHEAD, per_seq, act


def options(av: Shape, cav: Component | None, car: Component | None, w: Workload, gpus: int, gpu_mem: int,
            utilization: float = 0.9) -> list[Option]:
    """Every option for ``gpus`` GPUs of ``gpu_mem`` bytes (module doc), for the pair or one stage
    (``cav`` or ``car`` None): vLLM by tensor parallelism t (AR beside rank 0, on its own GPU
    ``cuda:t``, or sharded with ``device="auto"`` over all GPUs, first that fits), ``hf`` on one GPU,
    ``hf`` with ``device="auto"``."""
    if gpus < 1:
        raise InputError(f"--gpus: expected a positive number of GPUs, found {gpus}")
    if gpu_mem <= 0:
        raise InputError(f"--gpu-mem: expected a positive size in GiB, found {gpu_mem / GiB:g}")
    if not 0 < utilization <= 1:
        raise InputError(f"utilization: expected a fraction in (0, 1], found {utilization}")
    usable = int(gpu_mem * utilization)
    out: list[Option] = []
    max_len = 256 * math.ceil(w.seq_tokens / 256)
    # Beside vLLM, the process holds the AV's prompt embeddings of one batch and the AR, on ``--device``.
    host = (prompt_embedding_bytes(av, w) if cav is not None else 0) + (car.total if car is not None else 0)
    host_txt = ("AV prompt embeddings" if car is None else "AR + AV prompt embeddings") + f" {gib_text(host)}"
    for t in (1, 2, 4, 8, 16) if cav is not None else ():
        if t > gpus or not valid_tensor_parallel(av, t):
            continue
        need, per_seq, act = vllm_need(av, cav, w, t, max_len)
        parts = (f"vLLM per GPU {gib_text(cav.weights // t)} weights + {gib_text(act)} activations + "
                 f"{gib_text(per_seq)} KV (one {max_len}-token sequence) + {gib_text(VLLM_OVERHEAD)} overhead "
                 f"= {gib_text(need)}")
        placements = [("beside", t, host, "cuda:0")]
        if car is not None:
            placements += [("own", t + 1, 0, f"cuda:{t}"), ("auto", gpus, -(-host // gpus), "auto")]
        chosen = next((p for p in placements if p[1] <= gpus and not (p[0] == "own" and host > usable)
                       and need + p[2] <= usable), None)
        if chosen is None:
            out.append(Option(f"vllm tp={t}", "vllm", t, False, f"{parts}; with the {host_txt} on cuda:0 (or "
                              f"{gib_text(-(-host // gpus))} per GPU sharded) > {gib_text(usable)} usable per GPU",
                              need, (), t))
            continue
        kind, used, here, device = chosen
        room = usable - here - need
        seqs = 1 + room // (per_seq // max_len * w.seq_tokens)
        util = max(math.floor((usable - here) / gpu_mem * 100) / 100, math.ceil(need / gpu_mem * 100) / 100)
        where = {"beside": f"{host_txt} beside vLLM rank 0 on cuda:0", "own": f"{host_txt} on cuda:{t}",
                 "auto": f'{host_txt} sharded with device="auto" over {gpus} GPUs ({gib_text(here)} each)'}[kind]
        args = ("--backend", "vllm", "--device", device, "--backend-opt", f"tensor_parallel_size={t}",
                "--backend-opt", f"max_model_len={max_len}", "--backend-opt", f"gpu_memory_utilization={util:.2f}")
        out.append(Option(f"vllm tp={t}", "vllm", used, True,
                          f"{parts}; {where}; KV room for ~{seqs} sequences of {w.seq_tokens} tokens",
                          need + here, args, t))
    comps = [c for c in (cav, car) if c is not None]
    total = sum(c.total for c in comps)
    detail = ", ".join(f"{c.name} {gib_text(c.weights)} weights + {gib_text(c.kv_cache)} KV + "
                       f"{gib_text(c.activations)} activations"
                       for c in comps) + f" = {gib_text(total)}"
    fits1 = total <= usable
    out.append(Option("hf, one GPU", "hf", 1, fits1,
                      f"{detail} {'<=' if fits1 else '>'} {gib_text(usable)} usable on one GPU", total,
                      ("--backend", "hf", "--device", "cuda") if fits1 else ()))
    if gpus >= 2:
        big = max(c.largest_block for c in comps)
        g = max(2, -(-total // usable))
        ok = g <= gpus and big <= usable
        why = (f"{detail} over {g} GPUs of {gib_text(usable)} usable" if ok else
               f"{detail} > {gpus} x {gib_text(usable)} usable" if big <= usable else
               f"one block ({gib_text(big)}) is larger than one GPU ({gib_text(usable)} usable)")
        out.append(Option('hf, device="auto"', "hf", min(g, gpus), ok, why, -(-total // min(g, gpus)),
                          ("--backend", "hf", "--device", "auto") if ok else ()))
    return out


def best(opts: list[Option]) -> Option | None:
    """The option to recommend: vLLM when one fits (decoding dominates the cost), the one using the
    fewest GPUs, then the smallest tensor parallelism; else ``hf`` with the fewest GPUs."""
    fitting = [o for o in opts if o.fits]
    return min(fitting, key=lambda o: (o.backend != "vllm", o.gpus, o.tensor_parallel)) if fitting else None


@dataclass(frozen=True)
class PairPlan:
    """Shapes, workload and per-component memory of an AV and/or AR (see :func:`plan_pair`)."""

    av_path: Path | None
    ar_path: Path | None
    av: Shape | None
    ar: Shape | None
    layer: int
    workload: Workload
    av_mem: Component | None
    ar_mem: Component | None

    def options(self, gpus: int, gpu_mem_gib: float, utilization: float = 0.9, stage: str = "pair") -> list[Option]:
        """:func:`options` for the pair (``stage="pair"``) or one side (``"av"``: verbalize, ``"ar"``:
        reconstruct)."""
        if stage not in ("pair", "av", "ar"):
            raise InputError(f"stage: expected pair, av or ar, found {stage!r}")
        cav = self.av_mem if stage in ("pair", "av") else None
        car = self.ar_mem if stage in ("pair", "ar") else None
        if cav is None and car is None or (stage == "pair" and (self.av_mem is None or self.ar_mem is None)):
            missing = "AV" if cav is None else "AR"
            raise InputError(f"stage {stage!r}: the plan was made without the {missing} checkpoint")
        return options(self.av or self.ar, cav, car, self.workload, gpus, int(gpu_mem_gib * GiB), utilization)


def _read_side(d: Path, role: str) -> tuple[Shape, Any]:
    from nla_probe.nla.contract import SIDECAR_NAME, read_sidecar

    if not d.is_dir():
        raise ContractError(d, "<directory>", f"an existing {role.upper()} checkpoint directory", "no such directory")
    cfg = read_config(d)
    contract = read_sidecar(d)
    if contract.role != role:
        raise ContractError(d / SIDECAR_NAME, "role", repr(role), contract.role,
                            f"this is an {contract.role.upper()} checkpoint")
    shape = shape_from_config(cfg, d / "config.json")
    if shape.d != contract.d_model:
        raise ContractError(d / SIDECAR_NAME, "d_model", f"the config's hidden_size ({shape.d})", contract.d_model)
    if role == "ar" and shape.layers != contract.layer + 1:
        raise ContractError(d / "config.json", "num_hidden_layers", f"K+1 = {contract.layer + 1}", shape.layers,
                            f"the sidecar's extraction layer index is K={contract.layer}")
    return shape, contract


def plan_pair(av_dir: str | Path | None, ar_dir: str | Path | None, workload: Workload | None = None) -> PairPlan:
    """Read the ``config.json`` files and sidecars (nothing else) and size the AV and/or AR.

    Checks what the loader checks from these files: each directory exists and holds ``config.json``
    and a sidecar of the right role, the sidecar's d_model equals the config's hidden size, the AR's
    ``num_hidden_layers == K + 1``, and AV and AR agree on K.
    """
    from nla_probe.nla.contract import SIDECAR_NAME

    w = workload or Workload()
    if w.dtype not in DTYPE_BYTES:
        raise InputError(f"dtype: expected one of {sorted(DTYPE_BYTES)}, found {w.dtype!r}")
    for name, value in (("batch_size", w.batch_size), ("max_new_tokens", w.max_new_tokens),
                        ("prompt_tokens", w.prompt_tokens)):
        if value < 1:
            raise InputError(f"{name}: expected a positive integer, found {value}")
    if av_dir is None and ar_dir is None:
        raise InputError("plan: give an AV and/or an AR checkpoint directory")
    av = ar = None
    k = -1
    if av_dir is not None:
        av, cav_contract = _read_side(Path(av_dir), "av")
        k = cav_contract.layer
    if ar_dir is not None:
        ar, car_contract = _read_side(Path(ar_dir), "ar")
        if av is not None and car_contract.layer != k:
            raise ContractError(Path(ar_dir) / SIDECAR_NAME, "extraction_layer_index", f"{k} (as in the AV sidecar)",
                                car_contract.layer, "the AV and AR do not belong to the same pair")
        k = car_contract.layer
    cav, car = components(av, ar, w)
    return PairPlan(Path(av_dir) if av_dir else None, Path(ar_dir) if ar_dir else None, av, ar, k, w, cav, car)
