"""Character bans: :class:`BanChars` forbids every token that could write a banned character.

Token resolution rules (byte-level tokens, partial UTF-8 pieces): :mod:`nla_probe.hooks.token_bans`;
delimiter families: :mod:`nla_probe.text.delimiters`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from nla_probe.errors import InputError
from nla_probe.hooks.base import Hook, _AddBias, _check_choice, register_hook
from nla_probe.hooks.token_bans import PARTIAL_POLICIES, BanSet, resolve_ban
from nla_probe.nla.generation import CLOSE_TAG, OPEN_TAG, HookContext
from nla_probe.text.delimiters import expand_family_names, resolve_chars


@dataclass(frozen=True)
class BanChars(Hook):
    """Forbid every token that could write one of the banned characters.

    Args:
        families: delimiter family names or unions (``"quotes"``, ``"all"``), see
            :mod:`nla_probe.text.delimiters`.
        chars: extra characters to ban (a string).
        bias: logit bias of banned tokens (< 0; ``-inf`` allowed).  vLLM's ``SamplingParams``
            built through ``from_optional`` (the HTTP server) clamps it to −100 (``docs/hooks.md``).
        partial_bytes: ``"ban"`` (exact ban, default) or ``"allow"`` — how byte pieces of
            multi-byte characters are treated (:mod:`nla_probe.hooks.token_bans`).

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


register_hook(BanChars)
