"""Writing checkpoints in the released layout (used by the fixture generator and the toy build).

AV directory: Hugging Face model files, tokenizer files, ``generation_config.json`` and
``nla_meta.yaml``.  AR directory: ``config.json`` with ``num_hidden_layers = K + 1``, backbone
weights ``model.embed_tokens.weight`` + ``model.layers.{0..K}.*`` only (no final norm, no LM head),
``value_head.safetensors`` = ``{"weight": bf16 [d, d]}``, tokenizer files (``padding_side: right``)
and ``nla_meta.yaml``.  Sidecars are serialised as the release tooling does
(``yaml.dump(sort_keys=False)``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from nla_probe.errors import InputError
from nla_probe.nla.contract import AR_TEMPLATE, AV_TEMPLATE, Contract, write_sidecar
from nla_probe.nla.injection import chat_ids

_CAUSAL_LM_CLASS = {"qwen2": "Qwen2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM",
                    "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM", "gemma2": "Gemma2ForCausalLM"}


def critic_suffix_ids(tokenizer: Any, ar_template: str = AR_TEMPLATE) -> list[int]:
    """``tokenize(suffix)[1:]`` where suffix is the AR template's text after ``{explanation}``;
    the first token is dropped because it can merge with the explanation's last character."""
    suffix = ar_template.split("{explanation}", 1)[1]
    return list(tokenizer(suffix, add_special_tokens=False)["input_ids"][1:])


def make_contract(tokenizer: Any, d_model: int, layer: int, injection_scale: float, injection_char: str, *,
                  av_template: str = AV_TEMPLATE, ar_template: str = AR_TEMPLATE, mse_scale: float | None = None,
                  base_checkpoint: str = "", stage: str = "sl") -> Contract:
    """A :class:`Contract` (role 'av') whose marker id and neighbours are computed from ``tokenizer``.

    The neighbours are read from the canonical AV prompt (one-step chat template); the AR suffix ids
    with :func:`critic_suffix_ids`.  ``mse_scale`` defaults to √d_model.
    """
    ids = tokenizer.encode(injection_char, add_special_tokens=False)
    if len(ids) != 1:
        raise InputError(f"injection_char {injection_char!r}: expected one token, found {ids}")
    tid = ids[0]
    prompt = chat_ids(tokenizer, av_template.format(injection_char=injection_char))
    sites = [i for i, t in enumerate(prompt) if t == tid]
    if len(sites) != 1 or not 0 < sites[0] < len(prompt) - 1:
        raise InputError(f"the canonical AV prompt must hold the marker once, not at an end; found positions {sites}")
    p = sites[0]
    return Contract(role="av", d_model=int(d_model), layer=int(layer), injection_scale=float(injection_scale),
                    mse_scale=float(mse_scale if mse_scale is not None else d_model ** 0.5),
                    injection_char=injection_char, injection_token_id=tid, left_neighbor_id=prompt[p - 1],
                    right_neighbor_id=prompt[p + 1], critic_suffix_ids=tuple(critic_suffix_ids(tokenizer, ar_template)),
                    av_template=av_template, ar_template=ar_template, base_checkpoint=base_checkpoint, stage=stage)


def _stop_ids(tokenizer: Any) -> list[int]:
    vocab = tokenizer.get_vocab()
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids += [vocab[t] for t in ("<eos>", "<end_of_turn>", "<|im_end|>") if t in vocab]
    return sorted(set(ids))


def save_av_checkpoint(model: Any, tokenizer: Any, out_dir: str | Path, contract: Contract, *,
                       dtype: Any = None) -> Path:
    """Write an AV checkpoint directory (weights optionally cast to ``dtype``, e.g. torch.float16)."""
    from transformers import GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = model if dtype is None else copy.deepcopy(model).to(dtype)
    m.config.use_cache = True
    m.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    stops = _stop_ids(tokenizer)
    GenerationConfig(eos_token_id=stops if len(stops) > 1 else stops[0], bos_token_id=tokenizer.bos_token_id,
                     pad_token_id=tokenizer.pad_token_id).save_pretrained(str(out))
    write_sidecar(out, contract.with_role("av"))
    return out


def save_ar_checkpoint(ar_model: Any, tokenizer: Any, out_dir: str | Path, contract: Contract, *,
                       dtype: Any = None) -> Path:
    """Write an AR checkpoint directory from an :class:`~nla_probe.nla.reconstructor.ARModel`.

    The backbone is written in ``dtype`` (default: as is) and the value head always in bf16.
    """
    import torch
    from safetensors.torch import save_file

    from nla_probe.nla.arch import text_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    decoder = text_model(ar_model.backbone)
    cfg = copy.deepcopy(decoder.config)
    k1 = len(decoder.layers)
    if k1 != contract.layer + 1:
        raise InputError(f"AR backbone has {k1} blocks; the contract's layer K={contract.layer} needs {contract.layer + 1}")
    cfg.num_hidden_layers = k1
    cfg.architectures = [_CAUSAL_LM_CLASS.get(cfg.model_type, type(decoder).__name__.replace("Model", "ForCausalLM"))]
    cfg.use_cache = True
    cfg.save_pretrained(str(out))
    state = {}
    for k, v in decoder.state_dict().items():
        if k.startswith("norm.") or "rotary_emb" in k:
            continue
        t = v.detach().cpu().contiguous()
        state[f"model.{k}"] = t.to(dtype) if dtype is not None else t
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    w = ar_model.value_head.weight.detach().cpu().to(torch.bfloat16).contiguous()
    save_file({"weight": w}, str(out / "value_head.safetensors"), metadata={"format": "pt"})
    tok = copy.deepcopy(tokenizer)
    tok.padding_side = "right"
    tok.save_pretrained(str(out))
    write_sidecar(out, contract.with_role("ar"))
    return out
