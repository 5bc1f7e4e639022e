"""Registry of benchmarks run by ``nla-probe bench``.

A benchmark is a function ``fn(ctx: BenchContext) -> list[BenchResult]`` that measures two or
more variants side by side *in the same run* and reports their ratio.  Modules register theirs
with :func:`register_benchmark`; ``nla-probe bench`` imports :data:`BENCHMARK_MODULES` and runs
every registered benchmark (or the ones named with ``--only``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nla_probe.errors import InputError, UnknownNameError

#: Modules whose import registers benchmarks (imported lazily by ``nla-probe bench``).
BENCHMARK_MODULES = (
    "nla_probe.bench.common",
    "nla_probe.bench.hooks",
    "nla_probe.bench.grammar",
    "nla_probe.bench.surgery",
    "nla_probe.bench.copying",
    "nla_probe.bench.ablate",
)


@dataclass(frozen=True)
class BenchContext:
    """What every benchmark may use: the pair to measure (AV and AR directories) and a size knob.

    Attributes:
        av_dir: AV checkpoint directory.
        ar_dir: AR checkpoint directory.
        n: number of items per measurement (vectors, texts, explanations); benchmarks may scale it.
        device: torch device string.
        backends: generation backends to measure ("hf", "vllm").
    """

    av_dir: Path
    ar_dir: Path
    n: int = 64
    device: str = "cpu"
    backends: tuple[str, ...] = ("hf",)


@dataclass(frozen=True)
class BenchResult:
    """One side-by-side measurement.

    Attributes:
        name: benchmark name.
        metric: what ``values`` measure, with units (e.g. "tokens/s").
        values: variant label -> measured value, all from the same run.
        ratio: ``values[numerator] / values[denominator]`` as named in ``ratio_of``.
        ratio_of: ``(numerator, denominator)`` variant labels.
        target: human-readable bar, e.g. ">= 3.0" (empty if none).
        passed: whether ``ratio`` meets ``target`` (None if no target).
        notes: free text (sizes, caveats).
    """

    name: str
    metric: str
    values: dict[str, float]
    ratio_of: tuple[str, str]
    target: str = ""
    passed: bool | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        num, den = self.ratio_of
        d = self.values[den]
        return float("nan") if d == 0 else self.values[num] / d


BenchFn = Callable[[BenchContext], list[BenchResult]]
_BENCHMARKS: dict[str, BenchFn] = {}


def register_benchmark(name: str, overwrite: bool = False) -> Callable[[BenchFn], BenchFn]:
    """Decorator registering ``fn`` under ``name``."""

    def deco(fn: BenchFn) -> BenchFn:
        if name in _BENCHMARKS and not overwrite and _BENCHMARKS[name] is not fn:
            raise InputError(f"benchmark {name!r} is already registered; pass overwrite=True")
        _BENCHMARKS[name] = fn
        return fn

    return deco


def load_benchmarks() -> dict[str, BenchFn]:
    """Import every module of :data:`BENCHMARK_MODULES` that exists and return the registry."""
    import importlib

    for mod in BENCHMARK_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    return dict(_BENCHMARKS)


def list_benchmarks() -> list[str]:
    return list(load_benchmarks())


def get_benchmark(name: str) -> BenchFn:
    registry = load_benchmarks()
    if name not in registry:
        raise UnknownNameError("benchmark", name, registry)
    return registry[name]
