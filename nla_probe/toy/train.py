"""Time-budgeted, resumable training loops for the toy models (base LM here; AV/AR in nla_train).

Every loop is budgeted in wall-clock seconds, not steps, because the CPU is shared: the
learning rate follows linear warm-up then cosine decay over the *elapsed fraction* of the
budget. Checkpoints (``state.pt``: model, optimizer, step, elapsed seconds, RNG) are written
every ``checkpoint_every_s`` seconds and at the end, so an interrupted run resumes where it
stopped and keeps its schedule.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """Shape of one toy model family (a Qwen2-architecture causal LM).

    Attributes:
        name: Family name, also the sub-directory under ``data/toy/``.
        vocab_size: BPE vocabulary size (tokens).
        hidden_size: d_model.
        intermediate_size: MLP width.
        num_layers: Decoder blocks L.
        num_heads / num_kv_heads: Attention heads / key-value heads.
        layer: Extraction layer K (output of block K); K <= L - 2.
        marker_char: The AV injection character.
        seq_len: Base-LM training context (tokens).
    """

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    layer: int
    marker_char: str
    seq_len: int = 128

    def qwen2_config(self, tokenizer: Any) -> Any:
        """A ``Qwen2Config`` for this family (tied embeddings)."""
        from transformers import Qwen2Config

        return Qwen2Config(
            vocab_size=len(tokenizer), hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=1024, tie_word_embeddings=True, rope_theta=10000.0,
            bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id, use_sliding_window=False,
        )


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A wall-clock budget and its learning-rate schedule.

    Attributes:
        budget_s: Training seconds (elapsed time across resumes).
        lr: Peak learning rate.
        warmup_s: Linear warm-up seconds.
        min_lr_frac: Floor of the cosine decay, as a fraction of ``lr``.
        checkpoint_every_s: Seconds between checkpoints.
        max_steps: Optional hard cap on optimizer steps (smoke builds).
    """

    budget_s: float
    lr: float
    warmup_s: float = 30.0
    min_lr_frac: float = 0.1
    checkpoint_every_s: float = 120.0
    max_steps: int | None = None

    def lr_at(self, elapsed_s: float) -> float:
        """Learning rate after ``elapsed_s`` seconds."""
        if elapsed_s < self.warmup_s:
            return self.lr * max(elapsed_s / self.warmup_s, 0.02)
        frac = min(1.0, (elapsed_s - self.warmup_s) / max(self.budget_s - self.warmup_s, 1e-9))
        cos = 0.5 * (1 + math.cos(math.pi * frac))
        return self.lr * (self.min_lr_frac + (1 - self.min_lr_frac) * cos)


def run_budgeted(
    model: Any,
    loss_fn: Callable[[int], Any],
    schedule: Schedule,
    state_path: str | Path,
    *,
    log_every: int = 50,
    tag: str = "train",
    on_log: Callable[[int, float], None] | None = None,
) -> dict:
    """Run AdamW steps until the budget is spent, checkpointing to ``state_path``.

    Args:
        model: The torch module being trained (all parameters with ``requires_grad``).
        loss_fn: ``loss_fn(step) -> scalar loss tensor`` for one batch.
        schedule: Budget and learning-rate schedule.
        state_path: ``state.pt`` path; resumed from when it exists.
        log_every: Steps between log lines.
        tag: Name used in log lines.
        on_log: Optional callback ``(step, mean_loss)`` at each log line.

    Returns:
        ``{"step": int, "elapsed_s": float, "loss": float}`` (loss = mean of the last window).
    """
    import torch

    state_path = Path(state_path)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=schedule.lr, betas=(0.9, 0.98), weight_decay=0.01)
    step, elapsed = 0, 0.0
    if state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed_s"]
        logger.info("%s: resumed at step %d (%.0f s elapsed)", tag, step, elapsed)

    def save() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "elapsed_s": elapsed}, tmp)
        tmp.replace(state_path)

    model.train()
    window: list[float] = []
    last_ckpt = time.monotonic()
    t0 = time.monotonic() - elapsed
    while elapsed < schedule.budget_s and (schedule.max_steps is None or step < schedule.max_steps):
        for g in opt.param_groups:
            g["lr"] = schedule.lr_at(elapsed)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        elapsed = time.monotonic() - t0
        window.append(float(loss.detach()))
        if step % log_every == 0:
            mean = sum(window) / len(window)
            logger.info("%s step %d  %.0f/%.0f s  lr %.2e  loss %.4f", tag, step, elapsed,
                        schedule.budget_s, schedule.lr_at(elapsed), mean)
            if on_log is not None:
                on_log(step, mean)
            window = []
        if time.monotonic() - last_ckpt > schedule.checkpoint_every_s:
            save()
            last_ckpt = time.monotonic()
    save()
    model.eval()
    return {"step": step, "elapsed_s": elapsed, "loss": sum(window) / max(len(window), 1)}


def pack_documents(tokenizer: Any, texts: Sequence[str]) -> Any:
    """All texts tokenized and joined into one int64 stream, each followed by ``<|endoftext|>``."""
    import numpy as np

    sep = tokenizer.pad_token_id
    enc = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    out = []
    for ids in enc:
        out.extend(ids)
        out.append(sep)
    return np.asarray(out, dtype=np.int64)


def train_base_lm(spec: FamilySpec, tokenizer: Any, train_texts: Sequence[str],
                  val_texts: Sequence[str], schedule: Schedule, work_dir: str | Path,
                  *, batch_size: int = 32, seed: int = 0) -> Any:
    """Train (or resume) the base causal LM of a family on packed corpus windows.

    Batches are random windows of ``spec.seq_len + 1`` tokens from the packed training
    stream, drawn with a generator seeded by ``seed`` and the step number.

    Returns:
        The trained ``Qwen2ForCausalLM`` (fp32, eval mode). Validation loss (nats/token on
        up to 64 windows of the held-out stream) is logged.
    """
    import numpy as np
    import torch
    from transformers import Qwen2ForCausalLM

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(spec.qwen2_config(tokenizer))
    stream = torch.from_numpy(pack_documents(tokenizer, train_texts))
    val = torch.from_numpy(pack_documents(tokenizer, val_texts))
    T = spec.seq_len
    logger.info("%s base LM: %.2fM params, %d train tokens", spec.name,
                sum(p.numel() for p in model.parameters()) / 1e6, len(stream))

    def batch(src: Any, gen: np.random.Generator, n: int) -> Any:
        starts = gen.integers(0, len(src) - T - 1, size=n)
        return torch.stack([src[s:s + T + 1] for s in starts])

    def loss_fn(step: int) -> Any:
        x = batch(stream, np.random.default_rng([seed, step]), batch_size)
        return _shifted_loss(model, x)

    def val_loss(step: int, _: float) -> None:
        if step % 500:
            return
        model.eval()
        with torch.no_grad():
            x = batch(val, np.random.default_rng([seed, 10**9]), 64)
            logger.info("%s val loss %.3f", spec.name, float(_shifted_loss(model, x)))
        model.train()

    run_budgeted(model, loss_fn, schedule, work / "state.pt", tag=f"{spec.name}-lm",
                 on_log=val_loss)
    return model


def _shifted_loss(model: Any, x: Any) -> Any:
    import torch.nn.functional as F

    logits = model(input_ids=x[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))


def sample_text(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 40,
                seed: int = 0) -> list[str]:
    """Sampled continuations (temperature 0.8) of ``prompts``, for a quick look at the LM."""
    import torch

    torch.manual_seed(seed)
    out = []
    for p in prompts:
        ids = torch.tensor([tokenizer(p, add_special_tokens=False)["input_ids"]])
        g = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=True, temperature=0.8,
                           pad_token_id=tokenizer.pad_token_id)
        out.append(tokenizer.decode(g[0, ids.shape[1]:]))
    return out
