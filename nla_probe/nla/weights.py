"""Weight files of a checkpoint directory: which ones, and whether each is a whole safetensors file.

Only safetensors weights are read.  A pickle file (``pytorch_model.bin``, ``*.pt``, ``*.pth``,
``*.ckpt``, ``*.pkl``) can run code when it is loaded, so it is refused, and there is no option to
allow it, by design: convert the checkpoint to safetensors first.

A directory's weights are the shards named by ``model.safetensors.index.json`` (its
``weight_map`` values) when the index exists, else ``model.safetensors``.
:func:`verify_weight_files` checks, reading headers only, that every one exists, that its header
parses (8-byte little-endian length, then a JSON object of tensor entries), and that the file is
long enough for every tensor's ``data_offsets`` (a truncated copy fails here, not mid-load).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from nla_probe.errors import ContractError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: Largest header accepted (bytes); real headers are a few hundred KB at most.
MAX_HEADER_BYTES = 100 << 20

_NO_PICKLE = ("nla-probe reads only safetensors: a pickle file can run code when it is loaded, and there is no "
              "option to allow it, by design; convert the checkpoint to safetensors")


def weight_files(directory: str | Path) -> list[Path]:
    """The safetensors weight files of ``directory`` (see module doc); raises :class:`ContractError`
    when none is there, when only pickle weights are, or when the index names a missing shard."""
    p = Path(directory)
    index = p / INDEX_NAME
    if index.is_file():
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ContractError(index, "<document>", "a JSON shard index", str(e).splitlines()[0]) from None
        wmap = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(wmap, dict) or not wmap or not all(isinstance(v, str) for v in wmap.values()):
            raise ContractError(index, "weight_map", "a non-empty mapping of tensor names to shard file names",
                                type(wmap).__name__ if not isinstance(wmap, dict) else f"{len(wmap)} entries")
        names = sorted(set(wmap.values()))
        outside = [n for n in names if Path(n).name != n or n.startswith(".")]
        if outside:
            raise ContractError(index, "weight_map", "shard file names inside the checkpoint directory", outside[0])
        missing = [n for n in names if not (p / n).is_file()]
        if missing:
            raise ContractError(index, "weight_map", f"the {len(names)} shard file(s) named by the index in {p}",
                                f"missing {missing[:5]}")
        return [p / n for n in names]
    if (p / SINGLE_NAME).is_file():
        return [p / SINGLE_NAME]
    pickles = sorted(q.name for q in p.iterdir() if q.is_file() and q.suffix in PICKLE_SUFFIXES) if p.is_dir() else []
    if pickles:
        raise ContractError(p / pickles[0], "<weights>", f"safetensors weights ({SINGLE_NAME} or {INDEX_NAME})",
                            "a pickle file", _NO_PICKLE)
    raise ContractError(p, "<weights>", f"{SINGLE_NAME} or {INDEX_NAME}", "no weight file",
                        "the checkpoint directory holds no weights (an incomplete download or copy?)")


def safetensors_header(path: str | Path) -> dict:
    """The JSON header of a safetensors file, after checking the file covers every tensor's data.

    Raises:
        ContractError: the file is shorter than its header says (truncated), the header length or
            JSON is invalid (corrupt or not safetensors), or an entry has no valid ``data_offsets``.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ContractError(path, "<header>", "a safetensors file (8-byte header length first)", f"{size} bytes",
                                "the file is truncated or not safetensors")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, MAX_HEADER_BYTES):
            raise ContractError(path, "<header>", f"a header length of at most {min(size - 8, MAX_HEADER_BYTES)} "
                                f"bytes", n, "the file is corrupt, truncated or not safetensors")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ContractError(path, "<header>", "a JSON header", "unparseable bytes",
                            "the file is corrupt or not safetensors") from None
    if not isinstance(header, dict):
        raise ContractError(path, "<header>", "a JSON object", type(header).__name__, "the file is corrupt")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offs = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(x, int) for x in offs)
                and 0 <= offs[0] <= offs[1]):
            raise ContractError(path, name, "a tensor entry with data_offsets [begin, end]", entry,
                                "the file is corrupt")
        end = max(end, offs[1])
    need = 8 + n + end
    if size < need:
        raise ContractError(path, "<data>", f"{need} bytes (header and tensor data)", f"{size} bytes",
                            "the file is truncated (an interrupted download or copy?)")
    return header


def verify_weight_files(directory: str | Path) -> dict[str, dict]:
    """``{file name: header}`` of every weight file of ``directory``, each checked by
    :func:`safetensors_header` (headers only; nothing is loaded)."""
    return {f.name: safetensors_header(f) for f in weight_files(directory)}


#: Elements checked per step by :func:`check_finite_parameters` (bounds the temporary mask).
_FINITE_CHUNK = 1 << 26


def check_finite_parameters(model: Any, directory: str | Path) -> None:
    """Raise :class:`ContractError` naming the parameters (up to 5) of a loaded model that hold NaN
    or inf.  Checked in chunks of :data:`_FINITE_CHUNK` elements, on the device each parameter
    lives on; parameters not in memory (``meta``, offloaded to disk) are skipped."""
    import torch

    bad: list[str] = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.device.type == "meta":
                continue
            flat = param.detach().reshape(-1)
            if any(not bool(torch.isfinite(flat[s:s + _FINITE_CHUNK]).all())
                   for s in range(0, flat.numel(), _FINITE_CHUNK)):
                bad.append(name)
                if len(bad) == 5:
                    break
    if bad:
        raise ContractError(Path(directory), bad[0], "finite weights", f"NaN/inf in {bad}",
                            "the checkpoint's weights are corrupt; every output would be NaN")
