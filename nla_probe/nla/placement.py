"""Where a model's weights go: one device, or accelerate's ``device_map`` across several.

The loaders (:func:`~nla_probe.nla.checkpoint.load_av`, ``load_ar``, ``load_pair``) take

* ``device="cpu" | "cuda" | "cuda:N" | "mps"``: the whole model on one device (the default);
* ``device="auto"``: transformers' ``device_map="auto"`` (accelerate) — the decoder layers are
  spread in order over the visible GPUs (``CUDA_VISIBLE_DEVICES``), then CPU RAM, then
  ``offload_folder`` on disk, each device filled up to ``max_memory`` (e.g. ``{0: "70GiB",
  1: "70GiB", "cpu": "200GiB"}``; default: what is free);
* ``device_map={module name: device}``: an explicit placement, with devices ``"cpu"``, ``"disk"``
  (needs ``offload_folder``), a GPU index ``0, 1, …`` or ``"cuda:N"``.  Module names are those
  of the class the loader builds: the AV is a causal LM (``model.embed_tokens``,
  ``model.layers.0`` …, ``model.norm``, ``lm_head``), the AR its decoder stack (``embed_tokens``,
  ``layers.0`` …, ``norm``).  Every parameter must fall under exactly one entry (a name equal to
  the parameter's module or one of its parents; ``""`` is the whole model).

Sharded models are run by accelerate's hooks, which move each module's inputs to the device it
executes on (:func:`execution_device`; an offloaded module executes on the first GPU, or on the
CPU when there is none).  The AV's prompt embeddings are built on the execution device of its
input-embedding module; the AR's value head sits on the execution device of the last kept block.
Accelerate is a dependency of nla-probe (``pyproject.toml``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nla_probe.errors import InputError

_DEVICE_HELP = "'cpu', 'disk', a GPU index 0, 1, … or 'cuda:N'"


@dataclass(frozen=True)
class Placement:
    """A resolved placement request.

    Attributes:
        device: the single device (``"cpu"``, ``"cuda:0"``, …), or ``"auto"`` / ``"map"`` when
            the model is sharded with a device map.
        device_map: ``None`` (single device), ``"auto"`` or ``{module: device}``.
        max_memory: per-device caps passed to accelerate (``None``: what is free).
        offload_folder: directory for modules placed on ``"disk"``.
        gpu: whether any GPU takes part (the default dtype is bfloat16 then, float32 otherwise).
    """

    device: str
    device_map: Any = None
    max_memory: Mapping | None = None
    offload_folder: str | None = None
    gpu: bool = False

    @property
    def sharded(self) -> bool:
        return self.device_map is not None

    @property
    def dtype_device(self) -> str:
        """The device whose default dtype applies (``"cuda"`` when a GPU takes part)."""
        return "cuda" if self.gpu else ("cpu" if self.sharded else self.device)

    def from_pretrained_kwargs(self) -> dict:
        """Keyword arguments for ``from_pretrained`` (empty for a single device: moved after loading)."""
        if not self.sharded:
            return {}
        kw: dict[str, Any] = {"device_map": self.device_map}
        if self.max_memory is not None:
            kw["max_memory"] = dict(self.max_memory)
        if self.offload_folder is not None:
            kw["offload_folder"] = str(self.offload_folder)
        return kw


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _no_cuda_reason() -> str:
    import torch

    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    return "no CUDA device is visible (CUDA_VISIBLE_DEVICES?)"


def _check_map_device(where: str, value: Any) -> str:
    """A device-map value as accelerate takes it; GPUs must exist.  Returns its kind."""
    import torch

    if isinstance(value, bool) or not isinstance(value, (int, str, torch.device)):
        raise InputError(f"{where}: expected {_DEVICE_HELP}, found {value!r}")
    if isinstance(value, int):
        index = value
    else:
        text = str(value)
        if text in ("cpu", "disk"):
            return text
        if text == "meta":
            raise InputError(f"{where}: expected {_DEVICE_HELP}, found 'meta' (a module on 'meta' has no weights; "
                             "use 'disk' with offload_folder to keep it out of GPU and CPU memory)")
        try:
            dev = torch.device(text)
        except (RuntimeError, ValueError):
            raise InputError(f"{where}: expected {_DEVICE_HELP}, found {value!r}") from None
        if dev.type != "cuda":
            raise InputError(f"{where}: expected {_DEVICE_HELP}, found {value!r}")
        index = dev.index or 0
    n = _cuda_count()
    if n == 0:
        raise InputError(f"{where}: GPU {value!r} requested but CUDA is not available ({_no_cuda_reason()}); "
                         "use 'cpu' or 'disk'")
    if not 0 <= index < n:
        raise InputError(f"{where}: expected a GPU index below {n} (visible GPUs), found {value!r}")
    return "gpu"


def resolve_placement(device: Any = "cpu", device_map: Any = None, max_memory: Mapping | None = None,
                      offload_folder: str | Path | None = None) -> Placement:
    """Check a placement request before anything loads (see module doc); raises :class:`InputError`.

    A GPU request on a CPU-only torch, a device-map value that is not a device, ``"disk"`` without
    ``offload_folder`` and ``max_memory`` without a device map are refused here.
    """
    if device_map is not None and str(device) not in ("cpu", "auto"):
        raise InputError(f"device={device!r} and device_map: pass one of them (device_map places the modules)")
    if str(device) == "auto" and device_map is None:
        device_map = "auto"
    if device_map is None:
        if max_memory is not None:
            raise InputError("max_memory: only used with device='auto' or a device_map, found device="
                             f"{device!r}")
        return Placement(device=str(device), gpu=str(device).startswith("cuda"))
    if isinstance(device_map, str):
        if device_map != "auto":
            raise InputError(f"device_map: expected 'auto' or a mapping {{module: device}}, found {device_map!r}")
        kinds = {"gpu"} if _cuda_count() else {"cpu"}
    elif isinstance(device_map, Mapping):
        if not device_map:
            raise InputError("device_map: expected at least one entry {module: device}, found an empty mapping")
        bad = [k for k in device_map if not isinstance(k, str)]
        if bad:
            raise InputError(f"device_map: expected module names (str) as keys, found {bad[0]!r}")
        kinds = {_check_map_device(f"device_map[{k!r}]", v) for k, v in device_map.items()}
        if "disk" in kinds and offload_folder is None:
            disk = [k for k, v in device_map.items() if str(v) == "disk"]
            raise InputError(f"offload_folder: expected a directory for the modules device_map sends to 'disk' "
                             f"({disk[:3]}), found None")
        device_map = dict(device_map)
    else:
        raise InputError(f"device_map: expected 'auto' or a mapping {{module: device}}, found {type(device_map).__name__}")
    if max_memory is not None:
        if not isinstance(max_memory, Mapping) or not max_memory:
            raise InputError(f"max_memory: expected a mapping such as {{0: '70GiB', 'cpu': '200GiB'}}, found {max_memory!r}")
        for k in max_memory:
            if k != "cpu" and k != "disk":
                _check_map_device(f"max_memory[{k!r}]", k)
    label = "auto" if device_map == "auto" else "map"
    return Placement(device=label, device_map=device_map, max_memory=max_memory,
                     offload_folder=str(offload_folder) if offload_folder is not None else None,
                     gpu="gpu" in kinds)


def _covering_key(name: str, keys: list[str]) -> str | None:
    for k in keys:
        if k == "" or name == k or name.startswith(k + "."):
            return k
    return None


def check_device_map(device_map: Mapping[str, Any], param_names: list[str], where: Path) -> None:
    """Every parameter under one device-map entry, every entry naming a module of the model.

    Raises :class:`InputError` naming the first module (the largest one wholly left out, e.g.
    ``model.layers.2``) that no entry places, or the entry that matches no module.
    """
    keys = list(device_map)
    tied = {n for n in param_names if n.startswith("lm_head.")}  # tied to the input embedding when so configured
    missing = [n for n in param_names if _covering_key(n, keys) is None and n not in tied]
    if missing:
        first = missing[0]
        parts = first.split(".")
        left_out = set(missing)
        module = first
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            under = [n for n in param_names if n.startswith(prefix + ".")]
            if all(n in left_out for n in under):
                module = prefix
                break
        n_mod = sum(1 for n in missing if n == module or n.startswith(module + "."))
        raise InputError(f"device_map for {where}: expected a device for every module, found no entry for "
                         f"{module!r} ({n_mod} parameter(s), e.g. {first}); add {module!r} (or a parent) to it")
    unused = [k for k in keys if k and not any(n == k or n.startswith(k + ".") for n in param_names)]
    if unused:
        import re

        example = next((m.group(1) for n in param_names if (m := re.match(r"(.*?layers\.\d+)\.", n))),
                       param_names[0])
        raise InputError(f"device_map for {where}: expected module names of this model (e.g. {example!r}), "
                         f"found {unused[0]!r}, under which no parameter lives")


def checked_placement(device: Any, device_map: Any, max_memory: Any, offload_folder: Any, model_cls: Any,
                      config: Any, where: Path, trust_remote_code: bool, check_single: Any) -> Placement:
    """:func:`resolve_placement`, then ``check_single(device)`` for one device, or
    :func:`check_device_map` against ``model_cls`` built from ``config`` for an explicit map."""
    placement = resolve_placement(device, device_map, max_memory, offload_folder)
    if not placement.sharded:
        check_single(device)
    elif isinstance(placement.device_map, dict):
        check_device_map(placement.device_map, meta_param_names(model_cls, config, trust_remote_code), where)
    return placement


def meta_param_names(model_cls: Any, config: Any, trust_remote_code: bool = False) -> list[str]:
    """Parameter names of ``model_cls.from_config(config)`` built on the meta device (no memory),
    tied parameters listed under each of their names."""
    import torch

    with torch.device("meta"):
        model = model_cls.from_config(config, trust_remote_code=trust_remote_code)
    return [n for n, _ in model.named_parameters(remove_duplicate=False)]


def execution_device(module: Any) -> Any:
    """The device ``module`` computes on: its accelerate hook's ``execution_device`` when it has one
    (offloaded weights live on ``meta`` between calls), else the device of its first real parameter,
    else the CPU."""
    import torch

    hook = getattr(module, "_hf_hook", None)
    for h in [hook, *getattr(hook, "hooks", ())]:
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return torch.device("cuda", dev) if isinstance(dev, int) else torch.device(dev)
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")
