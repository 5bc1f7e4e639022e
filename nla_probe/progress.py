"""Progress bars (rich) that stay silent when output is not a terminal."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def track(items: Iterable[T], description: str = "", total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a rich progress bar on stderr (transient, disabled when not a TTY)."""
    import sys

    from rich.progress import track as rich_track

    if not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console

    yield from rich_track(items, description=description, total=total, console=Console(stderr=True), transient=True)
