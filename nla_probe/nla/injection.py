"""Activation injection into the AV prompt, exactly as the released inference does it.

1. The prompt is the checkpoint's chat template applied in ONE step to one user turn (no system
   message) whose content is ``av_template.format(injection_char=marker)``, with the generation
   prompt added (:func:`av_prompt_ids`).
2. The injection site is the single position p with ``ids[p] == injection_token_id`` that is not
   first or last and whose neighbours ``ids[p-1]``, ``ids[p+1]`` equal the sidecar's neighbour ids.
3. Every row of the prompt is the embedding ``E[id] · embed_scale`` (√d for Gemma, 1 otherwise; the
   scale is cast to the weight dtype, as Gemma's scaled-embedding module does at training time),
   except the site row, which is REPLACED by ``v · injection_scale / ‖v‖₂`` (computed in fp32, norm
   clamped at 1e-12) — the injected row is not multiplied by ``embed_scale``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nla_probe.errors import ContractError, InputError
from nla_probe.nla.contract import Contract

if TYPE_CHECKING:
    import torch


def chat_ids(tokenizer: Any, content: str) -> list[int]:
    """Token ids of one user turn with the generation prompt, via the tokenizer's chat template."""
    out = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=True, add_generation_prompt=True,
        return_dict=False,
    )
    if hasattr(out, "input_ids"):
        out = out["input_ids"]
    if out and isinstance(out[0], list):
        out = out[0]
    return [int(i) for i in out]


def av_prompt_ids(tokenizer: Any, contract: Contract) -> list[int]:
    """The canonical AV prompt ids (one-step chat template, one user turn, no system message)."""
    return chat_ids(tokenizer, contract.av_prompt_text())


def find_injection_site(ids: Sequence[int], contract: Contract, where: str = "AV prompt") -> int:
    """The single valid marker position in ``ids`` (see module doc); raises ContractError otherwise."""
    tid = contract.injection_token_id
    hits = [i for i, t in enumerate(ids) if t == tid]
    valid = [p for p in hits if 0 < p < len(ids) - 1
             and ids[p - 1] == contract.left_neighbor_id and ids[p + 1] == contract.right_neighbor_id]
    if len(valid) != 1:
        found = [(p, ids[p - 1] if p > 0 else None, ids[p + 1] if p + 1 < len(ids) else None) for p in hits]
        raise ContractError(
            contract.source or where, "tokens.injection_left_neighbor_id/right_neighbor_id",
            f"exactly one marker {tid} between {contract.left_neighbor_id} and {contract.right_neighbor_id}",
            f"{len(hits)} marker(s) at (position, left, right) {found}",
            f"checked in the {where}; template or tokenizer drift?",
        )
    return valid[0]


def check_vectors(vectors: Any, d_model: int, name: str = "vectors") -> "torch.Tensor":
    """``vectors`` as a float32 ``[n, d]`` tensor; raises InputError for wrong shape, NaN/inf or zero norm.

    Every row is checked before any work starts; the message lists the offending row indices.
    """
    import numpy as np
    import torch

    if isinstance(vectors, torch.Tensor):
        t = vectors
    else:
        a = np.asarray(vectors, dtype=np.float32)
        # torch warns on (and cannot protect) read-only arrays, e.g. views into a parquet buffer
        t = torch.as_tensor(a if a.flags.writeable else a.copy())
    t = t.detach().to(torch.float32).cpu()
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[1] != d_model:
        raise InputError(f"{name}: expected shape [n, {d_model}] (d_model from the sidecar), found {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise InputError(f"{name}: expected at least one row, found 0")
    bad = (~torch.isfinite(t)).any(1).nonzero().flatten().tolist()
    if bad:
        raise InputError(f"{name}: rows {bad[:20]} contain NaN or inf (expected finite values)")
    zero = (t.double().norm(dim=1) == 0).nonzero().flatten().tolist()  # float64: no overflow/underflow
    if zero:
        raise InputError(f"{name}: rows {zero[:20]} have zero norm (expected a direction to inject)")
    return t


def normalize_activation(v: "torch.Tensor", scale: float) -> "torch.Tensor":
    """``v / (‖v‖₂ / scale)`` in fp32, norm clamped at 1e-12 (one division, as released).

    Rows whose fp32 norm overflows (entries around 1e19 and above: the squares exceed the fp32
    range) or underflows (below about 1e-19) are computed in float64 instead, so a finite non-zero
    vector always keeps its direction.
    """
    import torch

    v = v.to(torch.float32)
    n = v.norm(dim=-1, keepdim=True)
    out = v / (n.clamp_min(1e-12) / scale)
    odd = (~torch.isfinite(n) | (n < 1e-18)).flatten()
    if odd.any():
        w = v.reshape(-1, v.shape[-1])[odd].double()
        fixed = (w / (w.norm(dim=-1, keepdim=True).clamp_min(1e-300) / scale)).to(torch.float32)
        out = out.reshape(-1, v.shape[-1]).clone()
        out[odd] = fixed
        out = out.reshape(v.shape)
    return out


def embed_with_injection(
    embedding_weight: "torch.Tensor",
    input_ids: "torch.Tensor",
    vectors: "torch.Tensor",
    contract: Contract,
    embed_scale: float = 1.0,
    sites: Sequence[int] | None = None,
) -> "torch.Tensor":
    """``inputs_embeds [B, T, d]`` with each row's marker position replaced by its scaled vector.

    Args:
        embedding_weight: the input embedding table ``[V, d]`` (differentiable; used in training).
        input_ids: ``[B, T]`` token ids; each row holds exactly one valid injection site unless
            ``sites`` gives the positions explicitly.
        vectors: ``[B, d]`` raw activations (any magnitude; only the direction is kept).
        contract: the AV contract (marker id, neighbours, injection_scale).
        embed_scale: multiplier applied to looked-up rows (√d for Gemma), cast to the weight dtype.
        sites: optional per-row site positions (skips the search).

    Returns:
        Embeddings in the weight dtype; the injected rows are computed in fp32 then cast.
    """
    import torch

    if contract.injection_scale is None:
        raise ContractError(contract.source or "<contract>", "extraction.injection_scale",
                            "a positive number", None, "an AR sidecar cannot inject")
    if input_ids.ndim != 2 or vectors.ndim != 2 or vectors.shape[0] != input_ids.shape[0]:
        raise InputError(f"embed_with_injection: expected input_ids [B, T] and vectors [B, d], found "
                         f"{tuple(input_ids.shape)} and {tuple(vectors.shape)}")
    emb = torch.nn.functional.embedding(input_ids, embedding_weight)
    if embed_scale != 1.0:
        emb = emb * torch.tensor(embed_scale, dtype=embedding_weight.dtype, device=emb.device)
    if sites is None:
        sites = [find_injection_site(row.tolist(), contract) for row in input_ids.cpu()]
    rows = torch.arange(input_ids.shape[0], device=emb.device)
    pos = torch.as_tensor(list(sites), device=emb.device)
    injected = normalize_activation(vectors.to(emb.device), contract.injection_scale).to(emb.dtype)
    mask = torch.zeros(emb.shape[:2], dtype=torch.bool, device=emb.device)
    mask[rows, pos] = True
    full = torch.zeros_like(emb)
    full[rows, pos] = injected
    return torch.where(mask[..., None], full, emb)
