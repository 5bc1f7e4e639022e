"""Ablation specs: an experiment as data (TOML), validated, versioned and round-tripping.

A spec names one experiment of a registered *kind* (:mod:`nla_probe.ablate.kinds`), its
conditions (generation hooks, post-hoc transforms, sampling overrides, kind parameters), the
number of activations, the seed and the metric settings.  ``docs/ablations.md`` lists every key.

* ``Spec.from_toml(text)`` / ``load_spec(path_or_name)`` read a spec; ``Spec.from_dict`` validates
  a plain dict (unknown keys, wrong types, unknown kinds, hooks and transforms raise
  :class:`~nla_probe.errors.SpecError` naming the key and listing the valid choices).
* ``spec.to_dict()`` / ``spec.to_toml()`` write it back; ``Spec.from_dict(spec.to_dict()) == spec``.
* A spec never executes code: hooks and transforms are resolved by name through their registries.

Reading uses the standard library's ``tomllib``; writing uses
:func:`nla_probe.ablate.toml_writer.dumps_toml`, a small serializer for the value types a spec holds.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nla_probe.ablate.toml_writer import dumps_toml
from nla_probe.errors import NLAProbeError, SpecError, check_keys

#: Current version of the spec format (top-level key ``schema_version``).
SCHEMA_VERSION = 1
#: Migrations ``version -> function(dict) -> dict`` lifting a spec dict of that version by one.
_MIGRATIONS: dict[int, Callable[[dict], dict]] = {}

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PRIMARY_METRICS = ("fve_nrm", "cos", "mse_nrm")
_UNITS = ("sample", "cluster")
_OVERFLOW = ("error", "truncate", "nan")
_COND_KEYS = ("name", "description", "hooks", "transforms", "sampling", "seed", "params")


# ----------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Field:
    """One key of a spec table: its type(s), default and an optional check.

    Attributes:
        types: accepted Python types after TOML parsing; ``float`` also accepts ints (converted);
            ``int`` never accepts bools.
        default: value when the key is absent; a callable (``list``, a lambda) is called for a
            fresh value each time; ``REQUIRED`` makes the key mandatory.
        doc: one line for ``docs/ablations.md`` and error messages.
        check: optional ``value -> str | None``; a returned string is the error message.
    """

    types: tuple[type, ...]
    default: Any = None
    doc: str = ""
    check: Callable[[Any], str | None] | None = None


REQUIRED = object()


def _type_names(types: tuple[type, ...]) -> str:
    names = {list: "array", dict: "table", str: "string", int: "integer", float: "float", bool: "boolean",
             type(None): "absent"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _coerce(value: Any, f: Field, where: str) -> Any:
    if isinstance(value, bool) and bool not in f.types:
        raise SpecError(f"{where}: expected {_type_names(f.types)}, found boolean {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and int not in f.types and float in f.types:
        value = float(value)
    if isinstance(value, tuple) and list in f.types:
        value = list(value)
    if isinstance(value, Mapping) and dict in f.types:
        value = dict(value)
    if not isinstance(value, f.types):
        raise SpecError(f"{where}: expected {_type_names(f.types)}, found {type(value).__name__} {value!r}")
    if f.check is not None:
        msg = f.check(value)
        if msg:
            raise SpecError(f"{where}: {msg}, found {value!r}")
    return value


def check_table(data: Any, schema: Mapping[str, Field], where: str) -> dict[str, Any]:
    """Validate a table against ``schema``: unknown keys and wrong types raise :class:`SpecError`.

    Returns a new dict with every schema key (defaults filled in; absent optional keys ``None``).
    """
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: expected a table, found {type(data).__name__} {data!r}")
    check_keys(data, schema, where)
    out = {}
    for key, f in schema.items():
        loc = f"{where}.{key}" if where else key
        if key not in data:
            if f.default is REQUIRED:
                raise SpecError(f"{loc}: required key missing ({f.doc or _type_names(f.types)})")
            out[key] = f.default() if callable(f.default) else f.default
        else:
            out[key] = _coerce(data[key], f, loc)
    return out


def _positive(v: Any) -> str | None:
    return None if v >= 1 else "expected an integer >= 1"


def _name_check(v: str) -> str | None:
    return None if _NAME_RE.fullmatch(v) else "expected a name of letters, digits, '_', '-' or '.'"


def _choice(valid: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in valid else f"expected one of {list(valid)}"


def _level(v: float) -> str | None:
    return None if 0 < v < 1 else "expected a number in (0, 1)"


def _denominator(v: Any) -> str | None:
    if isinstance(v, str):
        from nla_probe.analysis.metrics import DENOMINATORS

        if v == "auto" or v in DENOMINATORS:
            return None
        return f"expected 'auto', a positive number or a registered name ({', '.join(sorted(DENOMINATORS))})"
    return None if math.isfinite(v) and v > 0 else "expected 'auto', a registered name or a positive number"


SAMPLING_FIELDS: dict[str, Field] = {
    "max_new_tokens": Field((int,), 200, "hard cap on generated tokens", _positive),
    "do_sample": Field((bool,), False, "false = greedy decoding"),
    "temperature": Field((float,), 1.0, "sampling temperature (with do_sample)",
                         lambda v: None if v > 0 else "expected > 0"),
    "top_p": Field((float,), 1.0, "nucleus sampling mass (with do_sample)",
                   lambda v: None if 0 < v <= 1 else "expected a number in (0, 1]"),
}

METRICS_FIELDS: dict[str, Field] = {
    "denominator": Field((str, float), "auto",
                         "FVE denominator Var(v_nrm): 'auto', a registered name or a number", _denominator),
    "primary": Field((str,), "fve_nrm", "metric of the tables and tests", _choice(_PRIMARY_METRICS)),
    "n_boot": Field((int,), 2000, "bootstrap resamples", _positive),
    "level": Field((float,), 0.95, "CI coverage", _level),
    "wilcoxon_unit": Field((str,), "sample", "unit of the Wilcoxon test", _choice(_UNITS)),
    "on_overflow": Field((str,), "truncate", "AR policy for texts longer than its context", _choice(_OVERFLOW)),
}

EXPERIMENT_FIELDS: dict[str, Field] = {
    "name": Field((str,), REQUIRED, "experiment name (file names, report headings)", _name_check),
    "kind": Field((str,), REQUIRED, "registered experiment kind"),
    "description": Field((str,), "", "one paragraph for the report"),
}


@dataclass(frozen=True)
class SamplingSpec:
    """Decoding parameters of a spec (the seed is the spec's or the condition's ``seed``)."""

    max_new_tokens: int = 200
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class MetricsSpec:
    """Metric and statistics settings (see ``docs/ablations.md``)."""

    denominator: str | float = "auto"
    primary: str = "fve_nrm"
    n_boot: int = 2000
    level: float = 0.95
    wilcoxon_unit: str = "sample"
    on_overflow: str = "truncate"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Condition:
    """One condition of an experiment.

    Attributes:
        name: unique within the spec.
        description: free text.
        hooks: normalized generation-hook specs (``{"name": ..., **params}``), applied together.
        transforms: normalized post-hoc transform specs, applied left to right to the explanation.
        sampling: overrides of the spec's ``[sampling]`` keys.
        seed: overrides the spec's ``seed`` for this condition's decodes (None: the spec's).
        params: kind-specific parameters (validated by the kind).
    """

    name: str
    description: str = ""
    hooks: tuple[dict, ...] = ()
    transforms: tuple[dict, ...] = ()
    sampling: dict = field(default_factory=dict)
    seed: int | None = None
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict; empty fields are left out (so a kind's unused keys never appear)."""
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        if self.hooks:
            d["hooks"] = [dict(h) for h in self.hooks]
        if self.transforms:
            d["transforms"] = [dict(t) for t in self.transforms]
        if self.sampling:
            d["sampling"] = dict(self.sampling)
        if self.seed is not None:
            d["seed"] = self.seed
        if self.params:
            d["params"] = dict(self.params)
        return d


@dataclass(frozen=True)
class Spec:
    """A validated ablation spec.  Build with :meth:`from_dict`, :meth:`from_toml` or :func:`load_spec`.

    Attributes:
        name, kind, description: the ``[experiment]`` table.
        conditions: the ``[[conditions]]``, in file order.
        baseline: name of the condition every other one is compared with (default: the first).
        n: number of activations used (the first ``n`` rows of the data); None = all.
        seed: seed of sampled decodes and of the bootstrap.
        sampling: decoding defaults; conditions override keys.
        metrics: metric and statistics settings.
        params: kind-specific parameters (defaults filled in).
        schema_version: format version.
    """

    name: str
    kind: str
    conditions: tuple[Condition, ...]
    description: str = ""
    baseline: str = ""
    n: int | None = None
    seed: int = 0
    sampling: SamplingSpec = SamplingSpec()
    metrics: MetricsSpec = MetricsSpec()
    params: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # --------------------------------------------------------------------------- conversions

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON/TOML-safe dict; :meth:`from_dict` inverts it."""
        d: dict[str, Any] = {"schema_version": self.schema_version, "baseline": self.baseline}
        if self.n is not None:
            d["n"] = self.n
        d["seed"] = self.seed
        d["experiment"] = {"name": self.name, "kind": self.kind, "description": self.description}
        d["sampling"] = self.sampling.to_dict()
        d["metrics"] = self.metrics.to_dict()
        d["params"] = dict(self.params)
        d["conditions"] = [c.to_dict() for c in self.conditions]
        return d

    def to_toml(self) -> str:
        """The spec as TOML text (``Spec.from_toml(spec.to_toml()) == spec``)."""
        return dumps_toml(self.to_dict())

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_toml` to ``path``; returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_toml(), encoding="utf-8")
        return p

    def content_hash(self) -> str:
        """sha256 (16 hex digits) of the canonical JSON of :meth:`to_dict`."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, allow_nan=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def condition(self, name: str) -> Condition:
        for c in self.conditions:
            if c.name == name:
                return c
        from nla_probe.errors import UnknownNameError

        raise UnknownNameError("condition", name, [c.name for c in self.conditions])

    def sampling_for(self, condition: Condition) -> dict[str, Any]:
        """Effective decoding parameters of a condition: ``[sampling]`` + overrides + seed."""
        return {**self.sampling.to_dict(), **condition.sampling,
                "seed": self.seed if condition.seed is None else condition.seed}

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> Spec:
        """Parse and validate TOML text; errors are prefixed with ``source``."""
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"{source}: invalid TOML: {e}") from None
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "") -> Spec:
        """Validate a spec dict (see module doc); errors are prefixed with ``source`` if given."""
        try:
            return _from_dict(data)
        except SpecError as e:
            if source:
                raise SpecError(f"{source}: {e}") from None
            raise


# ----------------------------------------------------------------------------------- from_dict


def _drop_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _drop_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_drop_none(v) for v in x]
    return x


def _normalize(spec: Mapping) -> dict:
    """JSON round trip (tuples -> lists) without None values (TOML has no null; None = the default),
    so normalized specs compare equal after TOML round trips."""
    return _drop_none(json.loads(json.dumps(dict(spec), ensure_ascii=False)))


def _resolve_list(items: Any, where: str, what: str) -> tuple[dict, ...]:
    """Validate a list of hook or transform specs through their registry; returns normalized specs."""
    if not isinstance(items, (list, tuple)):
        raise SpecError(f"{where}: expected an array of {what} tables, found {type(items).__name__} {items!r}")
    if not items:
        return ()
    if what == "hook":
        try:
            from nla_probe.hooks import hook_from_spec as build
        except ImportError as e:  # pragma: no cover - only on a partial checkout
            raise SpecError(f"{where}: generation hooks are unavailable ({e})") from None
    else:
        from nla_probe.surgery import from_spec as build
    out = []
    for i, item in enumerate(items):
        loc = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError(f"{loc}: expected a {what} table like {{name = \"...\"}}, found {item!r}")
        try:
            obj = build(dict(item))
        except NLAProbeError as e:
            raise SpecError(f"{loc}: {e}") from None
        out.append(_normalize(obj.to_spec()))
    return tuple(out)


def _migrate(data: dict) -> dict:
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise SpecError(f"schema_version: expected an integer in [1, {SCHEMA_VERSION}] (this nla-probe reads "
                        f"up to version {SCHEMA_VERSION}), found {version!r}")
    while version < SCHEMA_VERSION:
        data = _MIGRATIONS[version](data)
        version += 1
    data["schema_version"] = SCHEMA_VERSION
    return data


def _conditions(raw: Any, kind_cls: Any) -> tuple[Condition, ...]:
    if not isinstance(raw, (list, tuple)) or not raw:
        raise SpecError(f"conditions: expected a non-empty array of [[conditions]] tables, found {raw!r}")
    allowed = set(kind_cls.condition_keys) | {"name", "description"}
    out, seen = [], set()
    for i, item in enumerate(raw):
        where = f"conditions[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError(f"{where}: expected a table, found {item!r}")
        if isinstance(item.get("name"), str):
            where = f"conditions[{i}] ({item['name']!r})"
        check_keys(item, _COND_KEYS, where, shown=allowed)
        unused = [k for k in item if k not in allowed]
        if unused:
            raise SpecError(f"{where}: key(s) {unused} are not used by kind {kind_cls.name!r}; "
                            f"valid keys: {sorted(allowed)}")
        if "name" not in item:
            raise SpecError(f"{where}.name: required key missing (a unique condition name)")
        name = _coerce(item["name"], Field((str,), check=_name_check), f"conditions[{i}].name")
        if name in seen:
            raise SpecError(f"{where}: duplicate condition name {name!r}")
        seen.add(name)
        samp = check_table(item.get("sampling", {}), SAMPLING_FIELDS, f"{where}.sampling")
        out.append(Condition(
            name=name,
            description=_coerce(item.get("description", ""), Field((str,)), f"{where}.description"),
            hooks=_resolve_list(item.get("hooks", []), f"{where}.hooks", "hook"),
            transforms=_resolve_list(item.get("transforms", []), f"{where}.transforms", "transform"),
            sampling={k: samp[k] for k in item.get("sampling", {})},
            seed=None if "seed" not in item else _coerce(item["seed"], Field((int,)), f"{where}.seed"),
            params=check_table(item.get("params", {}), kind_cls.condition_params, f"{where}.params"),
        ))
    return tuple(out)


_TOP_KEYS = ("schema_version", "baseline", "n", "seed", "experiment", "sampling", "metrics", "params", "conditions")


def _from_dict(data: Any) -> Spec:
    from nla_probe.ablate.kinds import get_experiment

    if not isinstance(data, Mapping):
        raise SpecError(f"spec: expected a table, found {type(data).__name__}")
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        raise SpecError(f"unknown top-level key(s) {unknown}; valid keys: {sorted(_TOP_KEYS)}")
    data = _migrate(dict(data))
    for key in ("experiment", "conditions"):
        if key not in data:
            raise SpecError(f"{key}: required {'table [experiment]' if key == 'experiment' else '[[conditions]]'} "
                            "missing")
    exp = check_table(data["experiment"], EXPERIMENT_FIELDS, "experiment")
    try:
        kind_cls = get_experiment(exp["kind"])
    except KeyError as e:
        raise SpecError(f"experiment.kind: {e}") from None
    top = check_table({k: data[k] for k in ("baseline", "n", "seed") if k in data}, {
        "baseline": Field((str,), "", "baseline condition name"),
        "n": Field((int, type(None)), None, "number of activations", lambda v: None if v is None or v >= 1
                   else "expected an integer >= 1"),
        "seed": Field((int,), 0, "seed"),
    }, "")
    sampling = SamplingSpec(**check_table(data.get("sampling", {}), SAMPLING_FIELDS, "sampling"))
    metrics = MetricsSpec(**check_table(data.get("metrics", {}), METRICS_FIELDS, "metrics"))
    params = check_table(data.get("params", {}), kind_cls.params, "params")
    conditions = _conditions(data["conditions"], kind_cls)
    baseline = top["baseline"] or conditions[0].name
    if baseline not in {c.name for c in conditions}:
        raise SpecError(f"baseline: {baseline!r} is not a condition; conditions: {[c.name for c in conditions]}")
    spec = Spec(name=exp["name"], kind=exp["kind"], description=exp["description"], conditions=conditions,
                baseline=baseline, n=top["n"], seed=top["seed"], sampling=sampling, metrics=metrics,
                params=params, schema_version=SCHEMA_VERSION)
    kind_cls.validate(spec)
    return spec


# ----------------------------------------------------------------------------------- files


def list_specs(directory: str | Path | None = None) -> list[Path]:
    """The ``*.toml`` spec files under ``directory`` (default: the repository's ``ablations/``)."""
    from nla_probe.defaults import ABLATIONS_DIR

    d = Path(directory) if directory is not None else ABLATIONS_DIR
    return sorted(d.rglob("*.toml")) if d.is_dir() else []


def load_spec(path_or_name: str | Path) -> Spec:
    """A spec from a TOML file path, or by name: a file stem or experiment name under ``ablations/``."""
    p = Path(path_or_name)
    if p.is_file():
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError(f"{p}: cannot read spec file ({e})") from None
        return Spec.from_toml(text, source=str(p))
    if p.suffix == ".toml" or p.parent != Path("."):
        raise SpecError(f"{p}: spec file not found")
    candidates = list_specs()
    for c in candidates:
        if c.stem == str(path_or_name):
            return load_spec(c)
    for c in candidates:
        try:
            spec = load_spec(c)
        except SpecError:
            continue
        if spec.name == str(path_or_name):
            return spec
    from nla_probe.defaults import ABLATIONS_DIR

    names = sorted(c.stem for c in candidates)
    raise SpecError(f"{path_or_name!r}: not a spec file and not a spec name under {ABLATIONS_DIR}; "
                    f"valid names: {', '.join(names) or '(none)'}")
