"""Checkpoint identity: a fingerprint of every byte that decides what a checkpoint computes.

``checkpoint_identity(dir)`` hashes, in full, every file of the directory that is

* a weight file: ``*.safetensors``, ``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``, ``*.gguf``, and the
  shard indexes ``*.index.json``;
* the sidecar ``nla_meta.yaml``, ``config.json`` and ``generation_config.json``;
* a tokenizer or chat-template file: ``tokenizer*``, ``special_tokens_map.json``,
  ``added_tokens.json``, ``vocab.*``, ``merges.txt``, ``chat_template*``, ``*.jinja``.

Other files (model cards, READMEs, hidden files) are left out: they change no output.  Each file's
digest is ``blake2b`` (32-byte digest) of all its bytes, read in 8 MiB chunks; the fingerprint is
the blake2b of the sorted ``(name, size, digest)`` list and the scheme name :data:`SCHEME`.  Two
checkpoints that differ in any byte of a listed file have different fingerprints.

Digest cache.  Hashing costs about 1.3 s per GiB on one core (``docs/ablations.md``), so the digest
of each file of at least :data:`CACHE_MIN_BYTES` is kept in a small JSON file keyed by the file's
resolved path, size, ``st_mtime_ns`` and inode: an unchanged checkpoint is not read again.  Where:
``$NLA_PROBE_DIGEST_CACHE`` (a file path; ``off`` disables the cache), else
``$XDG_CACHE_HOME/nla-probe/digests.json``, else ``~/.cache/nla-probe/digests.json``.  The file is
rewritten atomically (temporary file, fsync, rename), without the entries of files that no longer
exist; an unreadable cache is ignored and an unwritable one only costs the rehash.  A digest is not cached when the file was modified less than
:data:`RACY_SECONDS` before hashing started (a same-size rewrite within the file system's timestamp
granularity would otherwise look unchanged).  An edit that keeps size, mtime and inode — only
possible by resetting the mtime on purpose — is not seen; delete the cache file to force a rehash.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import time
from pathlib import Path

logger = logging.getLogger("nla_probe.identity")

#: Name of the fingerprint scheme (hashed into every fingerprint, recorded in identities).
SCHEME = "blake2b-full-v2"
#: Bytes read per ``readinto`` call.
CHUNK_BYTES = 8 << 20
#: Files smaller than this are hashed every time (cheaper than a cache lookup is worth).
CACHE_MIN_BYTES = 1 << 20
#: A file modified less than this many seconds before hashing is not cached.
RACY_SECONDS = 2.0
#: Environment variable overriding the digest cache location (``off`` disables it).
CACHE_ENV = "NLA_PROBE_DIGEST_CACHE"

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.index.json")
_OTHER_PATTERNS = ("nla_meta.yaml", "config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json",
                   "added_tokens.json", "vocab.*", "merges.txt", "chat_template*", "*.jinja")


def identity_files(directory: str | Path) -> list[Path]:
    """The files of ``directory`` that the identity covers (see module doc), sorted by name."""
    d = Path(directory)
    out = []
    for p in sorted(d.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if any(fnmatch.fnmatch(p.name, pat) for pat in _WEIGHT_PATTERNS + _OTHER_PATTERNS):
            out.append(p)
    return out


def cache_path() -> Path | None:
    """Location of the digest cache file, or None when disabled (see module doc)."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nla-probe" / "digests.json"


def hash_file(path: str | Path) -> str:
    """blake2b (32-byte digest, hex) of every byte of ``path``, streamed in :data:`CHUNK_BYTES` chunks."""
    h = hashlib.blake2b(digest_size=32)
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


class DigestCache:
    """Per-file digests keyed by (resolved path, size, mtime_ns, inode), kept in one JSON file."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, dict] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, dict) and isinstance(data.get("entries"), dict) and data.get("scheme") == SCHEME:
                    self.entries = data["entries"]
            except (OSError, ValueError):
                logger.debug("digest cache %s unreadable; ignored", path)

    @staticmethod
    def _key(st: os.stat_result) -> list:
        return [st.st_size, st.st_mtime_ns, st.st_ino]

    def digest(self, path: Path) -> str:
        """The digest of ``path``: from the cache if its key matches, else hashed (and cached)."""
        real = str(path.resolve())
        st = path.stat()
        key = self._key(st)
        hit = self.entries.get(real)
        if hit is not None and hit.get("key") == key:
            return hit["digest"]
        started = time.time()
        digest = hash_file(path)
        st2 = path.stat()
        fresh = started - st2.st_mtime_ns / 1e9 < RACY_SECONDS
        if self.path is not None and st.st_size >= CACHE_MIN_BYTES and self._key(st2) == key and not fresh:
            self.entries[real] = {"key": key, "digest": digest}
            self.dirty = True
        return digest

    def save(self) -> None:
        """Write the cache atomically (temporary file, fsync, rename); failures are only logged."""
        if self.path is None or not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # merge with entries another process may have written meanwhile; drop deleted files
            other = DigestCache(self.path).entries
            merged = {k: v for k, v in {**other, **self.entries}.items() if os.path.exists(k)}
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            with tmp.open("w", encoding="utf-8") as f:
                json.dump({"scheme": SCHEME, "entries": merged}, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError as e:
            logger.debug("digest cache %s not written: %s", self.path, e)


def file_digest(path: str | Path, cache: DigestCache | None = None) -> str:
    """Full-content digest of one file (through the digest cache)."""
    own = cache is None
    cache = cache if cache is not None else DigestCache(cache_path())
    d = cache.digest(Path(path))
    if own:
        cache.save()
    return d


def checkpoint_identity(directory: str | Path) -> dict:
    """``{"path", "fingerprint", "scheme", "bytes", "files": {name: digest}}`` of a checkpoint directory.

    ``fingerprint`` is 16 hex characters of the blake2b of the scheme and every covered file's name,
    size and full-content digest (see module doc); ``bytes`` is the total size hashed.
    """
    d = Path(directory)
    cache = DigestCache(cache_path())
    files: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for p in identity_files(d):
        files[p.name] = cache.digest(p)
        sizes[p.name] = p.stat().st_size
    cache.save()
    payload = json.dumps({"scheme": SCHEME, "files": [[n, sizes[n], files[n]] for n in sorted(files)]})
    fp = hashlib.blake2b(payload.encode(), digest_size=8).hexdigest()
    return {"path": str(d.resolve()), "fingerprint": fp, "scheme": SCHEME, "bytes": sum(sizes.values()),
            "files": files}
