"""How ``--help`` shows options: no type tag on flags.

Typer 0.2x renders its rich help panels with ``TyperOption.display_type_rich`` for every option,
so a boolean flag (``--json``, ``--no-report``, even ``--help``) is shown with a ``<bool>`` tag as
if it took a value.  Typer's plain help (``get_help_record``) already leaves the type out for
flags and counters; :func:`untag_flags` makes the rich help do the same.  The change is one
wrapper around that method, applied once, and a no-op on typer versions without it.
"""

from __future__ import annotations

from typing import Any


def _display_type_rich(original: Any) -> Any:
    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) or getattr(self, "count", False):
            return None  # a flag takes no value, so there is no type to show
        return original(self, ctx)

    display_type_rich.__wrapped__ = original  # type: ignore[attr-defined]
    display_type_rich._nla_probe_untagged = True  # type: ignore[attr-defined]
    return display_type_rich


def untag_flags() -> bool:
    """Hide the type tag of flag options in typer's rich help; returns whether typer needed it."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - typer without its own option class
        return False
    original = getattr(TyperOption, "display_type_rich", None)
    if original is None:  # pragma: no cover - typer versions that show no type column
        return False
    if not getattr(original, "_nla_probe_untagged", False):
        TyperOption.display_type_rich = _display_type_rich(original)
    return True
