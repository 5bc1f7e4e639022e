"""An append-only, content-keyed record store that survives being killed at any moment.

Layout: ``root/seg-<utc time>-<pid>-<random>.jsonl`` segment files.  Each line is one record::

    {"key": <sha256 hex>, "type": "decode" | "score" | ..., "sum": <16 hex>, "data": {...}}

``sum`` is the first 16 hex digits of the sha256 of the canonical JSON of ``data``.

* **Writing.** A process appends only to its own, new segment (opened on the first write).  Every
  :meth:`Store.put` encodes whole lines, writes them with one ``write`` call, then ``flush`` and
  ``os.fsync``: once ``put`` returns, the records survive SIGKILL and power loss.
* **Reading.** On open every segment is scanned line by line; a line that is not valid JSON or
  whose ``sum`` does not match (a write cut short by a kill) is skipped and counted in
  :attr:`Store.torn`.  A key seen twice keeps its first record (dedupe on read); the count is
  :attr:`Store.duplicates`.  Only an index ``key -> (segment, offset, length)`` is kept in memory;
  records are read back on demand.
* **Errors.** A failed write (full disk, quota, I/O error) raises :class:`StoreWriteError` naming
  the file and saying how many records are safely stored; records from earlier ``put`` calls are
  untouched, and the next ``put`` starts a fresh segment.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nla_probe.errors import NLAProbeError

SEGMENT_GLOB = "seg-*.jsonl"
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


class StoreWriteError(NLAProbeError, OSError):
    """Writing to the record store failed (e.g. the disk is full); earlier records are intact."""


def content_key(payload: Mapping[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON (sorted keys) of ``payload``."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _checksum(data: Any) -> str:
    return content_key({"d": data})[:16]


def _write_all(fd: int, blob: bytes) -> None:
    """Write ``blob`` to ``fd`` completely (module-level so tests can simulate a full disk)."""
    view = memoryview(blob)
    while view:
        n = os.write(fd, view)
        view = view[n:]


@dataclass(frozen=True)
class _Loc:
    segment: int
    offset: int
    length: int


class Store:
    """Content-keyed append-only records under ``root`` (see the module doc).

    Args:
        root: the store directory (created on the first write).
        readonly: refuse writes (used by report rebuilding and merging).
    """

    def __init__(self, root: str | Path, *, readonly: bool = False):
        self.root = Path(root)
        self.readonly = readonly
        self._segments: list[Path] = []
        self._index: dict[str, _Loc] = {}
        self._types: dict[str, str] = {}
        self.torn = 0
        self.duplicates = 0
        self.written = 0
        self._fd: int | None = None
        self._seg_id: int | None = None
        self._seg_size = 0
        self._load()

    # ------------------------------------------------------------------------------ reading

    def _load(self) -> None:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob(SEGMENT_GLOB)):
            self._scan(path)

    def _scan(self, path: Path) -> None:
        seg = len(self._segments)
        self._segments.append(path)
        offset = 0
        with path.open("rb") as f:
            for line in f:
                length = len(line)
                rec = self._parse(line)
                if rec is None:
                    self.torn += 1
                elif rec["key"] in self._index:
                    self.duplicates += 1
                else:
                    self._index[rec["key"]] = _Loc(seg, offset, length)
                    self._types[rec["key"]] = rec.get("type", "")
                offset += length

    @staticmethod
    def _parse(line: bytes) -> dict | None:
        if not line.endswith(b"\n"):
            return None
        try:
            rec = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(rec, dict) or not isinstance(rec.get("key"), str) or "data" not in rec:
            return None
        if rec.get("sum") != _checksum(rec["data"]):
            return None
        return rec

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def keys(self) -> Iterator[str]:
        return iter(list(self._index))

    def count(self, type_: str | None = None) -> int:
        """Number of distinct records (of one ``type_`` if given)."""
        if type_ is None:
            return len(self._index)
        return sum(1 for t in self._types.values() if t == type_)

    def get(self, key: str) -> Any:
        """The ``data`` of the record stored under ``key`` (KeyError if absent)."""
        loc = self._index[key]
        with self._segments[loc.segment].open("rb") as f:
            f.seek(loc.offset)
            line = f.read(loc.length)
        rec = self._parse(line)
        if rec is None or rec["key"] != key:
            raise NLAProbeError(f"{self._segments[loc.segment]}: record {key[:12]} changed on disk since it was "
                                "indexed; the store was modified by another process")
        return rec["data"]

    def segments(self) -> list[Path]:
        """Segment files known to this store (read at open time plus the one being written)."""
        return list(self._segments)

    def stats(self) -> dict[str, int]:
        """``records``, ``segments``, ``torn`` (skipped partial lines), ``duplicates``, ``written``."""
        return {"records": len(self._index), "segments": len(self._segments), "torn": self.torn,
                "duplicates": self.duplicates, "written": self.written}

    # ------------------------------------------------------------------------------ writing

    def _open_segment(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.root / f"seg-{stamp}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._seg_id = len(self._segments)
        self._segments.append(path)
        self._seg_size = 0
        try:  # make the new directory entry durable too
            dfd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass

    def put(self, key: str, type_: str, data: Any) -> bool:
        """Store one record; returns False (and writes nothing) if ``key`` is already stored."""
        return self.put_many([(key, type_, data)]) == 1

    def put_many(self, records: Iterable[tuple[str, str, Any]]) -> int:
        """Append records durably (one write + fsync); keys already stored are skipped.

        Returns the number of records written.

        Raises:
            StoreWriteError: the write or fsync failed (full disk, quota, I/O error).
        """
        if self.readonly:
            raise NLAProbeError(f"{self.root}: store opened read-only")
        pending: list[tuple[str, str, bytes]] = []
        seen: set[str] = set()
        for key, type_, data in records:
            if key in self._index or key in seen:
                continue
            rec = {"key": key, "type": type_, "sum": _checksum(data), "data": data}
            line = json.dumps(rec, ensure_ascii=False, allow_nan=True, separators=(",", ":")) + "\n"
            pending.append((key, type_, line.encode("utf-8")))
            seen.add(key)
        if not pending:
            return 0
        try:
            if self._fd is None:
                self._open_segment()
            _write_all(self._fd, b"".join(line for _, _, line in pending))
            os.fsync(self._fd)
        except OSError as e:
            self._abandon_segment()
            full = e.errno in _DISK_FULL
            what = "the disk is full" if full else f"{e.strerror or e}"
            raise StoreWriteError(
                e.errno or errno.EIO,
                f"cannot write to the result store {self.root} ({what}). {len(self._index)} finished records are "
                f"safely stored; {'free some space and ' if full else ''}rerun the same command to resume "
                "without redoing them",
            ) from e
        offset = self._seg_size
        for key, type_, line in pending:
            self._index[key] = _Loc(self._seg_id, offset, len(line))
            self._types[key] = type_
            offset += len(line)
        self._seg_size = offset
        self.written += len(pending)
        return len(pending)

    def _abandon_segment(self) -> None:
        """Close the current segment after a failed write; the next put opens a new one."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None

    def close(self) -> None:
        self._abandon_segment()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown
        try:
            self.close()
        except Exception:
            pass


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write JSON to ``path`` via a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path
