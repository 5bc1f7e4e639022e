"""The activation reconstructor (AR): a truncated LM plus a linear value head.

Architecture (as released): decoder blocks 0..K only (``num_hidden_layers = K + 1``), the final
norm replaced by Identity (the head sees the raw output of block K), no LM head, and
``value_head = Linear(d, d, bias=False)``.  The prediction is read at the LAST token of
``ar_template.format(explanation=text)`` tokenized WITH special tokens (BOS where the tokenizer has
one).  The read position is the rightmost real token (``attention_mask.cumsum(1).argmax(1)``).

Batching (``batching=``, per call or per :class:`Reconstructor`):

* ``"exact"`` (default): a row's output does not depend on the other rows of its batch, so it
  equals scoring the text alone, bit for bit.  Texts are grouped by equal token length (no padding,
  no attention mask arithmetic), the value head is applied one row at a time (a ``[1, d] × [d, d]``
  product: a batched GEMM rounds differently from a matrix-vector product), and on a CPU in
  bfloat16/float16 every text gets its own forward pass, because oneDNN's half-precision GEMM
  rounds a row differently depending on the batch it is in (measured; ``docs/metrics.md``).
* ``"fast"``: texts sorted by length, right-padded batches of ``batch_size``, one head GEMM per
  batch.  Per-row noise against ``"exact"``: ``docs/metrics.md`` ("Batching noise").

Texts longer than the AR context (``max_tokens``, default the config's
``max_position_embeddings``) follow an explicit per-call policy, reported per row:

* ``"error"`` (default): raise, naming the rows and their lengths, before any forward pass;
* ``"truncate"``: cut the explanation's tail (whole characters) until the prompt fits;
* ``"nan"``: return a NaN vector for that row.

Texts must be valid Unicode: a lone surrogate (e.g. from a ``"\\ud800"`` JSON escape) is refused
naming the row.  A non-finite AR output (NaN/inf weights) is an error naming the rows
(:class:`~nla_probe.errors.ModelOutputError`), never a silent NaN row.  Texts that still hold a
complete ``<explanation>…</explanation>`` pair are scored as given with a
:class:`~nla_probe.errors.TaggedTextWarning` naming the rows (the AR was trained on the inside).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nla_probe.errors import InputError, ModelOutputError, TaggedTextWarning
from nla_probe.nla.arch import final_norm_name, text_model
from nla_probe.nla.contract import Contract

OVERFLOW_POLICIES = ("error", "truncate", "nan")
BATCHING_MODES = ("exact", "fast")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _warn_tagged(texts: Sequence[str]) -> None:
    """Warn (:class:`TaggedTextWarning`) naming the rows that hold a complete explanation tag pair."""
    import warnings

    from nla_probe.nla.generation import CLOSE_TAG, OPEN_TAG

    rows = [i for i, t in enumerate(texts) if OPEN_TAG in t and CLOSE_TAG in t]
    if rows:
        warnings.warn(f"texts: rows {rows[:20]} ({len(rows)} of {len(texts)}) hold a complete {OPEN_TAG}...{CLOSE_TAG} "
                      "pair, scored as given; the AR was trained on the text inside the tags "
                      "(nla_probe.nla.generation.parse_explanation; `nla-probe reconstruct` strips them by default)",
                      TaggedTextWarning, stacklevel=3)


def check_texts(texts: Sequence[Any]) -> None:
    """Raise :class:`InputError` naming the rows that are not strings or hold a lone surrogate."""
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        found = type(texts[bad[0]]).__name__
        raise InputError(f"texts: rows {bad[:20]} are not strings (row {bad[0]} is {found})")
    surr = [(i, m) for i, t in enumerate(texts) if not t.isascii() and (m := _SURROGATE.search(t))]
    if surr:
        where = ", ".join(f"row {i} (U+{ord(m.group()):04X} at character {m.start()})" for i, m in surr[:10])
        raise InputError(f"texts: {where}: a lone surrogate is not valid Unicode text (a broken \\uXXXX escape?); "
                         "fix or drop these rows")


class ARModel(torch.nn.Module):
    """Truncated backbone (blocks 0..K, final norm = Identity) + value head.

    ``forward(input_ids [B, T], attention_mask [B, T]) -> [B, d]`` float32 predictions read at the
    rightmost real token of each row.
    """

    def __init__(self, backbone: Any, value_head: Any):
        super().__init__()
        self.backbone = backbone
        decoder = text_model(backbone)
        setattr(decoder, final_norm_name(decoder), torch.nn.Identity())
        if hasattr(backbone, "lm_head"):
            backbone.lm_head = torch.nn.Identity()
        self.value_head = value_head

    def hidden(self, input_ids: Any, attention_mask: Any) -> Any:
        """Raw output of block K at the rightmost real token, ``[B, d]``."""
        out = text_model(self.backbone)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        h = out.last_hidden_state
        last = attention_mask.long().cumsum(1).argmax(1).to(h.device)
        return h[torch.arange(h.shape[0], device=h.device), last]

    def forward(self, input_ids: Any, attention_mask: Any, rowwise_head: bool = False) -> Any:
        """``[B, d]`` float32 predictions; ``rowwise_head`` applies the head one row at a time (exact)."""
        w = self.value_head.weight
        h = self.hidden(input_ids, attention_mask).to(device=w.device, dtype=w.dtype)
        if rowwise_head:
            return torch.cat([self.value_head(h[i:i + 1]) for i in range(h.shape[0])]).float()
        return self.value_head(h).float()


def build_ar_from_causal_lm(causal_lm: Any, layer: int) -> Any:
    """An :class:`ARModel` from a full causal LM: deep copy, blocks 0..K kept, identity value head.

    Per-layer config arrays (``layer_types``) are truncated to K+1 as the release tooling does.
    """
    base = copy.deepcopy(text_model(causal_lm))
    n = len(base.layers)
    if not 0 <= layer < n:
        raise InputError(f"layer K must be in [0, {n - 1}] for a {n}-block model, found {layer}")
    base.layers = base.layers[: layer + 1]
    base.config.num_hidden_layers = layer + 1
    for attr in ("layer_types", "sliding_window_pattern_list", "no_rope_layers"):
        val = getattr(base.config, attr, None)
        if isinstance(val, list):
            setattr(base.config, attr, val[: layer + 1])
    d = base.config.hidden_size
    w = base.embed_tokens.weight
    head = torch.nn.Linear(d, d, bias=False, dtype=w.dtype, device=w.device)
    with torch.no_grad():
        head.weight.copy_(torch.eye(d, dtype=w.dtype))
    return ARModel(base, head)


@dataclass
class Reconstruction:
    """Output of :meth:`Reconstructor.reconstruct_detailed`.

    Attributes:
        vectors: ``[n, d]`` float32 predictions (NaN rows where the policy said so).
        n_tokens: AR prompt length in tokens per row (after any truncation).
        overflow: per row, '' or the action taken ('truncated:<chars removed>' / 'nan').
    """

    vectors: np.ndarray
    n_tokens: list[int]
    overflow: list[str] = field(default_factory=list)


class Reconstructor:
    """Maps explanation texts to vectors through the AR.  See the module doc for the definitions."""

    def __init__(self, model: Any, tokenizer: Any, contract: Contract, *, path: str | Path = "",
                 max_tokens: int | None = None, identity: dict | None = None, batching: str = "exact"):
        if batching not in BATCHING_MODES:
            raise InputError(f"batching: expected one of {BATCHING_MODES}, found {batching!r}")
        self.batching = batching
        self.model = model
        self.tokenizer = tokenizer
        self.contract = contract
        self.path = Path(path) if path else None
        cfg_max = getattr(getattr(model.backbone, "config", None), "max_position_embeddings", None)
        self.max_tokens = int(max_tokens or cfg_max or 4096)
        self.identity = identity or {}

    @property
    def d_model(self) -> int:
        return self.contract.d_model

    @property
    def device(self) -> Any:
        """The device input ids go to: the execution device of the input-embedding module."""
        from nla_probe.nla.placement import execution_device

        return execution_device(text_model(self.model.backbone).embed_tokens)

    def _batches(self, ids: list[list[int]], todo: list[int], batch_size: int, batching: str) -> list[list[int]]:
        """Row groups per forward pass (see the module doc for the two modes)."""
        order = sorted(todo, key=lambda i: len(ids[i]))
        if batching == "fast":
            return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        w = self.model.value_head.weight
        if self.device.type == "cpu" and w.dtype in (torch.bfloat16, torch.float16):
            batch_size = 1
        groups: dict[int, list[int]] = {}
        for i in order:
            groups.setdefault(len(ids[i]), []).append(i)
        return [g[s:s + batch_size] for g in groups.values() for s in range(0, len(g), batch_size)]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """AR prompt ids per text (template filled, special tokens added)."""
        prompts = [self.contract.ar_prompt_text(t) for t in texts]
        return [list(x) for x in self.tokenizer(prompts, add_special_tokens=True)["input_ids"]]

    def _fit(self, text: str) -> tuple[list[int], int]:
        """Longest prefix of ``text`` whose prompt fits ``max_tokens``; returns (ids, chars removed)."""
        lo, hi = 0, len(text)
        best = self.encode([""])[0]
        if len(best) > self.max_tokens:
            raise InputError(f"the empty AR prompt is {len(best)} tokens, above max_tokens={self.max_tokens}")
        best_len = 0
        while lo <= hi:
            mid = (lo + hi) // 2
            ids = self.encode([text[:mid]])[0]
            if len(ids) <= self.max_tokens:
                best, best_len, lo = ids, mid, mid + 1
            else:
                hi = mid - 1
        return best, len(text) - best_len

    def reconstruct_detailed(self, texts: Sequence[str], *, batch_size: int = 32, on_overflow: str = "error",
                             progress: bool = False, batching: str | None = None) -> Reconstruction:
        """Reconstruct vectors for explanation texts (the stripped payload, not the raw decode).

        ``batching``: ``"exact"`` or ``"fast"`` (module doc); ``None`` uses the reconstructor's.
        """
        batching = self.batching if batching is None else batching
        if batching not in BATCHING_MODES:
            raise InputError(f"batching: expected one of {BATCHING_MODES}, found {batching!r}")
        if isinstance(texts, str):
            raise InputError("texts: expected a sequence of strings, found a single str")
        if on_overflow not in OVERFLOW_POLICIES:
            raise InputError(f"on_overflow: expected one of {OVERFLOW_POLICIES}, found {on_overflow!r}")
        if batch_size < 1:
            raise InputError(f"batch_size: expected >= 1, found {batch_size}")
        texts = list(texts)
        check_texts(texts)
        _warn_tagged(texts)
        ids = self.encode(texts)
        overflow = [""] * len(texts)
        long_rows = [i for i, x in enumerate(ids) if len(x) > self.max_tokens]
        if long_rows and on_overflow == "error":
            desc = ", ".join(f"row {i}: {len(ids[i])} tokens" for i in long_rows[:10])
            raise InputError(f"{len(long_rows)} AR prompt(s) exceed max_tokens={self.max_tokens} ({desc}); "
                             "pass on_overflow='truncate' or 'nan' to handle them explicitly")
        for i in long_rows:
            if on_overflow == "truncate":
                ids[i], removed = self._fit(texts[i])
                overflow[i] = f"truncated:{removed}"
            else:
                overflow[i] = "nan"
        out = np.full((len(texts), self.d_model), np.nan, dtype=np.float32)
        todo = [i for i in range(len(texts)) if overflow[i] != "nan"]
        pad = self.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        batches = self._batches(ids, todo, batch_size, batching)
        it = batches
        if progress:
            from nla_probe.progress import track

            it = track(batches, description="AR scoring")
        dev = self.device
        with torch.inference_mode():
            for rows in it:
                width = max(len(ids[i]) for i in rows)
                inp = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for j, i in enumerate(rows):
                    inp[j, : len(ids[i])] = torch.tensor(ids[i])
                    mask[j, : len(ids[i])] = 1
                pred = self.model(inp.to(dev), mask.to(dev), rowwise_head=batching == "exact")
                out[rows] = pred.cpu().numpy()
        bad = [i for i in todo if not np.isfinite(out[i]).all()]
        if bad:
            raise ModelOutputError(f"AR {self.path or '(in memory)'}: non-finite output (NaN/inf) for rows {bad[:20]} "
                                   f"of {len(texts)}; the AR's weights produce it (check them), no row was scored")
        return Reconstruction(out, [len(x) for x in ids], overflow)

    def reconstruct(self, texts: Sequence[str], *, batch_size: int = 32, on_overflow: str = "error",
                    progress: bool = False, batching: str | None = None) -> np.ndarray:
        """``[n, d]`` float32 reconstructions of ``texts`` (see :meth:`reconstruct_detailed`)."""
        return self.reconstruct_detailed(texts, batch_size=batch_size, on_overflow=on_overflow,
                                         progress=progress, batching=batching).vectors

    def score(self, texts: Sequence[str], vectors: Any, *, denominator: float | str,
              batch_size: int = 32, on_overflow: str = "error", batching: str | None = None) -> Any:
        """Tidy polars frame, one row per text: ``row, text, n_tokens, overflow, mse_nrm, cos, fve_nrm``.

        ``mse_nrm`` uses the AR's ``mse_scale``; ``fve_nrm = 1 − mse_nrm / denominator``.
        """
        import polars as pl

        from nla_probe.analysis.metrics import cosine, fve_nrm, mse_nrm
        from nla_probe.nla.injection import check_vectors

        gold = check_vectors(vectors, self.d_model, "vectors").numpy()
        if gold.shape[0] != len(texts):
            raise InputError(f"texts and vectors must have the same length, found {len(texts)} and {gold.shape[0]}")
        rec = self.reconstruct_detailed(texts, batch_size=batch_size, on_overflow=on_overflow, batching=batching)
        mse = mse_nrm(rec.vectors, gold, self.contract.mse_scale)
        return pl.DataFrame({
            "row": list(range(len(texts))), "text": list(texts), "n_tokens": rec.n_tokens,
            "overflow": rec.overflow, "mse_nrm": mse, "cos": cosine(rec.vectors, gold),
            "fve_nrm": fve_nrm(mse, denominator),
        })
