"""Activation extraction and the activation parquet format.

Layer K is the output of block K, i.e. Hugging Face ``hidden_states[K + 1]`` (index 0 is the
embedding output).  K must be at most ``num_layers − 2``: transformers applies the final norm to the
last ``hidden_states`` entry.

Positions (as the release data generation): documents are tokenized raw (no chat template) with
special tokens; candidate positions are ``i >= min_position`` whose token is not special; up to
``n_per_doc`` are drawn without replacement with ``random.Random(sha256(f"{seed}|{doc_id}"))``, in
drawn order.  Documents with no candidate are skipped.

Parquet columns (one row per activation):

==========================  ===============================================================
``activation_vector``       fixed-size list<float32>[d] — the RAW vector (official name)
``doc_id``                  document id (str)
``position``                token index in the document's token sequence
``token_id`` / ``token``    the token at that position and its decoded text
``char_start``/``char_end`` the token's character offsets in ``source_text`` (end exclusive)
``source_text``             the document text (so copy detection needs nothing else)
``n_raw_tokens``            ``position + 1`` (official)
``activation_layer``        K (official)
==========================  ===============================================================
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nla_probe.errors import InputError

REQUIRED_COLUMNS = ("activation_vector",)


def sample_positions(n_tokens: int, special_mask: Sequence[bool], doc_id: str, *, n_per_doc: int,
                     min_position: int, seed: int) -> list[int]:
    """Positions drawn for one document (see module doc); deterministic in ``(seed, doc_id)``."""
    cands = [i for i in range(min_position, n_tokens) if not special_mask[i]]
    rng = random.Random(hashlib.sha256(f"{seed}|{doc_id}".encode()).digest())
    return rng.sample(cands, min(n_per_doc, len(cands)))


def extract_activations(model: Any, tokenizer: Any, texts: Sequence[str], doc_ids: Sequence[str], layer: int, *,
                        n_per_doc: int = 10, min_position: int = 50, seed: int = 42, max_length: int = 4096,
                        batch_size: int = 8, progress: bool = False) -> Any:
    """Extract layer-K activations at sampled positions; returns a polars frame (module doc)."""
    import polars as pl
    import torch

    if len(texts) != len(doc_ids):
        raise InputError(f"texts and doc_ids must have the same length, found {len(texts)} and {len(doc_ids)}")
    if len(set(doc_ids)) != len(doc_ids):
        raise InputError("doc_ids must be unique")
    n_layers = model.config.get_text_config().num_hidden_layers if hasattr(model.config, "get_text_config") \
        else model.config.num_hidden_layers
    if not 0 <= layer <= n_layers - 2:
        raise InputError(f"layer K must be in [0, {n_layers - 2}] for a {n_layers}-block model "
                         f"(the last hidden_states entry is after the final norm), found {layer}")
    special = set(tokenizer.all_special_ids)
    rows: dict[str, list] = {k: [] for k in ("doc_id", "position", "token_id", "token", "char_start", "char_end",
                                             "source_text", "n_raw_tokens", "activation_layer")}
    vecs: list[np.ndarray] = []
    starts = range(0, len(texts), batch_size)
    if progress:
        from nla_probe.progress import track

        starts = track(list(starts), description="extracting")
    from nla_probe.nla.placement import execution_device

    dev = execution_device(model.get_input_embeddings())  # the embedding's device, also when sharded
    for s in starts:
        chunk = list(texts[s:s + batch_size])
        enc = tokenizer(chunk, add_special_tokens=True, truncation=True, max_length=max_length,
                        return_offsets_mapping=True, padding=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")
        with torch.inference_mode():
            hs = model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev),
                       output_hidden_states=True, use_cache=False).hidden_states[layer + 1].float().cpu()
        for j, text in enumerate(chunk):
            mask = enc["attention_mask"][j].bool()
            real = mask.nonzero().flatten()
            ids = enc["input_ids"][j][real].tolist()
            offs = offsets[j][real].tolist()
            hj = hs[j][real]
            doc = str(doc_ids[s + j])
            for p in sample_positions(len(ids), [t in special for t in ids], doc, n_per_doc=n_per_doc,
                                      min_position=min_position, seed=seed):
                rows["doc_id"].append(doc)
                rows["position"].append(p)
                rows["token_id"].append(ids[p])
                rows["token"].append(tokenizer.decode([ids[p]]))
                rows["char_start"].append(int(offs[p][0]))
                rows["char_end"].append(int(offs[p][1]))
                rows["source_text"].append(text)
                rows["n_raw_tokens"].append(p + 1)
                rows["activation_layer"].append(layer)
                vecs.append(hj[p].numpy())
    d = hs.shape[-1] if texts else 0
    frame = pl.DataFrame(rows, schema_overrides={"position": pl.Int64, "token_id": pl.Int64, "char_start": pl.Int64,
                                                 "char_end": pl.Int64, "n_raw_tokens": pl.Int64,
                                                 "activation_layer": pl.Int64})
    arr = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, d), np.float32)
    return frame.with_columns(pl.Series("activation_vector", arr, dtype=pl.Array(pl.Float32, d)))


def write_activations(frame: Any, path: str | Path) -> Path:
    """Write an activation frame to parquet (``activation_vector`` as fixed-size float32 list)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)
    return path


def read_activations(path: str | Path, *, d_model: int | None = None) -> tuple[Any, np.ndarray]:
    """``(frame without the vector column, vectors [n, d] float32)`` from an activation parquet.

    Accepts fixed-size and variable-size list columns (legacy files).  With ``d_model`` the vector
    width is checked.  Raises InputError naming the file for a missing column, ragged rows, NaN/inf,
    zero-norm rows or a wrong width.
    """
    import polars as pl

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: activation parquet not found")
    try:
        frame = pl.read_parquet(path)
    except Exception as e:  # polars raises several exception types for corrupt files
        raise InputError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    if "activation_vector" not in frame.columns:
        raise InputError(f"{path}: column 'activation_vector' missing; found columns {frame.columns}")
    col = frame["activation_vector"]
    nulls = col.is_null()
    if nulls.any():
        rows = nulls.arg_true().to_list()
        raise InputError(f"{path}: rows {rows[:20]} of 'activation_vector' are null (expected a vector in every row)")
    if "doc_id" in frame.columns and frame["doc_id"].null_count():
        rows = frame["doc_id"].is_null().arg_true().to_list()
        raise InputError(f"{path}: rows {rows[:20]} of 'doc_id' are null (expected an id in every row; drop the "
                         "column to have rows numbered instead)")
    if isinstance(col.dtype, pl.Array):
        vecs = col.to_numpy().astype(np.float32)
    else:
        lens = col.list.len().unique().to_list() if isinstance(col.dtype, pl.List) else None
        if lens is not None and len(lens) > 1:
            raise InputError(f"{path}: 'activation_vector' rows have different lengths {sorted(lens)[:5]}")
        vecs = np.asarray(col.to_list(), dtype=np.float32)
    if vecs.ndim != 2:
        raise InputError(f"{path}: 'activation_vector' must be a list of equal-length vectors")
    if d_model is not None and vecs.shape[1] != d_model:
        raise InputError(f"{path}: 'activation_vector' width: expected d_model={d_model} (from the sidecar), "
                         f"found {vecs.shape[1]}")
    bad = np.nonzero(~np.isfinite(vecs).all(1))[0]
    if len(bad):
        raise InputError(f"{path}: rows {bad[:20].tolist()} of 'activation_vector' contain NaN or inf")
    zero = np.nonzero(np.linalg.norm(vecs.astype(np.float64), axis=1) == 0)[0]  # float64: no overflow
    if len(zero):
        raise InputError(f"{path}: rows {zero[:20].tolist()} of 'activation_vector' have zero norm")
    if "doc_id" not in frame.columns:
        frame = frame.with_columns(pl.Series("doc_id", [f"row{i}" for i in range(frame.height)]))
    return frame.drop("activation_vector"), vecs
