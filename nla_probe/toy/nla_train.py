"""Supervised training of the toy AV (vector -> explanation) and AR (explanation -> vector).

AV: a copy of the base LM fine-tuned with cross-entropy on the gold explanation (plus the
end-of-turn token) that follows the canonical AV prompt, whose marker row is replaced by the
activation rescaled to ``injection_scale`` (:func:`nla_probe.nla.injection.embed_with_injection`).
The prompt tokens before the marker are identical for every example, so each step runs them
once without gradient and reuses their key/value cache for the whole batch (the weights are
the current ones; only the gradient path through the constant prefix is dropped). This cuts
the sequence the backward pass sees from ~135 to ~45 tokens.

AR: :func:`nla_probe.nla.reconstructor.build_ar_from_causal_lm` (blocks 0..K, identity value
head) trained with ``mse_nrm`` = mean squared error between the prediction and the gold
vector, both rescaled to norm √d (equal to ``2 (1 - cos)``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from nla_probe.toy.train import Schedule, run_budgeted

logger = logging.getLogger(__name__)


def explanation_payload(explanation: str) -> str:
    """The text between ``<explanation>`` tags, stripped (what the AR reads)."""
    from nla_probe.nla.generation import parse_explanation

    return parse_explanation(explanation)[0]


def _pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[Any, Any]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


def ar_loss(ar: Any, tokenizer: Any, contract: Any, texts: Sequence[str], vectors: Any) -> Any:
    """Mean ``mse_nrm`` of the AR's predictions for ``texts`` against ``vectors`` [B, d]."""
    prompts = [contract.ar_prompt_text(t) for t in texts]
    ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    inp, mask = _pad(ids, tokenizer.pad_token_id or 0)
    pred = ar(inp, mask)
    s = contract.mse_scale
    p = pred / pred.norm(dim=-1, keepdim=True).clamp_min(1e-12) * s
    g = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12) * s
    return ((p - g) ** 2).mean()


def train_ar(ar: Any, tokenizer: Any, contract: Any, texts: Sequence[str], vectors: Any,
             schedule: Schedule, state_path: str | Path, *, batch_size: int = 32,
             seed: int = 0) -> dict:
    """Train the AR on (explanation payload, vector) pairs; see :func:`run_budgeted`."""
    import numpy as np
    import torch

    vec = torch.tensor(np.asarray(vectors, dtype=np.float32))
    n = len(texts)

    def loss_fn(step: int) -> Any:
        idx = np.random.default_rng([seed, step]).integers(0, n, size=batch_size)
        return ar_loss(ar, tokenizer, contract, [texts[i] for i in idx], vec[idx])

    return run_budgeted(ar, loss_fn, schedule, state_path, tag="ar", log_every=50)


class AVBatcher:
    """Builds AV training batches: cached constant prefix + injected suffix + target.

    Attributes:
        prefix_ids: Prompt ids before the marker (identical for every example).
        suffix_ids: Prompt ids from the marker (inclusive) to the end of the prompt.
    """

    def __init__(self, tokenizer: Any, contract: Any):
        from nla_probe.nla.injection import av_prompt_ids, find_injection_site

        ids = av_prompt_ids(tokenizer, contract)
        site = find_injection_site(ids, contract)
        self.prefix_ids = ids[:site]
        self.suffix_ids = ids[site:]
        self.tokenizer = tokenizer
        self.contract = contract
        self.eos_id = tokenizer.eos_token_id

    def target_ids(self, explanations: Sequence[str]) -> list[list[int]]:
        """Target ids per explanation: its tokens (no special tokens) plus end-of-turn."""
        enc = self.tokenizer(list(explanations), add_special_tokens=False)["input_ids"]
        return [list(e) + [self.eos_id] for e in enc]

    def loss(self, model: Any, explanations: Sequence[str], vectors: Any) -> Any:
        """Mean cross-entropy (nats/token) of the targets given the injected prompt."""
        import torch
        import torch.nn.functional as F

        from nla_probe.nla.injection import embed_with_injection

        B = len(explanations)
        targets = self.target_ids(explanations)
        rows = [self.suffix_ids + t for t in targets]
        inp, mask = _pad(rows, self.tokenizer.pad_token_id or 0)
        emb_w = model.get_input_embeddings().weight
        embeds = embed_with_injection(emb_w, inp, vectors, self.contract, 1.0, sites=[0] * B)
        cache = None
        if self.prefix_ids:
            with torch.no_grad():
                pre = model(input_ids=torch.tensor([self.prefix_ids]), use_cache=True)
            cache = pre.past_key_values
            cache.batch_repeat_interleave(B)
        logits = model(inputs_embeds=embeds, past_key_values=cache, use_cache=False).logits
        n_suf = len(self.suffix_ids)
        labels = torch.full(inp.shape, -100, dtype=torch.long)
        for i, t in enumerate(targets):
            labels[i, n_suf:n_suf + len(t)] = torch.tensor(t)
        # logits at position j predict token j + 1
        lg = logits[:, n_suf - 1:-1]
        lb = labels[:, n_suf:]
        return F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1), ignore_index=-100)


def train_av(model: Any, tokenizer: Any, contract: Any, explanations: Sequence[str], vectors: Any,
             schedule: Schedule, state_path: str | Path, *, batch_size: int = 32,
             seed: int = 0) -> dict:
    """Fine-tune the AV on (vector, gold explanation) pairs; see :func:`run_budgeted`."""
    import numpy as np
    import torch

    vec = torch.tensor(np.asarray(vectors, dtype=np.float32))
    batcher = AVBatcher(tokenizer, contract)
    n = len(explanations)

    def loss_fn(step: int) -> Any:
        idx = np.random.default_rng([seed, step]).integers(0, n, size=batch_size)
        return batcher.loss(model, [explanations[i] for i in idx], vec[idx])

    return run_budgeted(model, loss_fn, schedule, state_path, tag="av", log_every=50)
