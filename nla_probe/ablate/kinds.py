"""The registry of experiment kinds that ``nla-probe ablate`` runs.

A kind is a subclass of :class:`ExperimentKind` registered under its ``name``.  It declares what
its spec may hold (condition keys, ``[params]`` and ``[conditions.params]`` fields), which extra
result columns it writes, and implements :meth:`ExperimentKind.run`, a generator that walks the
activations chunk by chunk through the cached primitives of the run context
(:class:`nla_probe.ablate.engine.RunContext`: ``decode``, ``score``, ``base_rows``, ``cached``) and
yields one batch of result rows per chunk.  The engine streams those rows to parquet, computes the
statistics and writes the report; a kind only adds its text, caveats, summary columns and, if it
wants, whole extra report sections (:meth:`ExperimentKind.report_sections`).

Built-in kinds live in modules of :mod:`nla_probe.experiments` (listed in :data:`BUILTIN_KINDS`,
or named after their kind); a module is imported by name the first time its kind is looked up, the
way plugins are found, so importing the registry stays cheap and the engine never imports the
kinds' package statically.

Adding a kind (see ``docs/ablations.md``)::

    from nla_probe.ablate.kinds import ExperimentKind, register_experiment

    @register_experiment
    class MyKind(ExperimentKind):
        name = "my_kind"
        description = "one line"
        def run(self, spec, ctx):
            for chunk in ctx.chunks():
                ...
                yield rows
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from nla_probe.errors import InputError, SpecError, UnknownNameError, check_keys

if TYPE_CHECKING:  # pragma: no cover
    from nla_probe.ablate.engine import RunContext
    from nla_probe.ablate.spec import Field, Spec

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class ExperimentKind:
    """Base class of experiment kinds.

    Class attributes:
        name: registry key (the spec's ``experiment.kind``).
        description: one line for ``list_experiments`` and the docs.
        condition_keys: the condition keys besides ``name``/``description`` this kind uses, from
            ``("hooks", "transforms", "sampling", "seed", "params")``; others are rejected.
        params: schema of the spec's ``[params]`` table (name -> :class:`nla_probe.ablate.spec.Field`).
        condition_params: schema of each condition's ``params`` table.
        columns: extra result columns this kind writes, name -> polars dtype name
            (``"Int64"``, ``"Float64"``, ``"Utf8"``, ``"Boolean"``), documented in ``docs/ablations.md``.
        column_docs: one definition per extra column or summary mean (report "Definitions").
        summary_means: extra columns averaged per condition in the summary table (name -> column).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    condition_keys: ClassVar[tuple[str, ...]] = ("hooks", "transforms", "sampling", "seed", "params")
    params: ClassVar[Mapping[str, Field]] = _EMPTY
    condition_params: ClassVar[Mapping[str, Field]] = _EMPTY
    columns: ClassVar[Mapping[str, str]] = _EMPTY
    column_docs: ClassVar[Mapping[str, str]] = _EMPTY
    summary_means: ClassVar[Mapping[str, str]] = _EMPTY

    @classmethod
    def validate(cls, spec: Spec) -> None:
        """Cross-field checks after the generic validation; raise :class:`SpecError`."""

    def run(self, spec: Spec, ctx: RunContext) -> Iterator[dict[str, list]]:
        """Yield one dict of result columns per chunk of activations (see module doc)."""
        raise NotImplementedError

    def section_text(self, spec: Spec, summary: Any) -> str:
        """Extra markdown for the report section (after the generic description)."""
        return ""

    def caveats(self, spec: Spec) -> list[str]:
        """Caveat sentences of this experiment's report section."""
        return []

    def report_sections(self, spec: Spec, frame: Any, out_dir: Path) -> list:
        """Extra :class:`~nla_probe.ablate.markdown.ReportSection` s placed after the experiment's main section.

        Args:
            spec: the spec the experiment ran with.
            frame: its result frame (polars, one row per activation x condition).
            out_dir: the report directory (write figures under ``out_dir / "figures"``).
        """
        return []


_REGISTRY: dict[str, type[ExperimentKind]] = {}

#: Package holding the built-in kinds (one module per kind, imported by name on first use).
KINDS_PACKAGE = "nla_probe.experiments"
#: Built-in kinds and the module (in :data:`KINDS_PACKAGE`) that registers each; imported on first use.
BUILTIN_KINDS: Mapping[str, str] = MappingProxyType({
    "roundtrip": "roundtrip", "redaction": "redaction", "quote_ban": "quote_ban", "length": "length",
    "best_of_n": "best_of_n", "corroborate": "corroborate", "adjacent_layer": "adjacent_layer",
    "layer_sweep": "layer_sweep", "cross_family": "cross_family", "ridge": "ridge", "copying": "copying",
})


def register_experiment(cls: type[ExperimentKind] | None = None, *, overwrite: bool = False) -> Any:
    """Register an :class:`ExperimentKind` subclass under its ``name`` (usable as a decorator).

    Raises:
        InputError: not a subclass, empty name, or the name is taken and ``overwrite`` is False.
    """
    def _register(kind: type[ExperimentKind]) -> type[ExperimentKind]:
        if not (isinstance(kind, type) and issubclass(kind, ExperimentKind)):
            raise InputError(f"register_experiment takes an ExperimentKind subclass, found {kind!r}")
        if not isinstance(kind.name, str) or not kind.name:
            raise InputError(f"register_experiment: {kind.__name__}.name must be a non-empty str")
        if kind.name in _REGISTRY and _REGISTRY[kind.name] is not kind and not overwrite:
            raise InputError(f"experiment kind {kind.name!r} is already registered; pass overwrite=True")
        check_keys(kind.condition_keys, ("hooks", "transforms", "sampling", "seed", "params"),
                   f"{kind.__name__}.condition_keys", InputError)
        _REGISTRY[kind.name] = kind
        return kind

    return _register if cls is None else _register(cls)


def _module_names() -> list[str]:
    """Modules of :data:`KINDS_PACKAGE` that may register kinds: the built-in table plus any other module."""
    import pkgutil

    package = importlib.import_module(KINDS_PACKAGE)
    found = [m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")]
    return list(dict.fromkeys([*BUILTIN_KINDS.values(), *sorted(found)]))


def _import_for(name: str) -> None:
    """Import the module that registers kind ``name``: its :data:`BUILTIN_KINDS` entry, else a module
    of the same name in :data:`KINDS_PACKAGE` (so a new kind needs no edit here)."""
    if name in _REGISTRY:
        return
    module = BUILTIN_KINDS.get(name, name)
    if module in _module_names():
        importlib.import_module(f"{KINDS_PACKAGE}.{module}")


def list_experiments() -> list[str]:
    """Names of the registered experiment kinds (every module of this package imported)."""
    for module in _module_names():
        importlib.import_module(f"{KINDS_PACKAGE}.{module}")
    return sorted(_REGISTRY)


def get_experiment(name: str) -> type[ExperimentKind]:
    """The kind registered under ``name``; raises :class:`UnknownNameError` listing the valid kinds."""
    if isinstance(name, str):
        _import_for(name)
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownNameError("experiment kind", name, list_experiments()) from None


__all__ = ["BUILTIN_KINDS", "ExperimentKind", "SpecError", "get_experiment", "list_experiments",
           "register_experiment"]
