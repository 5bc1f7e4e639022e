"""Architecture adapters: the per-family facts the loader needs, as data.

=============  ==============================  ===========  ==========================
family         model_type (text config)        embed scale  extra stop tokens
=============  ==============================  ===========  ==========================
qwen2 / llama  qwen2, qwen3, llama, mistral    1.0          from generation_config
gemma          gemma, gemma2, gemma3, t5,      √d after     ``<end_of_turn>`` (from
               gemma3_text                     lookup       generation_config / vocab)
=============  ==============================  ===========  ==========================

Nested configs (``config.text_config``) and multimodal wrappers (``model.language_model``) are
unwrapped to the text model.
"""

from __future__ import annotations

import math
from typing import Any

SCALED_EMBED_MODEL_TYPES = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text", "t5"})
FINAL_NORM_NAMES = ("norm", "final_layernorm", "ln_f")
EMBED_KEY_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight")
EXTRA_STOP_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>")


def text_config(config: Any) -> Any:
    """The text part of a (possibly multimodal) config."""
    sub = getattr(config, "text_config", None)
    return sub if sub is not None else config


def embed_scale(config: Any) -> float:
    """√hidden_size for Gemma/T5-style scaled embeddings, else 1.0."""
    tc = text_config(config)
    if getattr(tc, "model_type", "") in SCALED_EMBED_MODEL_TYPES:
        return math.sqrt(tc.hidden_size)
    return 1.0


def text_model(model: Any) -> Any:
    """The decoder stack (the module holding ``layers``, ``embed_tokens`` and the final norm)."""
    cur = model
    for _ in range(4):
        if hasattr(cur, "layers") and hasattr(cur, "embed_tokens"):
            return cur
        for attr in ("language_model", "model", "text_model"):
            nxt = getattr(cur, attr, None)
            if nxt is not None and nxt is not cur:
                cur = nxt
                break
        else:
            break
    raise ValueError(f"cannot find the decoder stack (layers + embed_tokens) in {type(model).__name__}")


def final_norm_name(decoder: Any) -> str:
    for name in FINAL_NORM_NAMES:
        if hasattr(decoder, name):
            return name
    raise ValueError(f"{type(decoder).__name__} has none of the final norms {FINAL_NORM_NAMES}")


def stop_token_ids(tokenizer: Any, generation_config: Any | None) -> list[int]:
    """Stop ids: ``generation_config.eos_token_id`` (int or list), the tokenizer's eos, and the
    chat end-of-turn tokens present in the vocabulary (Gemma's ``<end_of_turn>``)."""
    ids: list[int] = []
    eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    for value in (eos if isinstance(eos, (list, tuple)) else [eos]):
        if isinstance(value, int):
            ids.append(value)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    for tok in EXTRA_STOP_TOKENS:
        if tok in vocab:
            ids.append(vocab[tok])
    return sorted(set(ids))
