"""Length controls at decode time: :class:`LengthPenalty`, :class:`MinNewTokens`, :class:`MaxNewTokens`.

``t`` is the number of tokens already generated when the next one is chosen (0 for the first).
The penalty adds :func:`nla_probe.nla.generation.length_bonus` (nats, i.e. logit units) to the end
logits — before a closing tag to the first token of ``</explanation>``, after it to the stop ids —
and completes a closing tag once it is started (:func:`nla_probe.nla.generation.length_step`); its
relation to the RL length penalty and its measured effect on the toy are in ``docs/hooks.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from nla_probe.errors import InputError
from nla_probe.hooks.base import (
    Hook,
    _check_choice,
    _check_int,
    _StepBonus,
    register_hook,
)
from nla_probe.nla.generation import (
    CLOSE_TAG,
    LENGTH_SCHEDULES,
    VLLM_LENGTH_KEY,
    CloseTagState,
    HookContext,
    length_bonus,
    length_step,
)

LENGTH_TARGETS = ("stop_and_close", "stop")


def end_token_ids(ctx: HookContext, targets: str = "stop_and_close") -> tuple[int, ...]:
    """The ids a length penalty boosts: the stop ids, plus (``"stop_and_close"``) the first token of
    ``</explanation>`` as it tokenizes alone and after a space."""
    ids = set(ctx.stop_ids)
    if targets == "stop_and_close":
        for text in (CLOSE_TAG, " " + CLOSE_TAG):
            enc = ctx.tokenizer.encode(text, add_special_tokens=False)
            first = ctx.tokenizer.decode(enc[:1]).strip() if enc else ""
            if first and CLOSE_TAG.startswith(first):
                ids.add(enc[0])
    return tuple(sorted(ids))


def close_tag_sequences(ctx: HookContext) -> tuple[tuple[int, ...], ...]:
    """Token sequences of ``</explanation>`` alone and after a space (those whose first token is a
    prefix of the tag), deduplicated."""
    out: list[tuple[int, ...]] = []
    for text in (CLOSE_TAG, " " + CLOSE_TAG):
        enc = tuple(ctx.tokenizer.encode(text, add_special_tokens=False))
        first = ctx.tokenizer.decode(enc[:1]).strip() if enc else ""
        if first and CLOSE_TAG.startswith(first) and enc not in out:
            out.append(enc)
    return tuple(out)


class _LengthProcessor:
    """transformers logits processor of :class:`LengthPenalty`: one :class:`CloseTagState` per row
    and :func:`length_step` per step.  Edits ``scores`` in place (only the boosted columns)."""

    def __init__(self, hook: LengthPenalty, stop_ids: tuple[int, ...], sequences: tuple[tuple[int, ...], ...]):
        self.hook, self.stop_ids, self.sequences = hook, stop_ids, sequences
        self._offset: int | None = None
        self._states: list[CloseTagState] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._offset is None:
            self._offset = input_ids.shape[1]
            self._states = [CloseTagState(self.sequences) for _ in range(input_ids.shape[0])]
        t = input_ids.shape[1] - self._offset
        last = input_ids[:, -1].tolist() if t > 0 else None
        groups: dict[tuple[tuple[int, ...], float], list[int]] = {}
        h = self.hook
        for r, state in enumerate(self._states):
            if last is not None:
                state.step(last[r])
            ids, b = length_step(state, t, h.lam, h.start, h.schedule, self.stop_ids)
            if b and ids:
                groups.setdefault((ids, b), []).append(r)
        dev = scores.device
        for (ids, b), rows in groups.items():
            scores[torch.tensor(rows, device=dev)[:, None], torch.tensor(ids, device=dev)[None, :]] += b
        return scores


@dataclass(frozen=True)
class LengthPenalty(Hook):
    """A per-token length penalty at decode time: a growing bonus on the end logits.

    Args:
        lam: λ >= 0, in nats (logit units) per generated token.
        start: tokens generated before the bonus starts growing.
        schedule: ``"linear"`` (``λ·max(0, t − start)``) or ``"constant"`` (``λ`` from ``t = start``).
        targets: ``"stop_and_close"`` (the default): before a closing tag the bonus goes to the first
            token of ``</explanation>``, after it to the stop ids, and a started closing tag is
            completed, so every decode ends with exactly one well-formed closing tag unless it hits
            the length cap; ``"stop"``: the bonus goes to the stop ids at every step (a decode may
            end before its closing tag; ``tag_status`` says so).

    With λ = 0 the hook changes nothing.  Relation to the RL length penalty (reward −λ_RL per
    token): ``docs/hooks.md``.
    """

    name: ClassVar[str] = "length_penalty"
    lam: float = 0.0
    start: int = 0
    schedule: str = "linear"
    targets: str = "stop_and_close"

    def __post_init__(self) -> None:
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not math.isfinite(self.lam):
            raise InputError(f"length_penalty.lam: expected a finite number >= 0, found {self.lam!r}")
        if self.lam < 0:
            raise InputError(f"length_penalty.lam: expected >= 0 (a penalty shortens decodes; λ < 0 would reward "
                             f"length), found {self.lam!r}")
        object.__setattr__(self, "lam", float(self.lam))
        _check_int(self.start, "length_penalty.start", 0)
        _check_choice(self.schedule, "length_penalty.schedule", LENGTH_SCHEDULES)
        _check_choice(self.targets, "length_penalty.targets", LENGTH_TARGETS)

    def bonus(self, t: int) -> float:
        return length_bonus(t, self.lam, self.start, self.schedule)

    def hf_logits_processors(self, ctx: HookContext) -> list:
        if not self.lam:
            return []
        seqs = close_tag_sequences(ctx) if self.targets == "stop_and_close" else ()
        return [_LengthProcessor(self, tuple(ctx.stop_ids), seqs)]

    def vllm_sampling_kwargs(self, ctx: HookContext) -> dict:
        if not self.lam:
            return {}
        seqs = close_tag_sequences(ctx) if self.targets == "stop_and_close" else ()
        entry = {"lam": self.lam, "start": self.start, "schedule": self.schedule,
                 "stop": list(ctx.stop_ids), "close": [list(s) for s in seqs]}
        return {"extra_args": {VLLM_LENGTH_KEY: [entry]}}


@dataclass(frozen=True)
class MinNewTokens(Hook):
    """A floor: the stop ids are forbidden (−inf) until ``n`` tokens have been generated.

    Counts every generated token (opening tag included).  The closing tag is not blocked, so an AV
    that closes early writes past ``</explanation>``, which parsing drops.
    """

    name: ClassVar[str] = "min_new_tokens"
    n: int = 0

    def __post_init__(self) -> None:
        _check_int(self.n, "min_new_tokens.n", 0)

    def min_new_tokens_floor(self) -> int:
        return self.n

    def hf_logits_processors(self, ctx: HookContext) -> list:
        if not self.n:
            return []
        floor = self.n
        return [_StepBonus(ctx.stop_ids, lambda t: -math.inf if t < floor else 0.0)]

    def vllm_sampling_kwargs(self, ctx: HookContext) -> dict:
        return {"min_tokens": self.n} if self.n else {}


@dataclass(frozen=True)
class MaxNewTokens(Hook):
    """A hard cap of ``n`` generated tokens; cut decodes have ``finish_reason='length'``
    (``Decode.truncated``).  The effective cap is the smaller of this and ``max_new_tokens``."""

    name: ClassVar[str] = "max_new_tokens"
    n: int = 200

    def __post_init__(self) -> None:
        _check_int(self.n, "max_new_tokens.n", 1)

    def max_new_tokens_cap(self) -> int:
        return self.n


for _cls in (LengthPenalty, MinNewTokens, MaxNewTokens):
    register_hook(_cls)
del _cls
