"""Registry and spec format of explanation transforms (:mod:`nla_probe.transforms`).

* **Registry.** One explicit dict ``name -> class``; :func:`list_transforms`,
  :func:`get_transform` (unknown names raise :class:`~nla_probe.errors.UnknownNameError` listing
  the valid ones) and :func:`register_transform` (``overwrite=False`` guards re-registration).
  The built-in transforms register themselves when :mod:`nla_probe.transforms` is imported; the
  look-ups here import it first, so this module can be used on its own.
* **Callables.** User functions ``str -> str`` are registered under a label
  (:func:`register_callable`) so that ``{"name": "callable", "label": ...}`` specs load.
* **Spec.** A transform is ``{"name": ..., **params}``; :func:`to_spec` adds ``"version":
  SPEC_VERSION``; :func:`from_spec` reads a spec of any version up to the current one (older
  versions are lifted by ``_MIGRATIONS``) and rejects unknown names and keys, listing the valid ones.

This module does not import :mod:`nla_probe.transforms` at import time, so the two never import
each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import InputError, SpecError, UnknownNameError
from .registry import SpecRegistry

if TYPE_CHECKING:  # pragma: no cover
    from .transforms import Transform

#: Current version of the transform spec format.
SPEC_VERSION = 1

def _load_builtins() -> None:
    """Import :mod:`nla_probe.transforms`, which registers the built-in transforms."""
    from . import transforms  # noqa: F401


def _transform_base() -> type:
    from .transforms import Transform

    return Transform


_TRANSFORMS = SpecRegistry("transform", _transform_base, version=SPEC_VERSION, loader=_load_builtins)
#: Transform classes by ``name`` (the built-ins are added by :mod:`nla_probe.transforms`).
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
    if isinstance(spec, _transform_base()):
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
    from .transforms import Transform

    if not isinstance(transform, Transform):
        raise InputError(f"to_spec: expected a Transform, found {type(transform).__name__}")
    return transform.to_spec()
