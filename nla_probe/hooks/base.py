"""The generation-hook base class, the logits processors hooks build on, and the hook registry.

A hook is a small frozen dataclass with a ``name`` and explicit parameters (:class:`Hook`); it
acts on the logits of new tokens only, through :meth:`Hook.hf_logits_processors` (transformers) and
:meth:`Hook.vllm_sampling_kwargs` (vLLM).  Hooks round-trip through the spec format
``{"version": 1, "name": ..., **params}`` (:func:`hooks_to_spec` / :func:`hooks_from_spec`).  The
built-in hooks live in :mod:`nla_probe.hooks.bans` and :mod:`nla_probe.hooks.length` and register
themselves when :mod:`nla_probe.hooks` is imported.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from nla_probe.errors import InputError, SpecError, check_keys
from nla_probe.nla.generation import HookContext
from nla_probe.registry import SpecRegistry

#: Current version of the hook spec format.
SPEC_VERSION = 1


def _check_int(value: Any, fname: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{fname}: expected an int >= {minimum}, found {value!r}")
    return value


def _check_choice(value: Any, fname: str, choices: Iterable[str]) -> None:
    if value not in tuple(choices):
        raise InputError(f"{fname}: expected one of {list(choices)}, found {value!r}")


class Hook:
    """Base class of generation hooks (frozen dataclasses with a class-level ``name``)."""

    name: ClassVar[str] = ""

    def params(self) -> dict[str, Any]:
        """Parameters as JSON-safe values."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def to_spec(self) -> dict[str, Any]:
        """``{"version": SPEC_VERSION, "name": ..., **params}``; :func:`hook_from_spec` inverts it."""
        return {"version": SPEC_VERSION, "name": self.name, **self.params()}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Hook:
        """Build from spec params; unknown keys raise :class:`SpecError` listing the valid ones."""
        valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        check_keys(params, valid, f"hook {cls.name!r}")
        try:
            return cls(**params)
        except InputError as e:
            raise SpecError(f"hook {cls.name!r}: {e}") from e
        except TypeError as e:
            raise SpecError(f"hook {cls.name!r}: {e}; valid keys: {valid}") from e

    def describe(self) -> str:
        """``name(key=value, ...)`` for the parameters that differ from their defaults."""
        parts = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)  # type: ignore[arg-type]
                 if f.default is dataclasses.MISSING or getattr(self, f.name) != f.default]
        return f"{self.name}({', '.join(parts)})"

    def hf_logits_processors(self, ctx: HookContext) -> list:
        """Logits processors for transformers ``generate`` (fresh objects per call)."""
        return []

    def vllm_sampling_kwargs(self, ctx: HookContext) -> dict:
        """Keyword arguments merged into vLLM ``SamplingParams`` (see :func:`merge_vllm_kwargs`)."""
        return {}


# ---------------------------------------------------------------- transformers logits processors
class _AddBias:
    """Add ``bias`` to fixed token ids at every step (``-inf`` sets them to ``-inf``).

    Edits ``scores`` in place (only the listed columns): ``generate`` hands every step a fresh
    float32 copy of the logits, and copying a ``[B, vocab]`` tensor per step would cost more than
    the ban itself on large vocabularies.
    """

    def __init__(self, ids: Iterable[int], bias: float):
        self.ids, self.bias, self._index, self._src = list(ids), float(bias), None, None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if not self.ids:
            return scores
        if self._index is None or self._index.device != scores.device:
            self._index = torch.tensor(self.ids, dtype=torch.long, device=scores.device)
        if self.bias == -math.inf:
            return scores.index_fill_(1, self._index, -math.inf)
        shape = (scores.shape[0], len(self.ids))
        if self._src is None or self._src.shape != shape or self._src.dtype != scores.dtype \
                or self._src.device != scores.device:
            self._src = torch.full(shape, self.bias, dtype=scores.dtype, device=scores.device)
        return scores.index_add_(1, self._index, self._src)


class _StepBonus:
    """Add ``bonus(t)`` to fixed ids, ``t`` = tokens generated so far (counted from the first call).

    Edits ``scores`` in place, like :class:`_AddBias`.
    """

    def __init__(self, ids: Iterable[int], bonus: Callable[[int], float]):
        self.ids, self.bonus, self._offset, self._index = list(ids), bonus, None, None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._offset is None:
            self._offset = input_ids.shape[1]
        b = self.bonus(input_ids.shape[1] - self._offset)
        if b == 0 or not self.ids:
            return scores
        if self._index is None or self._index.device != scores.device:
            self._index = torch.tensor(self.ids, dtype=torch.long, device=scores.device)
        scores[:, self._index] += b
        return scores


# ---------------------------------------------------------------- registry and specs
_HOOKS = SpecRegistry("hook", lambda: Hook, version=SPEC_VERSION)
#: Hook classes by name (the registry's dict; the built-ins register when :mod:`nla_probe.hooks` loads).
HOOKS: dict[str, type[Hook]] = _HOOKS.classes


def list_hooks() -> list[str]:
    """Names of the registered hooks."""
    return _HOOKS.names()


def get_hook(name: str) -> type[Hook]:
    """The hook class registered under ``name``; raises :class:`UnknownNameError`."""
    return _HOOKS.get(name)


def register_hook(cls: type[Hook], overwrite: bool = False) -> type[Hook]:
    """Add a hook class (a frozen dataclass subclassing :class:`Hook` with a ``name``)."""
    return _HOOKS.register(cls, overwrite)


def hook_from_spec(spec: Mapping[str, Any] | Hook) -> Hook:
    """Build a hook from ``{"name": ..., **params}`` (optionally with ``"version"``).

    A spec without ``version`` is read as the current version; older versions are migrated; a
    newer version, an unknown name or an unknown key raises (:class:`SpecError` /
    :class:`UnknownNameError`, listing what is valid).
    """
    return _HOOKS.from_spec(spec, "hook spec")


def hooks_from_spec(specs: Iterable[Mapping[str, Any] | Hook] | None) -> tuple[Hook, ...]:
    """A list of hook specs (or hooks) as hooks, in order."""
    if specs is None:
        return ()
    if isinstance(specs, (Mapping, str, Hook)):
        raise SpecError(f"hook specs: expected a list of specs, found {type(specs).__name__}")
    return tuple(hook_from_spec(s) for s in specs)


def hooks_to_spec(hooks: Iterable[Hook]) -> list[dict[str, Any]]:
    """The spec of each hook, in order (what :class:`~nla_probe.nla.generation.Decode` records)."""
    out = []
    for h in hooks:
        if not hasattr(h, "to_spec"):
            raise InputError(f"hooks_to_spec: expected hooks, found {type(h).__name__}")
        out.append(h.to_spec())
    return out
