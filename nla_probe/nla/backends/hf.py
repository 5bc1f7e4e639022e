"""transformers backend: batched ``generate(inputs_embeds=...)`` on the loaded AV model."""

from __future__ import annotations

from typing import Any

from nla_probe.errors import InputError
from nla_probe.nla.generation import HookContext, Sampling, length_limits


class HFBackend:
    """Generation with transformers.  No extra options: pass none."""

    name = "hf"

    def __init__(self, av: Any, **kwargs: Any):
        if kwargs:
            raise InputError(f"the 'hf' backend takes no options, found {sorted(kwargs)}")
        self.av = av

    def generate(self, embeds: Any, sampling: Sampling, hooks: tuple, ctx: HookContext) -> list[tuple[list[int], str]]:
        """Decode a batch of prompt embeddings ``[B, T, d]`` (all prompts have the same length).

        The length cap is :func:`~nla_probe.nla.generation.length_limits` of the sampling and hooks; the
        hooks' logits processors run on raw logits, before temperature and top-p, in hook order except
        that processors with ``runs_last = True`` (a grammar's mask, which checks for dead ends after
        every other hook has acted) run after the others.  A processor may report rows that ended
        early through ``finish_overrides() -> {row: (n_tokens, finish_reason)}``.
        """
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        model, tok = self.av.model, self.av.tokenizer
        stop = list(ctx.stop_ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else stop[0]
        _, cap = length_limits(sampling, hooks)
        cfg = GenerationConfig(
            max_new_tokens=cap, do_sample=sampling.do_sample,
            temperature=sampling.temperature if sampling.do_sample else None,
            top_p=sampling.top_p if sampling.do_sample else None, top_k=None,
            repetition_penalty=None, eos_token_id=stop, pad_token_id=pad,
        )
        made = [p for h in hooks for p in h.hf_logits_processors(ctx)]
        procs = LogitsProcessorList(sorted(made, key=lambda p: bool(getattr(p, "runs_last", False))))
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        # generate() fills unset options from model.generation_config; the checkpoint's sampling
        # defaults (top_k, repetition_penalty, ...) are not part of the NLA recipe, so swap them out.
        saved = model.generation_config
        model.generation_config = cfg
        try:
            with torch.random.fork_rng(devices=[] if embeds.device.type == "cpu" else [embeds.device]):
                torch.manual_seed(sampling.seed)
                with torch.inference_mode():
                    out = model.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=cfg,
                                         logits_processor=procs)
        finally:
            model.generation_config = saved
        overrides: dict[int, tuple[int, str]] = {}
        for p in procs:
            if hasattr(p, "finish_overrides"):
                overrides.update(p.finish_overrides())
        stops = set(stop)
        results = []
        for i, row in enumerate(out.tolist()):
            if i in overrides:
                n, reason = overrides[i]
                results.append((row[:n], reason))
                continue
            ids, reason = [], "length"
            for t in row:
                if t in stops:
                    reason = "stop"
                    break
                ids.append(t)
            results.append((ids, reason))
        return results
