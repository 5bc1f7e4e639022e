"""A small TOML writer for the value types ablation specs hold: str, int, float, bool, lists, tables.

:func:`dumps_toml` is the inverse of ``tomllib.loads`` on those types
(``tomllib.loads(dumps_toml(d)) == d``): top-level tables become ``[table]`` sections, top-level
lists of tables become ``[[array]]`` sections, deeper tables are inline.  ``None`` has no TOML
form and raises; strings are written as basic strings with the escapes TOML requires.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from nla_probe.errors import SpecError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_str(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\n\t\r\b\f":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04X}")
        elif 0xD800 <= o <= 0xDFFF:
            raise SpecError(f"cannot write a lone surrogate U+{o:04X} to TOML")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(k: Any) -> str:
    if not isinstance(k, str):
        raise SpecError(f"TOML keys must be strings, found {k!r}")
    return k if _BARE_KEY.fullmatch(k) else _toml_str(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        r = repr(v)
        return r if any(c in r for c in ".en") else r + ".0"
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise SpecError(f"cannot write a value of type {type(v).__name__} to TOML: {v!r}")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(x, Mapping) for x in v)


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Serialize a dict to TOML: scalars and lists first, then ``[tables]`` and ``[[arrays]]``.

    Top-level dicts become tables, top-level non-empty lists of dicts become arrays of tables;
    deeper dicts are inline tables.  ``None`` values are not representable and raise.
    """
    lines: list[str] = []
    tables, arrays = [], []
    for k, v in data.items():
        if v is None:
            raise SpecError(f"cannot write key {k!r} = None to TOML (leave the key out instead)")
        if isinstance(v, Mapping):
            tables.append((k, v))
        elif _is_table_array(v):
            arrays.append((k, v))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in tables:
        lines += ["", f"[{_toml_key(k)}]"] + [f"{_toml_key(a)} = {_toml_value(b)}" for a, b in v.items()]
    for k, items in arrays:
        for item in items:
            lines += ["", f"[[{_toml_key(k)}]]"] + [f"{_toml_key(a)} = {_toml_value(b)}" for a, b in item.items()]
    return "\n".join(lines).lstrip("\n") + "\n"
