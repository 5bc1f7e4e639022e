"""The AV's input-embedding table read from its safetensors files, without building the model.

The vLLM backend needs only the prompt embeddings from the transformers side, and those need only
the rows of the prompt's token ids.  :func:`find_embedding_tensor` locates the table from the
safetensors headers (through ``model.safetensors.index.json`` when the checkpoint is sharded) and
:func:`read_embedding_rows` reads just the requested rows with ``safetensors.safe_open`` (a memory
map: a 128,256 × 8,192 bf16 table is 2.1 GB, the rows of a 40-token prompt 0.6 MB).

Which tensor: the first of :data:`EMBED_KEYS` present (Qwen2, Llama and Gemma-3 text checkpoints
store ``model.embed_tokens.weight``; Gemma-3 multimodal checkpoints
``language_model.model.embed_tokens.weight`` or ``model.language_model.embed_tokens.weight``), else
the one key ending in an embedding suffix of :data:`nla_probe.nla.arch.EMBED_KEY_SUFFIXES` outside a
vision tower, else — for a config with ``tie_word_embeddings`` — ``lm_head.weight`` (the same
table).  Its shape must be ``[vocab, d_model]``.

The rows are cast to the AV's dtype exactly as ``from_pretrained(dtype=...)`` casts the whole
table, so the prompt embeddings built from them (:func:`nla_probe.nla.injection.embed_with_injection`,
which applies Gemma's √d scale in the weight dtype) equal those built from the loaded model's
embedding module bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nla_probe.errors import ContractError
from nla_probe.nla.arch import EMBED_KEY_SUFFIXES

#: Known names of the input-embedding tensor, in order of preference.
EMBED_KEYS = (
    "model.embed_tokens.weight",
    "language_model.model.embed_tokens.weight",
    "model.language_model.embed_tokens.weight",
    "embed_tokens.weight",
    "transformer.wte.weight",
)
TIED_KEY = "lm_head.weight"
_VISION = ("vision", "visual", "image", "audio")


@dataclass(frozen=True)
class EmbeddingTensor:
    """Where the input-embedding table is stored.

    Attributes:
        file: the safetensors file holding it.
        key: the tensor name in that file.
        shape: ``(vocab, d_model)``.
        logits_width: rows of the output embedding (``lm_head.weight`` when stored, else ``vocab``).
    """

    file: Path
    key: str
    shape: tuple[int, int]
    logits_width: int


def find_embedding_tensor(path: str | Path, headers: dict[str, dict], d_model: int,
                          tied: bool = False) -> EmbeddingTensor:
    """The input-embedding tensor of checkpoint ``path`` from its weight files' headers
    (``{file name: safetensors header}``, as :func:`nla_probe.nla.weights.verify_weight_files` returns).

    Raises:
        ContractError: no embedding tensor (naming the files searched and the names tried), two
            candidates, or a shape other than ``[vocab, d_model]``.
    """
    p = Path(path)
    where = {k: fname for fname, h in headers.items() for k in h if k != "__metadata__"}
    index = p / "model.safetensors.index.json"
    source = index if index.is_file() else p / (min(headers) if headers else "model.safetensors")
    key = next((k for k in EMBED_KEYS if k in where), None)
    if key is None:
        found = [k for k in where if k.endswith(EMBED_KEY_SUFFIXES) and not any(v in k for v in _VISION)]
        if len(found) > 1:
            raise ContractError(source, "<embedding tensor>", "one input-embedding tensor", found,
                                "several tensors look like embedding tables")
        key = found[0] if found else (TIED_KEY if tied and TIED_KEY in where else None)
    if key is None:
        raise ContractError(source, "<embedding tensor>", f"one of {list(EMBED_KEYS)} (or a name ending in "
                            f"{list(EMBED_KEY_SUFFIXES)})", f"none among {len(where)} tensors",
                            "the prompt embeddings cannot be built without the input-embedding table")
    shape = list(headers[where[key]][key].get("shape", []))
    if len(shape) != 2 or shape[1] != d_model:
        raise ContractError(p / where[key], key, f"shape [vocab, d_model={d_model}] (d_model from the sidecar)", shape)
    out_shape = headers[where[TIED_KEY]][TIED_KEY].get("shape", shape) if TIED_KEY in where else shape
    return EmbeddingTensor(p / where[key], key, (int(shape[0]), int(shape[1])), int(out_shape[0]))


def read_embedding_rows(tensor: EmbeddingTensor, ids: Sequence[int], dtype: Any) -> Any:
    """``[len(ids), d]`` rows ``E[ids]`` cast to ``dtype``, read row by row from the memory-mapped file.

    Raises:
        ContractError: an id outside ``[0, vocab)``.
    """
    import torch
    from safetensors import safe_open

    bad = [i for i in ids if not 0 <= int(i) < tensor.shape[0]]
    if bad:
        raise ContractError(tensor.file, tensor.key, f"rows for token ids below vocab={tensor.shape[0]}", bad[:5])
    unique = sorted({int(i) for i in ids})
    with safe_open(str(tensor.file), "pt", device="cpu") as f:
        table = f.get_slice(tensor.key)
        rows = {i: table[i:i + 1].to(dtype) for i in unique}
    if not ids:
        return torch.zeros((0, tensor.shape[1]), dtype=dtype)
    return torch.cat([rows[int(i)] for i in ids])


def prompt_table(model: Any, tensor: EmbeddingTensor | None, dtype: Any, ids: Sequence[int],
                 cache: dict) -> tuple[Any, list[int]]:
    """``(table, local_ids)`` with ``table[local_ids] == E[ids]`` in ``dtype``.

    ``table`` is the loaded model's input-embedding weight when ``model`` is built and its weight
    holds real values; otherwise (no model: the vLLM path; or an embedding offloaded to disk) the
    rows of ``ids`` read from the file, on the embedding module's execution device, kept in ``cache``.
    """
    import torch

    from nla_probe.nla.placement import execution_device

    module = model.get_input_embeddings() if model is not None else None
    if module is not None and module.weight.device.type != "meta":
        return module.weight, list(ids)
    if tensor is None:
        raise ContractError("<AV>", "<embedding tensor>", "the input-embedding table", "none found")
    device = execution_device(module) if module is not None else torch.device("cpu")
    unique = sorted({int(i) for i in ids})
    key = (tuple(unique), str(device), str(dtype))
    if key not in cache:
        cache[key] = read_embedding_rows(tensor, unique, dtype).to(device)
    pos = {t: i for i, t in enumerate(unique)}
    return cache[key], [pos[int(t)] for t in ids]
