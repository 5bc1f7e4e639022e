"""Activations of other layers at the positions of an evaluation set.

An evaluation parquet holds layer-K activations at ``(doc_id, position)`` rows together with the
document text (``source_text``).  :func:`extract_layers` re-runs the *base* model on those
documents with the same tokenization and returns the vectors of any set of layers at the same
positions.

Definitions:

* **Layer L** is the output of block L (0-based), the residual stream after block L: the value
  Hugging Face returns as ``hidden_states[L + 1]``.  It is read with a forward hook on block L, so
  the last block (L = n_blocks − 1) is the residual *before* the final norm (``hidden_states[-1]``
  has the final norm applied and is never used).
* **Same tokenization**: each document is tokenized as :func:`nla_probe.nla.extraction.extract_activations`
  does (``add_special_tokens=True``, no chat template).  The model is causal, so the vector at
  position p depends only on tokens 0..p: each document is cut after its largest requested
  position, which makes the result independent of any truncation length used at extraction time.
  When the frame has a ``token_id`` column every row's token is checked against the
  re-tokenization; a mismatch (another tokenizer, another text) raises :class:`InputError`.

For experiment kinds: :class:`LazyBase` (a base LM loaded on first use, identity read without the
weights), :func:`resolve_base_dir` (``"auto"`` = ``<av_dir>/../base``) and :func:`cached_layers`
(extraction through the run's record store, vectors stored as base64 float32).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nla_probe.errors import InputError


@dataclass(frozen=True)
class BaseModel:
    """A base language model and its tokenizer (the model the NLA pair reads activations of).

    Attributes:
        model: the Hugging Face causal LM (eval mode).
        tokenizer: its tokenizer.
        path: directory it was loaded from.
        n_blocks: number of transformer blocks (layers 0..n_blocks−1).
        identity: :func:`nla_probe.nla.identity.checkpoint_identity` of ``path`` (for cache keys).
    """

    model: Any
    tokenizer: Any
    path: Path
    n_blocks: int
    identity: Mapping[str, Any]


def decoder_blocks(model: Any) -> Sequence[Any]:
    """The list of transformer blocks of a Hugging Face decoder-only model.

    Raises:
        InputError: no ``layers`` list found under ``model.model`` / ``model.language_model``.
    """
    for path in (("model", "layers"), ("model", "language_model", "layers"), ("language_model", "layers"),
                 ("layers",)):
        obj = model
        for attr in path:
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if obj is not None and hasattr(obj, "__len__") and len(obj) > 0:
            return obj
    raise InputError(f"cannot find the transformer blocks of a {type(model).__name__} "
                     "(looked for model.layers, model.language_model.layers)")


def load_base(path: str | Path, *, dtype: str = "float32", device: str = "cpu") -> BaseModel:
    """Load a base LM directory (Hugging Face files) for :func:`extract_layers`.

    Raises:
        InputError: the directory does not exist or holds no ``config.json``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nla_probe.nla.identity import checkpoint_identity

    p = Path(path)
    if not (p / "config.json").is_file():
        raise InputError(f"base model {str(p)!r}: expected a Hugging Face model directory with config.json, "
                         "found none (pass the base LM the NLA pair was trained on)")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise InputError(f"dtype: expected one of ['bfloat16', 'float16', 'float32'], found {dtype!r}")
    model = AutoModelForCausalLM.from_pretrained(str(p), dtype=torch_dtype).to(device).eval()
    tok = AutoTokenizer.from_pretrained(str(p))
    return BaseModel(model, tok, p, len(decoder_blocks(model)), checkpoint_identity(p))


def _doc_token_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])


def extract_layers(model: Any, tokenizer: Any, frame: Any, layers: Sequence[int], *, batch_size: int = 8,
                   check_tokens: bool = True, position_col: str = "position") -> dict[int, np.ndarray]:
    """Vectors of ``layers`` at the ``(doc_id, position)`` rows of ``frame`` (see module doc).

    Args:
        model: Hugging Face causal LM (the base model).
        tokenizer: its tokenizer.
        frame: polars frame with ``doc_id``, ``source_text`` and ``position_col`` (token index);
            optionally ``token_id`` (checked against the re-tokenization).
        layers: block indices L (output of block L = ``hidden_states[L + 1]``), 0 <= L < n_blocks.
        batch_size: documents per forward pass.
        check_tokens: verify ``token_id`` when the column is present.
        position_col: the column holding token positions (e.g. an aligned position of another
            tokenizer, see :mod:`nla_probe.analysis.alignment`).

    Returns:
        ``{L: float32 array [frame.height, d]}`` in row order of ``frame``.

    Raises:
        InputError: missing columns, a layer out of range, a position beyond the document's
            tokens, or a token mismatch.
    """
    import torch

    missing = [c for c in ("doc_id", "source_text", position_col) if c not in frame.columns]
    if missing:
        raise InputError(f"extract_layers: frame lacks column(s) {missing}; found {frame.columns}")
    blocks = decoder_blocks(model)
    layers = [int(x) for x in layers]
    bad = [x for x in layers if not 0 <= x < len(blocks)]
    if bad or not layers:
        raise InputError(f"layers: expected block indices in [0, {len(blocks) - 1}], found {list(layers)}")
    if batch_size < 1:
        raise InputError(f"batch_size: expected an integer >= 1, found {batch_size}")
    docs = frame["doc_id"].cast(str).to_list()
    texts = frame["source_text"].to_list()
    positions = frame[position_col].to_list()
    token_ids = frame["token_id"].to_list() if (check_tokens and "token_id" in frame.columns) else None
    rows_of: dict[str, list[int]] = {}
    text_of: dict[str, str] = {}
    for i, (doc, text, pos) in enumerate(zip(docs, texts, positions)):
        if pos is None or int(pos) < 0:
            raise InputError(f"extract_layers: row {i} ({doc!r}): expected a position >= 0, found {pos!r}")
        if doc in text_of and text_of[doc] != text:
            raise InputError(f"extract_layers: document {doc!r} has two different source_text values")
        text_of[doc] = text
        rows_of.setdefault(doc, []).append(i)
    n = frame.height
    out: dict[int, np.ndarray] = {}
    captured: dict[int, Any] = {}

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            captured[layer] = output[0] if isinstance(output, tuple) else output
        return hook

    handles = [blocks[L].register_forward_hook(make_hook(L)) for L in sorted(set(layers))]
    dev = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = list(rows_of)
    try:
        for s in range(0, len(order), batch_size):
            batch_docs = order[s:s + batch_size]
            seqs = []
            for doc in batch_docs:
                ids = _doc_token_ids(tokenizer, text_of[doc])
                need = max(int(positions[i]) for i in rows_of[doc])
                if need >= len(ids):
                    raise InputError(f"extract_layers: document {doc!r}: position {need} is beyond its "
                                     f"{len(ids)} tokens (another tokenizer or text?)")
                if token_ids is not None:
                    for i in rows_of[doc]:
                        if token_ids[i] is not None and ids[int(positions[i])] != int(token_ids[i]):
                            raise InputError(
                                f"extract_layers: row {i} ({doc!r}, position {positions[i]}): token_id "
                                f"{token_ids[i]} in the frame, {ids[int(positions[i])]} on re-tokenization "
                                "(the base model's tokenizer is not the one the frame was extracted with)")
                seqs.append(ids[:need + 1])
            width = max(len(x) for x in seqs)
            input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for j, ids in enumerate(seqs):  # right padding: a causal model's real positions are unaffected
                input_ids[j, :len(ids)] = torch.tensor(ids)
                mask[j, :len(ids)] = 1
            captured.clear()
            with torch.inference_mode():
                model(input_ids=input_ids.to(dev), attention_mask=mask.to(dev), use_cache=False)
            for L in set(layers):
                h = captured[L].float().cpu().numpy()
                if L not in out:
                    out[L] = np.zeros((n, h.shape[-1]), dtype=np.float32)
                for j, doc in enumerate(batch_docs):
                    for i in rows_of[doc]:
                        out[L][i] = h[j, int(positions[i])]
    finally:
        for hd in handles:
            hd.remove()
    if n == 0:
        d = int(getattr(model.config, "hidden_size", 0))
        return {L: np.zeros((0, d), dtype=np.float32) for L in layers}
    return {L: out[L] for L in layers}


def parse_layers(value: Any, n_blocks: int, where: str = "layers") -> list[int]:
    """Block indices from a spec value: ``"all"``, or a list of ints (negative = from the end).

    Raises:
        InputError: an index out of ``[-n_blocks, n_blocks)`` or a wrong type.
    """
    if value == "all":
        return list(range(n_blocks))
    if not isinstance(value, (list, tuple)) or not value:
        raise InputError(f"{where}: expected 'all' or a non-empty list of block indices, found {value!r}")
    out = []
    for x in value:
        if isinstance(x, bool) or not isinstance(x, int) or not -n_blocks <= x < n_blocks:
            raise InputError(f"{where}: expected block indices in [{-n_blocks}, {n_blocks - 1}], found {x!r}")
        out.append(x % n_blocks)
    return sorted(set(out))


# ------------------------------------------------------------------------------------------ engine helpers


def encode_vectors(vectors: np.ndarray) -> dict:
    """A JSON-safe record of a float32 array: ``{"shape": [n, d], "b64": base64 of little-endian bytes}``."""
    import base64

    a = np.ascontiguousarray(vectors, dtype="<f4")
    return {"shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_vectors(record: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_vectors` (a float32 array)."""
    import base64

    raw = base64.b64decode(record["b64"])
    return np.frombuffer(raw, dtype="<f4").reshape(record["shape"]).astype(np.float32)


def resolve_base_dir(value: str, av_dir: str | Path, where: str = "params.base_model") -> Path:
    """The base LM directory of a spec parameter.

    ``"auto"`` means ``<av_dir>/../base`` (the layout of the toy pairs: ``data/toy/<family>/{av,ar,base}``);
    a relative path is taken from the working directory, then from the repository root.

    Raises:
        InputError: the directory holds no ``config.json`` (names the parameter and the path tried).
    """
    from nla_probe.defaults import REPO_ROOT

    if value == "auto":
        cands = [Path(av_dir).parent / "base"]
    else:
        p = Path(value)
        cands = [p] if p.is_absolute() else [p, REPO_ROOT / p]
    for c in cands:
        if (c / "config.json").is_file():
            return c
    raise InputError(f"{where}: expected the base LM directory (Hugging Face files with config.json), found none "
                     f"at {[str(c) for c in cands]}; pass the base model the NLA pair was trained on")


def frame_rows_key(frame: Any, position_col: str = "position") -> str:
    """sha256 of the ``(doc_id, position, sha256(source_text))`` rows of ``frame`` (a cache key part)."""
    import hashlib

    h = hashlib.sha256()
    for doc, pos, text in zip(frame["doc_id"].cast(str).to_list(), frame[position_col].to_list(),
                              frame["source_text"].to_list()):
        h.update(f"{doc}\x00{pos}\x00{hashlib.sha256(text.encode()).hexdigest()}\x01".encode())
    return h.hexdigest()


def cached_layers(cached: Any, base: BaseModel, frame: Any, layers: Sequence[int], *,
                  position_col: str = "position", check_tokens: bool = True,
                  batch_size: int = 8) -> dict[int, np.ndarray]:
    """:func:`extract_layers` through a content-keyed cache.

    Args:
        cached: ``cached(type, payload, compute, rows=...)`` (e.g.
            :meth:`nla_probe.ablate.engine.RunContext.cached`); records have type ``"layers"`` and the key
            (base model fingerprint, rows of ``frame``, layers).
        base, frame, layers, position_col, check_tokens, batch_size: as :func:`extract_layers`.
    """
    layers = sorted({int(x) for x in layers})
    payload = {"base": base.identity["fingerprint"], "rows": frame_rows_key(frame, position_col),
               "layers": layers}

    def compute() -> dict:
        got = extract_layers(base.model, base.tokenizer, frame, layers, batch_size=batch_size,
                             check_tokens=check_tokens, position_col=position_col)
        return {str(L): encode_vectors(v) for L, v in got.items()}

    rec = cached("layers", payload, compute, rows=frame.height)
    return {L: decode_vectors(rec[str(L)]) for L in layers}


class LazyBase:
    """A base LM loaded on first use; its identity (for cache keys) and block count are read without weights.

    Attributes:
        path: the resolved directory (:func:`nla_probe.nla.layers.resolve_base_dir`).
        identity: checkpoint identity of ``path``.
        n_blocks: ``num_hidden_layers`` of its config.
    """

    def __init__(self, value: str, av_dir: Any, where: str = "params.base_model"):
        from nla_probe.nla.identity import checkpoint_identity

        self.path = resolve_base_dir(value, av_dir, where)
        self.identity = checkpoint_identity(self.path)
        cfg = json.loads((self.path / "config.json").read_text())
        cfg = cfg.get("text_config", cfg)
        self.n_blocks = int(cfg["num_hidden_layers"])
        self._loaded = None
        self._tokenizer = None

    def _load(self) -> Any:
        if self._loaded is None:
            self._loaded = load_base(self.path)
        return self._loaded

    @property
    def model(self) -> Any:
        return self._load().model

    @property
    def tokenizer(self) -> Any:
        if self._loaded is not None:
            return self._loaded.tokenizer
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        return self._tokenizer
