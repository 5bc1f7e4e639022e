"""Checkpoint identity: a cheap, content-derived fingerprint of a checkpoint directory.

Hashing every byte of a 141 GB checkpoint is too slow to do on every load, so the identity is the
sha256 of: the sidecar, ``config.json``, and for each ``*.safetensors`` file its size, its header
(tensor names, dtypes, shapes, offsets) and its first and last MiB of data.  Two checkpoints with
the same identity are, for every practical purpose, the same weights.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

_CHUNK = 1 << 20


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as f:
        head = f.read(8)
        h.update(head)
        if len(head) == 8 and path.suffix == ".safetensors":
            (n,) = struct.unpack("<Q", head)
            if n < 100 << 20:
                h.update(f.read(n))
        f.seek(0)
        h.update(f.read(_CHUNK))
        if size > _CHUNK:
            f.seek(max(0, size - _CHUNK))
            h.update(f.read(_CHUNK))
    return h.hexdigest()


def checkpoint_identity(directory: str | Path) -> dict:
    """``{"path", "fingerprint", "files": {name: digest}}`` for a checkpoint directory."""
    d = Path(directory)
    files = {}
    for name in ("nla_meta.yaml", "config.json", "tokenizer.json", "value_head.safetensors"):
        if (d / name).is_file():
            files[name] = _file_digest(d / name)
    for p in sorted(d.glob("*.safetensors")):
        files[p.name] = _file_digest(p)
    fp = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    return {"path": str(d.resolve()), "fingerprint": fp, "files": files}
