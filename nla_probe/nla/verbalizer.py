"""The activation verbalizer (AV): vectors in, explanations out.

``Verbalizer(av, backend="hf"|"vllm").verbalize(vectors, ...)`` builds the canonical AV prompt,
injects each vector at the marker (see :mod:`nla_probe.nla.injection`), decodes, and parses each decode
(see :mod:`nla_probe.nla.generation`).  Every vector is validated (shape ``[n, d_model]``, finite,
non-zero norm) before any generation starts; the output has exactly one :class:`Decode` per input
row, in input order.

Hooks may add two things the verbalizer itself applies: ``preflight(hooks, ctx)`` (checks of the
whole hook list, run once before any decode, e.g. a grammar refusing a ban that removes every
token it needs) and ``prefix_text()`` (text appended to the prompt before decoding; the decode's
``raw_text`` starts with it and it is parsed as part of the explanation).

The prompt embeddings are built from the AV's embedding table (:meth:`~nla_probe.nla.checkpoint.AV.prompt_table`):
the loaded model's when there is one, else only the prompt's rows read from the safetensors file, so
the vLLM backend never builds the transformers AV.

Sampled decodes are reproducible for the same ``seed`` and ``batch_size``: batch b is decoded with
the RNG seeded to ``seed + b``; on the vLLM backend request j of batch b is seeded from
``SeedSequence([seed + b, j])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nla_probe.errors import InputError
from nla_probe.nla.backends import make_backend
from nla_probe.nla.generation import Decode, HookContext, Sampling, decodes_to_frame, parse_explanation
from nla_probe.nla.injection import check_vectors, embed_with_injection


def _check_hooks(hooks: Any) -> tuple:
    if hooks is None:
        return ()
    if not isinstance(hooks, (list, tuple)):
        hooks = (hooks,)
    for h in hooks:
        if not (hasattr(h, "hf_logits_processors") and hasattr(h, "to_spec")):
            raise InputError(f"hooks: expected generation hooks (see nla_probe.list_hooks()), found {h!r}")
    return tuple(hooks)


class Verbalizer:
    """Decode explanations from vectors with a loaded AV (:class:`~nla_probe.nla.checkpoint.AV`)."""

    def __init__(self, av: Any, backend: str = "hf", **backend_kwargs: Any):
        self.av = av
        self.backend_name = backend
        self.backend = make_backend(backend, av, **backend_kwargs)

    @property
    def contract(self):
        return self.av.contract

    def prompt_embeds(self, vectors: Any, prefix_ids: Sequence[int] = ()) -> Any:
        """Prompt embeddings ``[n, T, d]`` with each vector injected at the marker; ``prefix_ids``
        (an assistant prefix, already tokenised) are appended after the prompt."""
        import torch

        v = check_vectors(vectors, self.contract.d_model)
        emb, local = self.av.prompt_table(list(self.av.prompt_ids) + list(prefix_ids))
        ids = torch.tensor([local] * v.shape[0], device=emb.device)
        with torch.inference_mode():
            return embed_with_injection(emb, ids, v, self.contract, self.av.embed_scale,
                                        sites=[self.av.site] * v.shape[0])

    def hook_context(self, sampling: Sampling) -> HookContext:
        return HookContext(self.av.tokenizer, tuple(self.av.stop_ids), self.av.logits_width, len(self.av.prompt_ids),
                           sampling)

    def verbalize(self, vectors: Any, *, max_new_tokens: int = 200, do_sample: bool = False,
                  temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, hooks: Sequence = (),
                  batch_size: int = 32, progress: bool = False) -> list[Decode]:
        """One :class:`Decode` per row of ``vectors`` (``[n, d_model]``, raw activations)."""
        sampling = Sampling(max_new_tokens, do_sample, temperature, top_p, seed)
        hooks = _check_hooks(hooks)
        if batch_size < 1:
            raise InputError(f"batch_size: expected >= 1, found {batch_size}")
        v = check_vectors(vectors, self.contract.d_model)
        ctx = self.hook_context(sampling)
        for h in hooks:
            if hasattr(h, "preflight"):
                h.preflight(hooks, ctx)
        prefix = "".join(h.prefix_text() for h in hooks if hasattr(h, "prefix_text"))
        prefix_ids = tuple(self.av.tokenizer.encode(prefix, add_special_tokens=False)) if prefix else ()
        if prefix_ids:
            from dataclasses import replace

            ctx = replace(ctx, prompt_len=ctx.prompt_len + len(prefix_ids))
        specs = tuple(h.to_spec() for h in hooks)
        starts = list(range(0, v.shape[0], batch_size))
        if progress:
            from nla_probe.progress import track

            starts = track(starts, description=f"AV decoding ({self.backend_name})")
        tok = self.av.tokenizer
        out: list[Decode] = []
        for b, s in enumerate(starts):
            chunk = v[s:s + batch_size]
            emb = self.prompt_embeds(chunk, prefix_ids)
            samp = Sampling(max_new_tokens, do_sample, temperature, top_p, seed + (s // batch_size))
            gen = self.backend.generate(emb, samp, hooks, ctx)
            for j, (ids, reason) in enumerate(gen):
                raw = prefix + tok.decode(ids, skip_special_tokens=False)
                expl, status = parse_explanation(raw)
                out.append(Decode(row=s + j, raw_text=raw, explanation=expl, tag_status=status,
                                  token_ids=tuple(ids), n_tokens=len(ids), finish_reason=reason,
                                  hooks=specs, sampling=sampling.to_dict(), backend=self.backend_name,
                                  prefix=prefix))
        return out

    def verbalize_frame(self, vectors: Any, **kwargs: Any) -> Any:
        """:meth:`verbalize` as a polars frame (see :func:`~nla_probe.nla.generation.decodes_to_frame`)."""
        return decodes_to_frame(self.verbalize(vectors, **kwargs))
