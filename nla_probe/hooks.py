"""Generation-time hooks: character bans and length controls, the same on every AV backend.

A hook is a small frozen dataclass with a ``name`` and explicit parameters.  Hooks compose as a
list (``verbalize(..., hooks=[BanChars("quotes"), LengthPenalty(0.05)])``; their effects add up)
and round-trip through the spec format ``{"version": 1, "name": ..., **params}``
(:func:`hooks_to_spec` / :func:`hooks_from_spec`); every :class:`~nla_probe.generation.Decode`
records the specs of the hooks that produced it.  Each hook acts on the logits of **new tokens
only** (never on the prompt); ``t`` below is the number of tokens already generated when the next
one is chosen (0 for the first).  Hooks act on raw logits, before temperature and top-p, on both
backends.

==================  ==========================================================================
hook                effect on the logits at step t
==================  ==========================================================================
``ban_chars``       ``+bias`` (default −1e9) on every token that could write a banned character
                    (resolution rules: :mod:`nla_probe.token_bans`), at every step.
``length_penalty``  ``+λ·max(0, t − start)`` (``schedule="linear"``) or ``+λ·[t ≥ start]``
                    (``"constant"``) on the end logits: the stop ids and, with
                    ``targets="stop_and_close"``, the first token of ``</explanation>``.
``min_new_tokens``  stop ids set to −inf while ``t < n`` (the closing tag stays allowed).
``max_new_tokens``  no logit change: generation stops after ``n`` tokens (``finish_reason='length'``).
==================  ==========================================================================

Backends: ``hf`` uses the hooks' logits processors; ``vllm`` maps bans to ``logit_bias``, the floor
to ``min_tokens``, the cap to ``max_tokens`` and the length penalty to an engine-level logits
processor (:mod:`nla_probe.backends.vllm`).  Definitions and the relation of λ to the RL length
penalty: ``docs/hooks.md``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .delimiters import expand_family_names, resolve_chars
from .errors import InputError, SpecError
from .generation import CLOSE_TAG, OPEN_TAG, HookContext
from .registry import SpecRegistry
from .token_bans import PARTIAL_POLICIES, BanSet, resolve_ban

#: Current version of the hook spec format.
SPEC_VERSION = 1
LENGTH_SCHEDULES = ("linear", "constant")
LENGTH_TARGETS = ("stop_and_close", "stop")
#: ``SamplingParams.extra_args`` key read by the vLLM engine-level length processor.
VLLM_LENGTH_KEY = "nla_probe_length"


def _check_int(value: Any, fname: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{fname}: expected an int >= {minimum}, found {value!r}")
    return value


def _check_choice(value: Any, fname: str, choices: Iterable[str]) -> None:
    if value not in tuple(choices):
        raise InputError(f"{fname}: expected one of {list(choices)}, found {value!r}")


class Hook:
    """Base class of generation hooks (frozen dataclasses with a class-level ``name``)."""

    name: ClassVar[str] = ""

    def params(self) -> dict[str, Any]:
        """Parameters as JSON-safe values."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def to_spec(self) -> dict[str, Any]:
        """``{"version": SPEC_VERSION, "name": ..., **params}``; :func:`hook_from_spec` inverts it."""
        return {"version": SPEC_VERSION, "name": self.name, **self.params()}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Hook:
        """Build from spec params; unknown keys raise :class:`SpecError` listing the valid ones."""
        valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise SpecError(f"hook {cls.name!r}: unknown key(s) {unknown}; valid keys: {valid}")
        try:
            return cls(**params)
        except InputError as e:
            raise SpecError(f"hook {cls.name!r}: {e}") from e
        except TypeError as e:
            raise SpecError(f"hook {cls.name!r}: {e}; valid keys: {valid}") from e

    def describe(self) -> str:
        """``name(key=value, ...)`` for the parameters that differ from their defaults."""
        parts = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)  # type: ignore[arg-type]
                 if f.default is dataclasses.MISSING or getattr(self, f.name) != f.default]
        return f"{self.name}({', '.join(parts)})"

    def hf_logits_processors(self, ctx: HookContext) -> list:
        """Logits processors for transformers ``generate`` (fresh objects per call)."""
        return []

    def vllm_sampling_kwargs(self, ctx: HookContext) -> dict:
        """Keyword arguments merged into vLLM ``SamplingParams`` (see :func:`merge_vllm_kwargs`)."""
        return {}


# ---------------------------------------------------------------- transformers logits processors
class _AddBias:
    """Add ``bias`` to fixed token ids at every step (``-inf`` sets them to ``-inf``).

    Edits ``scores`` in place (only the listed columns): ``generate`` hands every step a fresh
    float32 copy of the logits, and copying a ``[B, vocab]`` tensor per step would cost more than
    the ban itself on large vocabularies.
    """

    def __init__(self, ids: Iterable[int], bias: float):
        self.ids, self.bias, self._index, self._src = list(ids), float(bias), None, None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if not self.ids:
            return scores
        if self._index is None or self._index.device != scores.device:
            self._index = torch.tensor(self.ids, dtype=torch.long, device=scores.device)
        if self.bias == -math.inf:
            return scores.index_fill_(1, self._index, -math.inf)
        shape = (scores.shape[0], len(self.ids))
        if self._src is None or self._src.shape != shape or self._src.dtype != scores.dtype \
                or self._src.device != scores.device:
            self._src = torch.full(shape, self.bias, dtype=scores.dtype, device=scores.device)
        return scores.index_add_(1, self._index, self._src)


class _StepBonus:
    """Add ``bonus(t)`` to fixed ids, ``t`` = tokens generated so far (counted from the first call).

    Edits ``scores`` in place, like :class:`_AddBias`.
    """

    def __init__(self, ids: Iterable[int], bonus: Callable[[int], float]):
        self.ids, self.bonus, self._offset, self._index = list(ids), bonus, None, None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._offset is None:
            self._offset = input_ids.shape[1]
        b = self.bonus(input_ids.shape[1] - self._offset)
        if b == 0 or not self.ids:
            return scores
        if self._index is None or self._index.device != scores.device:
            self._index = torch.tensor(self.ids, dtype=torch.long, device=scores.device)
        scores[:, self._index] += b
        return scores


# ---------------------------------------------------------------- hooks
@dataclass(frozen=True)
class BanChars(Hook):
    """Forbid every token that could write one of the banned characters.

    Args:
        families: delimiter family names or unions (``"quotes"``, ``"all"``), see
            :mod:`nla_probe.delimiters`.
        chars: extra characters to ban (a string).
        bias: logit bias of banned tokens (< 0; ``-inf`` allowed).  vLLM's ``SamplingParams``
            built through ``from_optional`` (the HTTP server) clamps it to −100 (``docs/hooks.md``).
        partial_bytes: ``"ban"`` (exact ban, default) or ``"allow"`` — how byte pieces of
            multi-byte characters are treated (:mod:`nla_probe.token_bans`).

    The resolved set (:meth:`resolve`) never contains special tokens or stop ids; a ban touching a
    character of ``<explanation>`` / ``</explanation>`` is refused, as is one that leaves no token.
    """

    name: ClassVar[str] = "ban_chars"
    families: tuple[str, ...] = ()
    chars: str = ""
    bias: float = -1e9
    partial_bytes: str = "ban"

    def __post_init__(self) -> None:
        fams = (self.families,) if isinstance(self.families, str) else self.families
        if not isinstance(fams, Iterable) or not all(isinstance(f, str) for f in fams):
            raise InputError(f"ban_chars.families: expected family names (str or list of str), found {self.families!r}")
        object.__setattr__(self, "families", tuple(fams))
        expand_family_names(self.families)  # UnknownNameError lists the valid names
        if not isinstance(self.chars, str):
            raise InputError(f"ban_chars.chars: expected a string of characters, found {self.chars!r}")
        if not self.families and not self.chars:
            raise InputError("ban_chars: expected at least one family or character to ban, found none")
        if isinstance(self.bias, bool) or not isinstance(self.bias, (int, float)) or math.isnan(self.bias) \
                or not self.bias < 0:
            raise InputError(f"ban_chars.bias: expected a negative number (or -inf), found {self.bias!r}")
        object.__setattr__(self, "bias", float(self.bias))
        _check_choice(self.partial_bytes, "ban_chars.partial_bytes", PARTIAL_POLICIES)
        bad = sorted(set(OPEN_TAG + CLOSE_TAG) & self.banned_chars)
        if bad:
            raise InputError(f"ban_chars: expected no character of {OPEN_TAG!r} / {CLOSE_TAG!r} to be banned (the "
                             f"explanation could never be closed), found {bad}")

    @property
    def banned_chars(self) -> frozenset[str]:
        """Every banned character (the families' characters plus ``chars``)."""
        return resolve_chars(self.families, self.chars)

    def resolve(self, tokenizer: Any, *, vocab_size: int | None = None, stop_ids: Iterable[int] = ()) -> BanSet:
        """The banned token ids for ``tokenizer`` (cached; ``.count``, ``.examples()``, ``.summary()``).

        Warns when a character given in ``chars`` occurs in no token; raises :class:`InputError`
        when the canonical ``</explanation>`` tokens would be banned or no token is left.
        """
        ban = resolve_ban(tokenizer, self.banned_chars, vocab_size=vocab_size, protected=stop_ids,
                          partial_bytes=self.partial_bytes)
        absent = [c for c in ban.absent_chars if c in self.chars]
        if absent:
            shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in absent)
            warnings.warn(f"ban_chars: no token of this tokenizer contains {shown}; the ban covers them only through "
                          f"partial byte pieces (partial_bytes={self.partial_bytes!r})", UserWarning, stacklevel=2)
        ids = tokenizer.encode(CLOSE_TAG, add_special_tokens=False)
        hit = sorted(set(ids) & set(ban.ids))
        if hit:
            raise InputError(f"ban_chars: expected the tokens of {CLOSE_TAG!r} ({ids}) to stay allowed, found banned "
                             f"{hit}; the explanation could never be closed")
        return ban

    def ban_set(self, ctx: HookContext) -> BanSet:
        return self.resolve(ctx.tokenizer, vocab_size=ctx.vocab_size, stop_ids=ctx.stop_ids)

    def hf_logits_processors(self, ctx: HookContext) -> list:
        return [_AddBias(self.ban_set(ctx).ids, self.bias)]

    def vllm_sampling_kwargs(self, ctx: HookContext) -> dict:
        return {"logit_bias": dict.fromkeys(self.ban_set(ctx).ids, self.bias)}


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


def length_bonus(t: int, lam: float, start: int, schedule: str) -> float:
    """The logit bonus on the end tokens when ``t`` tokens have been generated (see module doc)."""
    if schedule == "linear":
        return lam * max(0, t - start)
    return lam if t >= start else 0.0


@dataclass(frozen=True)
class LengthPenalty(Hook):
    """A per-token length penalty at decode time: a growing bonus on the end logits.

    Args:
        lam: λ >= 0, in nats (logit units) per generated token.
        start: tokens generated before the bonus starts growing.
        schedule: ``"linear"`` (``λ·max(0, t − start)``) or ``"constant"`` (``λ`` from ``t = start``).
        targets: ``"stop_and_close"`` (stop ids and the first ``</explanation>`` token) or ``"stop"``.

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
        return [_StepBonus(end_token_ids(ctx, self.targets), self.bonus)] if self.lam else []

    def vllm_sampling_kwargs(self, ctx: HookContext) -> dict:
        if not self.lam:
            return {}
        entry = {"lam": self.lam, "start": self.start, "schedule": self.schedule,
                 "ids": list(end_token_ids(ctx, self.targets))}
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


# ---------------------------------------------------------------- composition for vLLM
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


# ---------------------------------------------------------------- registry and specs
_HOOKS = SpecRegistry("hook", lambda: Hook, version=SPEC_VERSION)
for _cls in (BanChars, LengthPenalty, MinNewTokens, MaxNewTokens):
    _HOOKS.register(_cls)
#: Hook classes by name (the registry's dict).
HOOKS: dict[str, type[Hook]] = _HOOKS.classes


def list_hooks() -> list[str]:
    """Names of the registered hooks."""
    return _HOOKS.names()


def get_hook(name: str) -> type[Hook]:
    """The hook class registered under ``name``; raises :class:`UnknownNameError`."""
    return _HOOKS.get(name)


def register_hook(cls: type[Hook], overwrite: bool = False) -> type[Hook]:
    """Add a hook class (a frozen dataclass subclassing :class:`Hook` with a ``name``)."""
    return _HOOKS.register(cls, overwrite)


def hook_from_spec(spec: Mapping[str, Any] | Hook) -> Hook:
    """Build a hook from ``{"name": ..., **params}`` (optionally with ``"version"``).

    A spec without ``version`` is read as the current version; older versions are migrated; a
    newer version, an unknown name or an unknown key raises (:class:`SpecError` /
    :class:`UnknownNameError`, listing what is valid).
    """
    return _HOOKS.from_spec(spec, "hook spec")


def hooks_from_spec(specs: Iterable[Mapping[str, Any] | Hook] | None) -> tuple[Hook, ...]:
    """A list of hook specs (or hooks) as hooks, in order."""
    if specs is None:
        return ()
    if isinstance(specs, (Mapping, str, Hook)):
        raise SpecError(f"hook specs: expected a list of specs, found {type(specs).__name__}")
    return tuple(hook_from_spec(s) for s in specs)


def hooks_to_spec(hooks: Iterable[Hook]) -> list[dict[str, Any]]:
    """The spec of each hook, in order (what :class:`~nla_probe.generation.Decode` records)."""
    out = []
    for h in hooks:
        if not hasattr(h, "to_spec"):
            raise InputError(f"hooks_to_spec: expected hooks, found {type(h).__name__}")
        out.append(h.to_spec())
    return out
