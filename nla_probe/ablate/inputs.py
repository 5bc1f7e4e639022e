"""Inputs of an ablation run: activations (selection, shards), the lazily loaded NLA pair, and
the FVE denominator.

* :func:`load_activations` reads a parquet (via :func:`nla_probe.nla.extraction.read_activations`) or
  in-memory vectors, checks the width against the pair's ``d_model`` and adds ``sample_id`` (the row
  number in the file, the pairing key of every comparison).
* :meth:`ActivationData.select` keeps the first ``n`` rows, then the documents of one shard:
  document ``doc_id`` belongs to shard ``int(sha256(doc_id)[:16], 16) % n_shards`` (whole
  documents per shard, stable across machines and row orders).
* :class:`PairHandle` reads sidecars and checkpoint fingerprints up front and loads weights only
  when some work is not in the store.
* :func:`resolve_denominator` fixes ``B`` of ``fve_nrm = 1 − mse_nrm / B``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nla_probe.errors import InputError

logger = logging.getLogger("nla_probe.ablate.engine")

_VAR_CHUNK = 4096


def vectors_hash(vectors: np.ndarray) -> str:
    """sha256 of the float32 little-endian bytes and shape of ``vectors``."""
    v = np.ascontiguousarray(vectors, dtype="<f4")
    h = hashlib.sha256(str(v.shape).encode())
    h.update(v.tobytes())
    return h.hexdigest()


def streaming_variance_baseline(vectors: np.ndarray) -> float:
    """``Var(v_nrm) = 1 − ‖μ‖²/d`` with μ the mean of the rows scaled to norm √d, in chunks.

    Equal to :func:`nla_probe.analysis.metrics.variance_baseline` without a float64 copy of all rows.
    """
    n, d = vectors.shape
    if n < 2:
        raise InputError(f"the FVE denominator needs at least 2 activations, found {n}")
    total = np.zeros(d, dtype=np.float64)
    for s in range(0, n, _VAR_CHUNK):
        a = vectors[s:s + _VAR_CHUNK].astype(np.float64)
        a *= math.sqrt(d) / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        total += a.sum(0)
    mu = total / n
    return float(1.0 - (mu @ mu) / d)


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; None stays None."""
    if shard is None:
        return None
    if isinstance(shard, str):
        parts = shard.split("/")
        try:
            i, n = int(parts[0]), int(parts[1])
            if len(parts) != 2:
                raise ValueError
        except (ValueError, IndexError):
            raise InputError(f"shard: expected 'i/n' (e.g. 0/4), found {shard!r}") from None
    else:
        i, n = shard
    if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
        raise InputError(f"shard: expected 0 <= i < n, found {i}/{n}")
    return i, n


def shard_of(doc_id: str, n_shards: int) -> int:
    """The shard a document belongs to: first 8 bytes of sha256(doc_id) modulo ``n_shards``."""
    return int(hashlib.sha256(str(doc_id).encode()).hexdigest()[:16], 16) % n_shards


# ------------------------------------------------------------------------------------------ data


@dataclass
class ActivationData:
    """Activations to run on: metadata frame (with ``sample_id`` = row in the file) and vectors."""

    frame: Any
    vectors: np.ndarray
    info: dict = field(default_factory=dict)

    def select(self, n: int | None = None, shard: tuple[int, int] | None = None) -> ActivationData:
        """The first ``n`` rows, then the rows whose document falls in ``shard`` (see :func:`shard_of`)."""
        import polars as pl

        idx = np.arange(self.frame.height if n is None else min(n, self.frame.height))
        if shard is not None:
            docs = self.frame["doc_id"].to_list()
            idx = np.array([i for i in idx if shard_of(docs[i], shard[1]) == shard[0]], dtype=np.int64)
        frame = self.frame[idx.tolist()] if len(idx) else self.frame.clear()
        info = {**self.info, "n_selected": int(len(idx)), "n_limit": n,
                "shard": None if shard is None else f"{shard[0]}/{shard[1]}"}
        return ActivationData(frame.with_columns(pl.col("sample_id").cast(pl.Int64)), self.vectors[idx], info)


def load_activations(data: Any, d_model: int) -> ActivationData:
    """Activations from a parquet path, a ``(frame, vectors)`` pair or a frame with ``activation_vector``.

    Raises:
        InputError: unreadable file, missing column, wrong vector width (names expected and found).
    """
    import polars as pl

    from nla_probe.nla.extraction import read_activations
    from nla_probe.nla.identity import file_digest

    info: dict[str, Any] = {}
    if isinstance(data, (str, Path)):
        p = Path(data)
        frame, vecs = read_activations(p, d_model=d_model)
        info = {"path": str(p.resolve()), "digest": file_digest(p)}
    elif isinstance(data, tuple) and len(data) == 2:
        frame, vecs = data
        vecs = np.asarray(vecs, dtype=np.float32)
        info = {"path": "<in memory>"}
    elif isinstance(data, pl.DataFrame) and "activation_vector" in data.columns:
        vecs = np.asarray(data["activation_vector"].to_list(), dtype=np.float32)
        frame, info = data.drop("activation_vector"), {"path": "<in memory>"}
    else:
        raise InputError(f"data: expected a parquet path, (frame, vectors) or a frame with activation_vector, "
                         f"found {type(data).__name__}")
    if vecs.ndim != 2 or vecs.shape[1] != d_model:
        raise InputError(f"data ({info.get('path')}): vectors: expected shape [n, d_model={d_model}] (from the "
                         f"sidecar), found {list(vecs.shape)}")
    if frame.height != vecs.shape[0]:
        raise InputError(f"data: frame has {frame.height} rows but there are {vecs.shape[0]} vectors")
    if "doc_id" not in frame.columns:
        frame = frame.with_columns(pl.Series("doc_id", [f"row{i}" for i in range(frame.height)]))
    if frame["doc_id"].null_count():
        rows = frame["doc_id"].is_null().arg_true().to_list()
        raise InputError(f"data ({info.get('path')}): rows {rows[:20]} of 'doc_id' are null (expected an id in "
                         "every row)")
    frame = frame.with_columns(pl.col("doc_id").cast(pl.Utf8),
                               pl.Series("sample_id", np.arange(frame.height, dtype=np.int64)))
    if "digest" not in info:
        info["digest"] = vectors_hash(vecs)[:16]
    info.update(n_rows=int(vecs.shape[0]), n_docs=int(frame["doc_id"].n_unique()), d_model=int(d_model))
    return ActivationData(frame, vecs, info)


# ------------------------------------------------------------------------------------------ pair


class PairHandle:
    """An NLA pair loaded on first use: sidecars and fingerprints are read up front, weights lazily.

    A run whose work is all in the store never loads the weights.
    """

    def __init__(self, pair: Any = None, av_dir: str | Path | None = None, ar_dir: str | Path | None = None, *,
                 backend: str = "hf", device: str | None = None, dtype: Any = None,
                 backend_options: Mapping[str, Any] | None = None):
        from nla_probe.errors import UnknownNameError
        from nla_probe.nla.backends import list_backends
        from nla_probe.nla.checkpoint import NLAPair, check_device, resolve_dtype

        if backend not in list_backends():
            raise UnknownNameError("backend", backend, list_backends())
        self.backend, self.device = backend, device or "cpu"
        self.backend_options = dict(backend_options or {})
        self._verbalizer = None
        self._ar_tokenizer = None
        if pair is not None:
            if not isinstance(pair, NLAPair):
                raise InputError(f"pair: expected an NLAPair (nla_probe.load_pair), found {type(pair).__name__}")
            if device is not None or dtype is not None:
                raise InputError(f"device/dtype: the NLAPair is already loaded ({pair.av.device}, {pair.av.dtype}); "
                                 f"found device={device!r}, dtype={dtype!r}: pass (av_dir, ar_dir) to choose them")
            self._pair = pair
            self.av_dir, self.ar_dir = pair.av.path, pair.ar.path
            self.contract = pair.contract
            self.identity = pair.identity()
            self.dtype = str(pair.av.dtype).replace("torch.", "")
            self.device = str(pair.av.device)
            return
        from nla_probe.errors import ContractError
        from nla_probe.nla.checkpoint import _check_dir
        from nla_probe.nla.contract import read_sidecar
        from nla_probe.nla.identity import checkpoint_identity

        self._pair = None
        check_device(self.device)  # before any hashing or loading
        self.av_dir, self.ar_dir = _check_dir(av_dir, "av"), _check_dir(ar_dir, "ar")
        self.contract = read_sidecar(self.av_dir)
        ar_contract = read_sidecar(self.ar_dir)
        for f in ("d_model", "layer", "injection_char", "injection_token_id"):
            if getattr(self.contract, f) != getattr(ar_contract, f):
                raise ContractError(self.ar_dir, f, f"{getattr(self.contract, f)!r} (as in the AV sidecar)",
                                    getattr(ar_contract, f), "the AV and AR do not belong to the same pair")
        self.identity = {"av": checkpoint_identity(self.av_dir), "ar": checkpoint_identity(self.ar_dir)}
        self._dtype_arg = dtype
        self.dtype = str(resolve_dtype(dtype, self.device)).replace("torch.", "")

    @property
    def pair(self) -> Any:
        if self._pair is None:
            from nla_probe.nla.checkpoint import load_pair

            logger.info("loading the NLA pair %s / %s", self.av_dir, self.ar_dir)
            self._pair = load_pair(self.av_dir, self.ar_dir, dtype=self._dtype_arg, device=self.device,
                                   backend=self.backend)  # vllm: no transformers AV
        return self._pair

    @property
    def verbalizer(self) -> Any:
        if self._verbalizer is None:
            self._verbalizer = self.pair.verbalizer(backend=self.backend, **self.backend_options)
        return self._verbalizer

    @property
    def ar_tokenizer(self) -> Any:
        """The AR tokenizer (without loading weights when the pair is not loaded yet)."""
        if self._pair is not None:
            return self._pair.ar.tokenizer
        if self._ar_tokenizer is None:
            from transformers import AutoTokenizer

            self._ar_tokenizer = AutoTokenizer.from_pretrained(str(self.ar_dir))
        return self._ar_tokenizer

    def describe(self) -> dict:
        c = self.contract
        return {"av": self.identity["av"], "ar": self.identity["ar"], "d_model": c.d_model, "layer": c.layer,
                "injection_char": c.injection_char, "backend": self.backend, "device": self.device,
                "dtype": self.dtype, "backend_options": self.backend_options}


# ------------------------------------------------------------------------------------------ denominator


def prepare_out(out: Path, handle: PairHandle) -> None:
    """Create the output directory, or check an existing one was made with the same weights.

    Raises:
        InputError: ``out`` is a file or cannot be created, or its ``results/info.json`` records an
            AV or AR fingerprint other than this run's (naming both): the store is keyed by
            fingerprint, but the results and report there describe the other weights.
    """
    import json

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; expected a directory (new, or the output of an earlier run)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {out}: cannot create the directory ({e.strerror or e})") from None
    info_path = out / "results" / "info.json"
    if not info_path.is_file():
        return
    try:
        old = json.loads(info_path.read_text(encoding="utf-8")).get("pair", {})
    except (OSError, ValueError):
        return
    for side in ("av", "ar"):
        was = (old.get(side) or {}).get("fingerprint")
        now = handle.identity[side]["fingerprint"]
        if was is not None and was != now:
            scheme = (old.get(side) or {}).get("scheme")
            why = "" if scheme == handle.identity[side].get("scheme") else \
                " (recorded by an older fingerprint scheme, which could not tell fine-tuned copies apart)"
            raise InputError(f"--out {out}: its results were made with {side.upper()} fingerprint {was}"
                             f"{why}, this run's {side.upper()} {handle.identity[side]['path']} has fingerprint {now}; "
                             "results of different weights are never mixed: pass a new --out")


def resolve_denominator(setting: Any, override: Any, data: ActivationData) -> tuple[float, str]:
    """``(B, source)`` of ``fve_nrm = 1 − mse_nrm / B`` (see module doc for the order)."""
    from nla_probe.analysis.metrics import get_denominator

    val = override if override is not None else setting
    if isinstance(val, tuple) and len(val) == 2:
        value, source = float(val[0]), str(val[1])
    elif isinstance(val, (int, float)) and not isinstance(val, bool):
        value, source = float(val), "a number given in the spec or on the command line"
    elif val == "auto":
        value = streaming_variance_baseline(data.vectors)
        source = (f"Var(v_nrm) of all {data.vectors.shape[0]} activations of the evaluation data "
                  f"({data.info.get('path')}), not the training-set constant")
    elif isinstance(val, str):
        d = get_denominator(val)
        value, source = d.value, f"{d.name}: {d.source}"
    else:
        raise InputError(f"denominator: expected 'auto', a registered name, a number or (value, source), found {val!r}")
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"denominator: expected a positive finite number, found {value!r}")
    return value, source
