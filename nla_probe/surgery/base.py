"""The transform base class, the transform registry and the transform spec format.

* **Base class.** :class:`Transform`: a frozen dataclass with a class-level ``name`` and explicit
  parameters; ``__call__(text) -> str`` is pure and deterministic.  :class:`Compose` chains
  transforms (``a | b``); :class:`FromCallable` wraps a user function.
* **Registry.** One explicit dict ``name -> class``; :func:`list_transforms`,
  :func:`get_transform` (unknown names raise :class:`~nla_probe.errors.UnknownNameError` listing
  the valid ones) and :func:`register_transform` (``overwrite=False`` guards re-registration).
  The built-in transforms (:mod:`nla_probe.surgery.transforms`) register themselves when
  :mod:`nla_probe.surgery` is imported.
* **Callables.** User functions ``str -> str`` are registered under a label
  (:func:`register_callable`) so that ``{"name": "callable", "label": ...}`` specs load.
* **Spec.** A transform is ``{"name": ..., **params}``; :func:`to_spec` adds ``"version":
  SPEC_VERSION``; :func:`from_spec` reads a spec of any version up to the current one (older
  versions are lifted by ``_MIGRATIONS``) and rejects unknown names and keys, listing the valid ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nla_probe.errors import InputError, SpecError, UnknownNameError, check_keys
from nla_probe.registry import SpecRegistry
from nla_probe.text.delimiters import expand_family_names

_DEFAULT_FAMILIES = ("quotes",)


def _families(value: Any, owner: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{owner}.families: expected family names (str or list of str), found {value!r}")
    value = tuple(value)
    if not value:
        raise InputError(f"{owner}.families: expected at least one family name, found none")
    expand_family_names(value)  # raises UnknownNameError listing valid names
    return value


def _check_int(value: Any, fname: str, minimum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{fname}: expected an int, found {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(f"{fname}: expected >= {minimum}, found {value}")


def _check_choice(value: Any, fname: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InputError(f"{fname}: expected one of {list(choices)}, found {value!r}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


class Transform:
    """Base class of transforms: frozen dataclasses with a class-level ``name``.

    Subclasses implement ``__call__(text) -> str``.  A field's spec key is its name unless its
    metadata says ``spec_key``; fields with ``metadata={"spec": False}`` (live tokenizers) are not
    serialized.
    """

    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        """Validate and normalize a ``families`` field (str or list of names -> tuple)."""
        if "families" in getattr(self, "__dataclass_fields__", {}):
            object.__setattr__(self, "families", _families(self.families, self.name))

    def __call__(self, text: str) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def apply(self, texts: Iterable[str]) -> list[str]:
        """The transform applied to each text."""
        return [self(t) for t in texts]

    def __or__(self, other: Transform) -> Compose:
        if not isinstance(other, Transform):
            return NotImplemented
        left = self.steps if isinstance(self, Compose) else (self,)
        right = other.steps if isinstance(other, Compose) else (other,)
        return Compose(left + right)

    @classmethod
    def _spec_fields(cls) -> list[tuple[str, dataclasses.Field]]:
        return [(f.metadata.get("spec_key", f.name), f) for f in dataclasses.fields(cls)
                if f.metadata.get("spec", True)]

    def params(self) -> dict[str, Any]:
        """The parameters as JSON-safe values, keyed by spec key."""
        return {key: _jsonable(getattr(self, f.name)) for key, f in self._spec_fields()}

    def spec_body(self) -> dict[str, Any]:
        """``{"name": ..., **params}`` without the version field (used inside :class:`Compose`)."""
        return {"name": self.name, **self.params()}

    def to_spec(self) -> dict[str, Any]:
        """``{"version": SPEC_VERSION, "name": ..., **params}``; :func:`from_spec` inverts it."""
        return {"version": SPEC_VERSION, **self.spec_body()}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Transform:
        """Build from spec params (no ``name``/``version``); unknown keys raise :class:`SpecError`."""
        keys = dict(cls._spec_fields())
        check_keys(params, keys, f"transform {cls.name!r}")
        try:
            return cls(**{keys[k].name: v for k, v in params.items()})
        except InputError as e:
            raise SpecError(f"transform {cls.name!r}: {e}") from e

    def describe(self) -> str:
        """``name`` or ``name(key=value, ...)`` listing the parameters that differ from defaults."""
        parts = []
        for key, f in self._spec_fields():
            value = getattr(self, f.name)
            if value == f.default:
                continue
            shown = f"<{len(value)} strings>" if key == "vocab" else _short(_jsonable(value))
            parts.append(f"{key}={shown}")
        return f"{self.name}({', '.join(parts)})" if parts else self.name

    def bind(self, *, tokenizer: Any = None) -> Transform:
        """A copy with run-time resources filled in (the AR tokenizer); no-op unless overridden."""
        return self


def _short(v: Any) -> str:
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return "+".join(v)
    if isinstance(v, dict):
        return ",".join(f"{k}:{_short(x)}" for k, x in v.items())
    return str(v)


#: Current version of the transform spec format.
SPEC_VERSION = 1

_TRANSFORMS = SpecRegistry("transform", lambda: Transform, version=SPEC_VERSION)
#: Transform classes by ``name`` (the built-ins are added by :mod:`nla_probe.surgery.transforms`).
_REGISTRY: dict[str, type[Transform]] = _TRANSFORMS.classes
#: Migrations ``version -> function(spec) -> spec`` that lift a spec of that version by one.
#: Version 1 is the first; add an entry here when the format changes.
_MIGRATIONS: dict[int, Callable[[dict], dict]] = _TRANSFORMS.migrations

#: User functions of ``{"name": "callable", "label": ...}`` specs, by label.
_CALLABLES: dict[str, Callable[[str], str]] = {}


def list_transforms() -> list[str]:
    """Names of the registered transforms."""
    return _TRANSFORMS.names()


def get_transform(name: str) -> type[Transform]:
    """The transform class registered under ``name``; raises :class:`UnknownNameError`."""
    return _TRANSFORMS.get(name)


def register_transform(cls: type[Transform], overwrite: bool = False) -> type[Transform]:
    """Add a transform class (a frozen dataclass subclassing :class:`Transform` with a ``name``)."""
    return _TRANSFORMS.register(cls, overwrite)


def register_callable(label: str, fn: Callable[[str], str], overwrite: bool = False) -> None:
    """Register ``fn`` under ``label`` so that ``{"name": "callable", "label": label}`` loads."""
    if not isinstance(label, str) or not label:
        raise InputError(f"register_callable: label must be a non-empty str, found {label!r}")
    if not callable(fn):
        raise InputError(f"register_callable: fn must be callable, found {type(fn).__name__}")
    if label in _CALLABLES and not overwrite and _CALLABLES[label] is not fn:
        raise InputError(f"callable {label!r} is already registered; pass overwrite=True")
    _CALLABLES[label] = fn


def list_callables() -> list[str]:
    """Labels of the registered callables."""
    return list(_CALLABLES)


def get_callable(label: str) -> Callable[[str], str]:
    """The function registered under ``label``; raises :class:`UnknownNameError`."""
    try:
        return _CALLABLES[label]
    except (KeyError, TypeError):
        raise UnknownNameError("callable", label, _CALLABLES) from None


def build_transform(spec: Any, where: str) -> Transform:
    """A transform from a spec body ``{"name": ..., **params}`` (a ``"version"`` key is dropped, not
    checked: this is the form of the steps inside a ``compose`` spec).  ``spec`` is consumed;
    ``where`` names the spec in error messages.  Transforms pass through unchanged."""
    if isinstance(spec, Transform):
        return spec
    if not isinstance(spec, dict):
        raise SpecError(f"{where}: expected a transform spec dict, found {spec!r}")
    spec.pop("version", None)
    return _TRANSFORMS.build(spec, where)


def from_spec(spec: Mapping[str, Any] | Transform) -> Transform:
    """Build a transform from ``{"name": ..., **params}`` (optionally with ``"version"``).

    A spec without ``version`` is read as the current version; older versions are migrated; a
    newer version, an unknown name or an unknown key raises (:class:`SpecError` /
    :class:`UnknownNameError`, both listing what is valid).
    """
    return _TRANSFORMS.from_spec(spec, "transform spec")


def to_spec(transform: Transform) -> dict[str, Any]:
    """Same as ``transform.to_spec()``."""
    if not isinstance(transform, Transform):
        raise InputError(f"to_spec: expected a Transform, found {type(transform).__name__}")
    return transform.to_spec()


@dataclass(frozen=True)
class FromCallable(Transform):
    """A user function ``str -> str`` (e.g. an LLM paraphrase) as a transform.

    The spec records only ``label``; :func:`from_spec` resolves it through :func:`register_callable`.
    Purity and determinism are the function's responsibility; a non-``str`` result raises.

    Args:
        fn: the function (not serialized).
        label: the name it is recorded and registered under.
    """

    name: ClassVar[str] = "callable"
    fn: Callable[[str], str] | None = field(default=None, metadata={"spec": False})
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise InputError(f"{self.name}.label: expected a non-empty str, found {self.label!r}")
        if self.fn is None:
            object.__setattr__(self, "fn", get_callable(self.label))
        elif not callable(self.fn):
            raise InputError(f"{self.name}.fn: expected a callable, found {type(self.fn).__name__}")

    def __call__(self, text: str) -> str:
        out = self.fn(text)  # type: ignore[misc]
        if not isinstance(out, str):
            raise InputError(f"callable {self.label!r} returned {type(out).__name__}, expected str")
        return out


@dataclass(frozen=True)
class Compose(Transform):
    """Apply ``steps`` left to right: ``Compose([a, b])(t) == b(a(t))``; ``a | b`` builds the same."""

    name: ClassVar[str] = "compose"
    steps: tuple[Transform, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.steps, (str, bytes, Mapping)) or not isinstance(self.steps, Iterable):
            raise InputError(f"compose.steps: expected a list of transforms, found {self.steps!r}")
        steps = tuple(self.steps)
        if not steps:
            raise InputError("compose.steps: pass at least one transform")
        bad = [i for i, s in enumerate(steps) if not isinstance(s, Transform)]
        if bad:
            raise InputError(f"compose.steps: items {bad} are not transforms (wrap functions in FromCallable)")
        object.__setattr__(self, "steps", steps)

    def params(self) -> dict[str, Any]:
        return {"steps": [s.spec_body() for s in self.steps]}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Transform:
        check_keys(params, ["steps"], "transform 'compose'")
        steps = params.get("steps")
        if not isinstance(steps, (list, tuple)):
            raise SpecError(f"transform 'compose': steps must be a list of specs, found {steps!r}")
        return cls(tuple(build_transform(dict(s) if isinstance(s, Mapping) else s, "compose.steps") for s in steps))

    def describe(self) -> str:
        return " | ".join(s.describe() for s in self.steps)

    def bind(self, *, tokenizer: Any = None) -> Transform:
        return Compose(tuple(s.bind(tokenizer=tokenizer) for s in self.steps))

    def __call__(self, text: str) -> str:
        for step in self.steps:
            text = step(text)
        return text

