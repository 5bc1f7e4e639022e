"""Progress reporting: rich progress bars on a terminal (stderr), and plain periodic lines
(:class:`ProgressLines`) when output goes to a log or a pipe, so a long run is never silent."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

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


def _clock(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour) of a non-negative number of seconds."""
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressLines:
    """Plain, periodic progress lines for output that goes to a log instead of a terminal.

    One line per update, at most one every ``interval`` seconds per experiment, plus the first update
    and a closing line of each experiment::

        [ablate] quote_ban: chunk 3/7, conditions no_ban, ban_double (+5), 672/1400 rows (48%),
            33.1 rows/s, elapsed 0:20, ETA 0:22

    Rows are result rows (one per activation × condition); ``rows/s`` = rows written / seconds since
    the experiment started; ETA = elapsed × (expected − written) / written, with ``expected`` =
    activations × conditions of the spec ("n/a" once a kind writes more rows than that, e.g. extra
    null conditions).

    Args:
        stream: a text stream with ``write``/``flush`` (e.g. ``sys.stdout``).
        interval: minimum seconds between two lines of one experiment.
        clock: monotonic clock in seconds (replaceable in tests).
        prefix: text in brackets at the start of each line.
    """

    def __init__(self, stream: Any, interval: float = 10.0, clock: Any = None, prefix: str = "ablate"):
        import time

        self.stream, self.interval, self.prefix = stream, float(interval), prefix
        self.clock = clock if clock is not None else time.monotonic
        self._name = ""
        self._expected = 0
        self._n_chunks = 0
        self._t0 = self._last = 0.0
        self._updates = 0
        self._rows = 0

    @classmethod
    def for_stdout(cls, **kwargs: Any) -> ProgressLines | None:
        """Lines on ``sys.stdout`` when it is not a terminal (a log file or a pipe); None on a terminal,
        where the rich progress bars on stderr show instead."""
        import sys

        out = sys.stdout
        isatty = getattr(out, "isatty", None)
        if out is None or (isatty is not None and isatty()):
            return None
        return cls(out, **kwargs)

    def _emit(self, text: str) -> None:
        self.stream.write(f"[{self.prefix}] {text}\n")
        self.stream.flush()

    def start(self, name: str, expected_rows: int, n_chunks: int) -> None:
        """Begin an experiment: ``expected_rows`` result rows in ``n_chunks`` chunks of activations."""
        self._name, self._expected, self._n_chunks = name, int(expected_rows), int(n_chunks)
        self._t0 = self._last = self.clock()
        self._updates = 0
        self._rows = 0
        self._emit(f"{name}: started, {self._expected} rows expected in {self._n_chunks} chunk(s)")

    def _status(self, rows: int, now: float) -> str:
        elapsed = max(now - self._t0, 0.0)
        pct = f" ({100 * rows / self._expected:.0f}%)" if self._expected else ""
        if 0 < rows < self._expected and elapsed > 0:
            eta = _clock(elapsed * (self._expected - rows) / rows)
        else:
            eta = "n/a"
        rate_s = f"{rows / elapsed:.1f}" if elapsed > 0 else "n/a"
        return f"{rows}/{self._expected} rows{pct}, {rate_s} rows/s, elapsed {_clock(elapsed)}, ETA {eta}"

    def update(self, chunk: int, rows: int, conditions: Iterable[str] = ()) -> bool:
        """Report ``rows`` result rows written after chunk ``chunk`` (1-based) of the experiment, the
        latest batch holding ``conditions``; returns whether a line was printed (throttled)."""
        now = self.clock()
        self._rows = rows
        if self._updates and now - self._last < self.interval:
            self._updates += 1
            return False
        self._updates += 1
        self._last = now
        conds = list(dict.fromkeys(conditions))
        shown = ", ".join(conds[:2]) + (f" (+{len(conds) - 2})" if len(conds) > 2 else "")
        label = "condition" if len(conds) == 1 else "conditions"
        cond_s = f", {label} {shown}" if conds else ""
        self._emit(f"{self._name}: chunk {chunk}/{self._n_chunks}{cond_s}, {self._status(rows, now)}")
        return True

    def chunk_done(self, done: int) -> bool:
        """Report that ``done`` chunks have been processed while no result row is written yet (kinds
        that write everything after their last chunk, e.g. ``copying``); ETA from the chunk fraction.
        Throttled like :meth:`update`; silent once rows are being written.  Returns whether a line
        was printed."""
        now = self.clock()
        if self._rows or now - self._last < self.interval or done < 1:
            return False
        self._last = now
        elapsed = max(now - self._t0, 0.0)
        left = max(self._n_chunks - done, 0)
        eta = _clock(elapsed * left / done) if left else "n/a"
        self._emit(f"{self._name}: chunk {done}/{self._n_chunks} processed (rows are written after the last "
                   f"chunk), elapsed {_clock(elapsed)}, ETA {eta}")
        return True

    def finish(self, rows: int) -> None:
        """Close the experiment with its total rows and time."""
        now = self.clock()
        self._emit(f"{self._name}: done, {rows} rows in {_clock(max(now - self._t0, 0.0))}")

    def note(self, text: str) -> None:
        """A one-off line (e.g. the step that follows the experiments)."""
        self._emit(text)
