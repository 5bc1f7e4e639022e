"""Checkpoint identity: every byte of every covered file counts; the digest cache skips unchanged files."""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

import nla_probe.nla.identity as ident
from nla_probe.nla.identity import (
    DigestCache,
    checkpoint_identity,
    file_digest,
    identity_files,
)

TOY_AV = Path(__file__).resolve().parents[1] / "data" / "toy" / "qwen_small" / "av"


@pytest.fixture
def av(tmp_path, monkeypatch) -> Path:
    """A copy of the toy AV (3 MB of weights) with an old mtime, and a private digest cache."""
    monkeypatch.setenv(ident.CACHE_ENV, str(tmp_path / "cache" / "digests.json"))
    dest = tmp_path / "av"
    shutil.copytree(TOY_AV, dest)
    old = time.time_ns() - 3600 * 10**9
    for p in dest.iterdir():
        os.utime(p, ns=(old, old))
    return dest


def _poke(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def test_file_digest_is_blake2b_of_all_bytes(av):
    w = av / "model.safetensors"
    assert file_digest(w) == hashlib.blake2b(w.read_bytes(), digest_size=32).hexdigest()


def test_a_byte_in_the_middle_of_a_weight_file_changes_the_fingerprint(av):
    w = av / "model.safetensors"
    size = w.stat().st_size
    assert min(size // 2, size - size // 2) > 1 << 20  # the middle is more than a MiB from either end
    before = checkpoint_identity(av)
    old = w.read_bytes()[size // 2]
    _poke(w, size // 2, bytes([old ^ 0x01]))
    after = checkpoint_identity(av)
    assert w.stat().st_size == size
    assert after["fingerprint"] != before["fingerprint"]
    changed = {k for k in before["files"] if before["files"][k] != after["files"][k]}
    assert changed == {"model.safetensors"}


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                                  "generation_config.json", "config.json", "nla_meta.yaml"])
def test_tokenizer_template_and_config_files_are_covered(av, name):
    before = checkpoint_identity(av)["fingerprint"]
    with (av / name).open("a", encoding="utf-8") as f:
        f.write(" ")
    assert checkpoint_identity(av)["fingerprint"] != before


def test_pickle_weights_are_covered_and_a_readme_is_not(av):
    base = checkpoint_identity(av)
    (av / "README.md").write_text("a model card")
    assert checkpoint_identity(av)["fingerprint"] == base["fingerprint"]
    (av / "pytorch_model.bin").write_bytes(b"\x80\x04.")
    assert checkpoint_identity(av)["fingerprint"] != base["fingerprint"]
    assert "pytorch_model.bin" in checkpoint_identity(av)["files"]


def test_identity_records_scheme_and_bytes(av):
    idt = checkpoint_identity(av)
    assert idt["scheme"] == ident.SCHEME
    assert idt["bytes"] == sum(p.stat().st_size for p in identity_files(av))
    assert len(idt["fingerprint"]) == 16


def test_unchanged_files_are_read_from_the_cache(av, monkeypatch):
    calls: list[str] = []
    real = ident.hash_file
    monkeypatch.setattr(ident, "hash_file", lambda p: calls.append(Path(p).name) or real(p))
    first = checkpoint_identity(av)
    assert "model.safetensors" in calls
    calls.clear()
    second = checkpoint_identity(av)
    assert second == first
    assert "model.safetensors" not in calls  # >= 1 MiB and unchanged: cached
    assert "config.json" in calls  # small files are always rehashed
    cache = json.loads(Path(os.environ[ident.CACHE_ENV]).read_text())
    entry = cache["entries"][str((av / "model.safetensors").resolve())]
    st = (av / "model.safetensors").stat()
    assert entry["key"] == [st.st_size, st.st_mtime_ns, st.st_ino]


def test_a_rewritten_file_is_rehashed(av):
    w = av / "model.safetensors"
    first = checkpoint_identity(av)
    _poke(w, w.stat().st_size // 2, b"\x00\x01\x02\x03")  # new mtime, same size and inode
    assert checkpoint_identity(av)["files"]["model.safetensors"] != first["files"]["model.safetensors"]


def test_a_freshly_written_file_is_not_cached(av):
    w = av / "model.safetensors"
    now = time.time_ns()
    os.utime(w, ns=(now, now))
    cache = DigestCache(ident.cache_path())
    cache.digest(w)
    assert str(w.resolve()) not in cache.entries


def test_a_corrupt_cache_is_ignored_and_replaced(av):
    path = Path(os.environ[ident.CACHE_ENV])
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    fp = checkpoint_identity(av)["fingerprint"]
    assert json.loads(path.read_text())["scheme"] == ident.SCHEME
    assert checkpoint_identity(av)["fingerprint"] == fp


def test_cache_can_be_switched_off(av, monkeypatch, tmp_path):
    monkeypatch.setenv(ident.CACHE_ENV, "off")
    assert ident.cache_path() is None
    checkpoint_identity(av)
    assert not (tmp_path / "cache").exists()


def test_default_cache_location_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(ident.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ident.cache_path() == tmp_path / "xdg" / "nla-probe" / "digests.json"
