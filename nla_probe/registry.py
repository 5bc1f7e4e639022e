"""One registry mechanism for everything users refer to by name in specs (hooks, transforms).

A :class:`SpecRegistry` maps names to frozen-dataclass classes that share a base class, and reads
their versioned spec format ``{"version": V, "name": ..., **params}``:

* unknown names raise :class:`~nla_probe.errors.UnknownNameError` listing the valid names;
* re-registering a name needs ``overwrite=True``;
* a spec without ``version`` is read as the current version, an older one is lifted through the
  registry's migrations (``version -> function(spec) -> spec``), a newer or malformed one raises
  :class:`~nla_probe.errors.SpecError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from nla_probe.errors import InputError, SpecError, UnknownNameError


class SpecRegistry:
    """Named classes of one kind plus their spec-version handling.

    Args:
        kind: what the entries are, for messages ("hook", "transform").
        base: a callable returning the base class entries must subclass (a callable so that the
            registry can be created before the base class module is imported).
        version: the current spec version.
        loader: called before every look-up (e.g. to import the module registering built-ins).
    """

    def __init__(self, kind: str, base: Callable[[], type], version: int = 1,
                 loader: Callable[[], None] | None = None):
        self.kind = kind
        self._base = base
        self.version = version
        self.classes: dict[str, type] = {}
        self.migrations: dict[int, Callable[[dict], dict]] = {}
        self._loader = loader

    def _load(self) -> None:
        if self._loader is not None:
            self._loader()

    def names(self) -> list[str]:
        self._load()
        return list(self.classes)

    def get(self, name: str) -> type:
        self._load()
        try:
            return self.classes[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.kind, name, self.classes) from None

    def register(self, cls: type, overwrite: bool = False) -> type:
        """Add ``cls`` (a frozen dataclass subclassing the base, with a non-empty ``name``)."""
        base = self._base()
        if not (isinstance(cls, type) and issubclass(cls, base) and dataclasses.is_dataclass(cls)):
            raise InputError(f"register_{self.kind} takes a dataclass subclassing {base.__name__}, found {cls!r}")
        if not isinstance(cls.name, str) or not cls.name:
            raise InputError(f"register_{self.kind}: {cls.__name__}.name must be a non-empty str")
        if cls.name in self.classes and not overwrite and self.classes[cls.name] is not cls:
            raise InputError(f"{self.kind} {cls.name!r} is already registered; pass overwrite=True")
        self.classes[cls.name] = cls
        return cls

    def current(self, spec: Any, where: str) -> dict:
        """``spec`` as a dict of the current version, without the ``version`` key."""
        if not isinstance(spec, Mapping):
            raise SpecError(f"{where}: expected a dict, found {type(spec).__name__}")
        d = dict(spec)
        version = d.pop("version", self.version)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= self.version:
            raise SpecError(f"{where} field 'version': expected an int in [1, {self.version}], found {version!r}")
        while version < self.version:
            d = self.migrations[version](d)
            version += 1
        return d

    def build(self, body: dict, where: str) -> Any:
        """An instance from a current-version body ``{"name": ..., **params}`` (``body`` is consumed)."""
        if "name" not in body:
            raise SpecError(f"{where} has no 'name'; valid names: {', '.join(sorted(self.names()))}")
        return self.get(body.pop("name")).from_params(body)

    def from_spec(self, spec: Any, where: str | None = None) -> Any:
        """An instance from a spec of any supported version (instances of the base pass through)."""
        if isinstance(spec, self._base()):
            return spec
        where = where or f"{self.kind} spec"
        return self.build(self.current(spec, where), where)
