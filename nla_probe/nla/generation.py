"""Generation records shared by every AV backend: sampling parameters, hook context, decodes.

Parsing follows the released client: the explanation is the first match of
``<explanation>\\s*(.*?)\\s*</explanation>`` (DOTALL), stripped.  When the tags are missing the raw
text (stripped) is returned as the explanation, as the official examples do, and ``tag_status``
says why: ``"ok"``, ``"no_close"`` (an opening tag but no closing tag) or ``"no_open"`` (no
opening tag).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import regex

from nla_probe.errors import InputError

EXPLANATION_RE = regex.compile(r"<explanation>\s*(.*?)\s*</explanation>", regex.DOTALL)
OPEN_TAG, CLOSE_TAG = "<explanation>", "</explanation>"
TAG_STATUSES = ("ok", "no_close", "no_open")
#: Length-penalty schedules (:class:`nla_probe.hooks.LengthPenalty`), computed by :func:`length_bonus`.
LENGTH_SCHEDULES = ("linear", "constant")
#: ``SamplingParams.extra_args`` key read by the vLLM engine-level length processor.
VLLM_LENGTH_KEY = "nla_probe_length"
#: ``SamplingParams.extra_args`` key read by the vLLM engine-level grammar dead-end guard.
VLLM_GRAMMAR_GUARD_KEY = "nla_probe_grammar_guard"
#: A row whose best logit, after every hook has acted, is at or below this value has no allowed
#: token: a grammar's mask writes −inf, a ban's default bias is −1e9 (``nla_probe.hooks.grammar``).
DEAD_END_LOGIT = -1e8
#: ``Decode.finish_reason`` of a row that reached a grammar dead end.
GRAMMAR_DEAD_END = "grammar_dead_end"
FINISH_REASONS = ("stop", "length", GRAMMAR_DEAD_END)


def parse_explanation(raw: str) -> tuple[str, str]:
    """``(explanation, tag_status)`` of a raw decode (see module doc)."""
    m = EXPLANATION_RE.search(raw)
    if m:
        return m.group(1).strip(), "ok"
    return raw.strip(), ("no_close" if OPEN_TAG in raw else "no_open")


@dataclass(frozen=True)
class Sampling:
    """Decoding parameters.

    Attributes:
        max_new_tokens: hard cap on generated tokens (a decode that hits it has finish_reason 'length').
        do_sample: False = greedy.
        temperature, top_p: used only when sampling.
        seed: seed of the sampling RNG (recorded in every decode).
    """

    max_new_tokens: int = 200
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens: expected an integer >= 1, found {self.max_new_tokens!r}")
        if self.do_sample and not self.temperature > 0:
            raise InputError(f"temperature: expected > 0 when sampling, found {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p: expected in (0, 1], found {self.top_p!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class HookContext:
    """What a generation hook may need to resolve itself for one AV.

    Attributes:
        tokenizer: the AV tokenizer.
        stop_ids: ids that end a decode (never banned).
        vocab_size: number of logits (may exceed len(tokenizer)).
        prompt_len: prompt length in tokens (generation counts from 0 after it).
        sampling: the sampling parameters of the call.
    """

    tokenizer: Any
    stop_ids: tuple[int, ...]
    vocab_size: int
    prompt_len: int
    sampling: Sampling


@runtime_checkable
class GenerationHook(Protocol):
    """A generation-time intervention.  Implementations live in :mod:`nla_probe.hooks`.

    Besides the three members below, a hook may define ``min_new_tokens_floor() -> int`` and
    ``max_new_tokens_cap() -> int | None``; backends read them through :func:`length_limits`.
    """

    name: str

    def to_spec(self) -> dict: ...

    def hf_logits_processors(self, ctx: HookContext) -> list: ...

    def vllm_sampling_kwargs(self, ctx: HookContext) -> dict: ...


@dataclass(frozen=True)
class Decode:
    """One AV decode.

    Attributes:
        row: index of the input vector.
        raw_text: decoded text (special tokens kept, stop token removed), preceded by ``prefix``.
        explanation: parsed explanation (raw text when tags are missing; see ``tag_status``).
        tag_status: 'ok' | 'no_close' | 'no_open'.
        token_ids: generated ids, stop token excluded (the prefix's ids are not included).
        n_tokens: ``len(token_ids)``.
        finish_reason: 'stop' (a stop id was produced), 'length' (hit the length cap: the smaller
            of ``max_new_tokens`` and any hook's cap, see :func:`length_limits`; ``truncated`` says
            the same as a bool) or 'grammar_dead_end' (a grammar hook left no allowed token; the
            decode holds the tokens generated before that step).
        hooks: spec dicts of the hooks that produced it.
        sampling: the sampling parameters (dict).
        backend: 'hf' or 'vllm'.
        prefix: text written after the prompt before decoding (a ``prefix`` hook; '' without one).
            It is part of ``raw_text`` and of the parsed explanation.
    """

    row: int
    raw_text: str
    explanation: str
    tag_status: str
    token_ids: tuple[int, ...]
    n_tokens: int
    finish_reason: str
    hooks: tuple[dict, ...] = ()
    sampling: dict = field(default_factory=dict)
    backend: str = "hf"
    prefix: str = ""

    @property
    def truncated(self) -> bool:
        """True when the decode was cut by the length cap (``finish_reason == 'length'``)."""
        return self.finish_reason == "length"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["token_ids"] = list(self.token_ids)
        d["hooks"] = list(self.hooks)
        return d


def length_limits(sampling: Sampling, hooks: Any = ()) -> tuple[int, int]:
    """``(floor, cap)`` in generated tokens for one call, as every backend applies them.

    ``cap`` is the smallest of ``sampling.max_new_tokens`` and the hooks' ``max_new_tokens_cap()``;
    ``floor`` is the largest of the hooks' ``min_new_tokens_floor()`` (0 without such hooks).  Stop
    ids are forbidden before ``floor`` tokens; a decode that reaches ``cap`` ends with
    ``finish_reason='length'``.

    Raises:
        InputError: ``floor > cap`` (no decode could satisfy both).
    """
    cap, floor = sampling.max_new_tokens, 0
    for h in hooks:
        c = h.max_new_tokens_cap() if hasattr(h, "max_new_tokens_cap") else None
        if c is not None:
            cap = min(cap, int(c))
        if hasattr(h, "min_new_tokens_floor"):
            floor = max(floor, int(h.min_new_tokens_floor()))
    if floor > cap:
        raise InputError(f"min_new_tokens: expected <= the length cap ({cap} tokens: max_new_tokens="
                         f"{sampling.max_new_tokens} and the hooks' caps), found {floor}")
    return floor, cap


def decodes_to_frame(decodes: list[Decode]) -> Any:
    """A polars frame, one row per decode (hooks and sampling as JSON strings)."""
    import json

    import polars as pl

    return pl.DataFrame({
        "row": [d.row for d in decodes],
        "raw_text": [d.raw_text for d in decodes],
        "explanation": [d.explanation for d in decodes],
        "tag_status": [d.tag_status for d in decodes],
        "token_ids": [list(d.token_ids) for d in decodes],
        "n_tokens": [d.n_tokens for d in decodes],
        "finish_reason": [d.finish_reason for d in decodes],
        "truncated": [d.truncated for d in decodes],
        "hooks": [json.dumps(list(d.hooks), sort_keys=True) for d in decodes],
        "sampling": [json.dumps(d.sampling, sort_keys=True) for d in decodes],
        "backend": [d.backend for d in decodes],
        "prefix": [d.prefix for d in decodes],
    }, schema_overrides={"token_ids": pl.List(pl.Int64)})


def length_bonus(t: int, lam: float, start: int, schedule: str) -> float:
    """The logit bonus on the end tokens when ``t`` tokens have been generated (see module doc)."""
    if schedule == "linear":
        return lam * max(0, t - start)
    return lam if t >= start else 0.0


class CloseTagState:
    """Where one decode stands in its closing tag, for the length penalty.

    ``sequences`` are the token sequences of ``</explanation>`` (as it tokenizes alone and after a
    space).  Fed the decode's tokens in order (:meth:`feed`), the state knows whether a closing tag
    has been completed (``closed``) and, while one is half written, which token completes it
    (:meth:`forced`).  A decode that emits the first token of a sequence is taken to have started
    that closing tag.
    """

    def __init__(self, sequences: Iterable[Iterable[int]]):
        self.sequences = tuple(tuple(s) for s in sequences if s)
        self.first_ids = tuple(sorted({s[0] for s in self.sequences}))
        self.closed = False
        self.seen = 0
        self._seq: tuple[int, ...] | None = None
        self._k = 0

    def step(self, token: int) -> None:
        """Advance by one generated token."""
        self.seen += 1
        if self._seq is not None:
            if token == self._seq[self._k]:
                self._k += 1
                if self._k == len(self._seq):
                    self.closed, self._seq = True, None
            else:
                self._seq = None
        elif not self.closed:
            for s in self.sequences:
                if token == s[0]:
                    if len(s) == 1:
                        self.closed = True
                    else:
                        self._seq, self._k = s, 1
                    break

    def feed(self, tokens: list[int]) -> None:
        """Advance over the tokens of ``tokens`` not seen yet (``tokens`` = all generated so far)."""
        for tok in tokens[self.seen:]:
            self.step(tok)

    def forced(self) -> int | None:
        """The next token of a half-written closing tag, or None."""
        return self._seq[self._k] if self._seq is not None else None


#: Bonus (nats) that makes a token all but certain: the next token of a started closing tag, and
#: the stop ids after a closing tag.  Additive, so a hook that forbids a token (−inf) still wins.
FORCE_BONUS = 1e4


def length_step(state: CloseTagState, t: int, lam: float, start: int, schedule: str,
                stop_ids: Iterable[int]) -> tuple[tuple[int, ...], float]:
    """One decode step of the length penalty: ``(ids to boost, bonus in nats)``.

    With closing-tag sequences (``targets="stop_and_close"``): a started ``</explanation>`` is
    completed (its next token gets :data:`FORCE_BONUS`); after a complete closing tag the stop ids
    get :data:`FORCE_BONUS`; before one, the tag's first tokens get :func:`length_bonus`.  So a
    decode under the penalty holds at most one closing tag and ends right after it.  Without
    sequences (``targets="stop"``) the stop ids get :func:`length_bonus` at every step.
    """
    forced = state.forced()
    if forced is not None:
        return (forced,), FORCE_BONUS
    if not state.sequences:
        return tuple(stop_ids), length_bonus(t, lam, start, schedule)
    if state.closed:
        return tuple(stop_ids), FORCE_BONUS
    return state.first_ids, length_bonus(t, lam, start, schedule)


def merge_vllm_kwargs(parts: Iterable[Mapping[str, Any]]) -> dict:
    """Combine the hooks' vLLM kwargs: ``logit_bias`` adds per id, ``min_tokens`` takes the max,
    ``max_tokens`` the min, ``extra_args`` concatenates lists per key; other keys must agree."""
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if k not in out:
                out[k] = {kk: (list(vv) if isinstance(vv, list) else vv) for kk, vv in v.items()} \
                    if isinstance(v, dict) else v
            elif k == "logit_bias":
                for i, b in v.items():
                    out[k][i] = out[k].get(i, 0.0) + b
            elif k == "min_tokens":
                out[k] = max(out[k], v)
            elif k == "max_tokens":
                out[k] = min(out[k], v)
            elif k == "extra_args":
                for kk, vv in v.items():
                    out[k][kk] = out[k].get(kk, []) + list(vv) if isinstance(vv, list) else vv
            elif out[k] != v:
                raise InputError(f"hooks disagree on vLLM sampling parameter {k!r}: {out[k]!r} vs {v!r}")
    return out
