"""The append-only record store: durability, dedupe on read, torn writes, full disk."""

import errno
import json

import pytest

import nla_probe.ablate.store as store_mod
from nla_probe.ablate.store import Store, StoreWriteError, content_key
from nla_probe.errors import NLAProbeError


def test_content_key_is_canonical():
    a = content_key({"x": 1, "y": [1, 2], "z": {"b": 1, "a": 2}})
    b = content_key({"z": {"a": 2, "b": 1}, "y": [1, 2], "x": 1})
    assert a == b and len(a) == 64
    assert content_key({"x": 1.0}) != content_key({"x": 2.0})


def test_put_get_and_persistence(tmp_path):
    s = Store(tmp_path / "st")
    assert not (tmp_path / "st").exists()  # nothing written, nothing created
    assert s.put("k1", "decode", {"texts": ["a", "é"], "v": [1.5, float("nan")]})
    assert s.put_many([("k2", "score", [1, 2]), ("k3", "score", {"x": None})]) == 2
    assert s.put("k1", "decode", {"other": 1}) is False  # already stored: not rewritten
    assert s.get("k1")["texts"] == ["a", "é"]
    s.close()
    r = Store(tmp_path / "st")
    assert len(r) == 3 and r.count("score") == 2 and r.count("decode") == 1
    assert r.get("k2") == [1, 2] and r.get("k3") == {"x": None}
    v = r.get("k1")["v"]
    assert v[0] == 1.5 and v[1] != v[1]  # NaN survives
    assert r.stats() == {"records": 3, "segments": 1, "torn": 0, "duplicates": 0, "written": 0}
    with pytest.raises(KeyError):
        r.get("nope")


def test_each_process_writes_its_own_segment_and_reads_all(tmp_path):
    a = Store(tmp_path)
    a.put("k1", "t", 1)
    b = Store(tmp_path)  # opened after a's write: sees k1
    assert "k1" in b
    b.put("k2", "t", 2)
    a.close()
    b.close()
    assert len(list(tmp_path.glob("seg-*.jsonl"))) == 2
    assert sorted(Store(tmp_path).keys()) == ["k1", "k2"]


def test_duplicate_keys_across_segments_keep_the_first(tmp_path):
    a, b = Store(tmp_path), Store(tmp_path)  # both opened before either wrote
    a.put("k", "t", "first")
    b.put("k", "t", "second")
    a.close()
    b.close()
    r = Store(tmp_path)
    assert len(r) == 1 and r.duplicates == 1
    first_seg = sorted(tmp_path.glob("seg-*.jsonl"))[0]
    assert r.get("k") == json.loads(first_seg.read_text())["data"]


def test_torn_and_corrupted_lines_are_skipped(tmp_path):
    s = Store(tmp_path)
    s.put_many([("a", "t", {"n": 1}), ("b", "t", {"n": 2})])
    s.close()
    seg = next(tmp_path.glob("seg-*.jsonl"))
    lines = seg.read_bytes().splitlines(keepends=True)
    # record b's data altered (checksum mismatch), then a write cut short by a kill
    altered = lines[1].replace(b'"n":2', b'"n":3')
    seg.write_bytes(lines[0] + altered + b'{"key":"c","type":"t","sum":"00","da')
    r = Store(tmp_path)
    assert sorted(r.keys()) == ["a"] and r.torn == 2
    assert r.get("a") == {"n": 1}
    r.put("b", "t", {"n": 2})  # recomputed work goes to a new segment
    r.close()
    assert Store(tmp_path).get("b") == {"n": 2}
    assert len(list(tmp_path.glob("seg-*.jsonl"))) == 2


def test_full_disk_raises_clear_error_and_keeps_earlier_records(tmp_path, monkeypatch):
    s = Store(tmp_path)
    s.put_many([("a", "t", 1), ("b", "t", 2)])
    real = store_mod._write_all

    def full(fd, blob):
        real(fd, blob[: len(blob) // 2])  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod, "_write_all", full)
    with pytest.raises(StoreWriteError, match=r"the disk is full\). 2 finished records are safely stored; free "
                                              r"some space and rerun the same command to resume") as info:
        s.put("c", "t", 3)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert "c" not in s
    monkeypatch.setattr(store_mod, "_write_all", real)
    s.put("d", "t", 4)  # the store keeps working after space is freed, in a fresh segment
    s.close()
    r = Store(tmp_path)
    assert sorted(r.keys()) == ["a", "b", "d"] and r.torn == 1
    assert [r.get(k) for k in ("a", "b", "d")] == [1, 2, 4]


def test_other_write_errors_are_reported(tmp_path, monkeypatch):
    s = Store(tmp_path)

    def broken(fd, blob):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store_mod, "_write_all", broken)
    with pytest.raises(StoreWriteError, match=r"Input/output error\). 0 finished records"):
        s.put("a", "t", 1)


def test_readonly_store_refuses_writes(tmp_path):
    Store(tmp_path).put("a", "t", 1)
    r = Store(tmp_path, readonly=True)
    with pytest.raises(NLAProbeError, match="read-only"):
        r.put("b", "t", 2)
    assert r.get("a") == 1
