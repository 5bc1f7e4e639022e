"""Generation-time hooks: character bans and length controls, the same on every AV backend.

A hook is a small frozen dataclass with a ``name`` and explicit parameters.  Hooks compose as a
list (``verbalize(..., hooks=[BanChars("quotes"), LengthPenalty(0.05)])``; their effects add up)
and round-trip through the spec format ``{"version": 1, "name": ..., **params}``
(:func:`hooks_to_spec` / :func:`hooks_from_spec`); every :class:`~nla_probe.nla.generation.Decode`
records the specs of the hooks that produced it.  Each hook acts on the logits of **new tokens
only** (never on the prompt); ``t`` below is the number of tokens already generated when the next
one is chosen (0 for the first).  Hooks act on raw logits, before temperature and top-p, on both
backends.

==================  ==========================================================================
hook                effect on the logits at step t
==================  ==========================================================================
``ban_chars``       ``+bias`` (default −1e9) on every token that could write a banned character
                    (resolution rules: :mod:`nla_probe.hooks.token_bans`), at every step.
``length_penalty``  ``+λ·max(0, t − start)`` (``schedule="linear"``) or ``+λ·[t ≥ start]``
                    (``"constant"``) on the end logits: the stop ids and, with
                    ``targets="stop_and_close"``, the first token of ``</explanation>``.
``min_new_tokens``  stop ids set to −inf while ``t < n`` (the closing tag stays allowed).
``max_new_tokens``  no logit change: generation stops after ``n`` tokens (``finish_reason='length'``).
``grammar``         −inf on every token that would take the text out of a regular expression or
                    grammar (:mod:`nla_probe.hooks.grammar`); dead ends end the row.
``prefix``          no logit change: fixed text is written after the prompt before decoding.
==================  ==========================================================================

Backends: ``hf`` uses the hooks' logits processors; ``vllm`` maps bans to ``logit_bias``, the floor
to ``min_tokens``, the cap to ``max_tokens`` and the length penalty to an engine-level logits
processor (:mod:`nla_probe.nla.backends.vllm`).  Definitions and the relation of λ to the RL length
penalty: ``docs/hooks.md``.

Holds the base class and registry (:mod:`~nla_probe.hooks.base`), character bans
(:mod:`~nla_probe.hooks.bans`, resolved to token ids by :mod:`~nla_probe.hooks.token_bans`),
length controls (:mod:`~nla_probe.hooks.length`) and the leak audit of banned decodes
(:mod:`~nla_probe.hooks.leak_audit`).

May import: :mod:`nla_probe.nla`, :mod:`nla_probe.text`, :mod:`nla_probe.analysis` and the core
modules.  Never imports surgery, copying, ablate, experiments, bench or cli.
"""

from nla_probe.hooks.bans import BanChars
from nla_probe.hooks.base import (
                                  HOOKS,
                                  SPEC_VERSION,
                                  Hook,
                                  get_hook,
                                  hook_from_spec,
                                  hooks_from_spec,
                                  hooks_to_spec,
                                  list_hooks,
                                  register_hook,
)
from nla_probe.hooks.grammar import GRAMMAR_FORMATS, GRAMMAR_SCOPES, Grammar, Prefix
from nla_probe.hooks.length import LENGTH_TARGETS, LengthPenalty, MaxNewTokens, MinNewTokens, end_token_ids
from nla_probe.nla.generation import LENGTH_SCHEDULES, VLLM_LENGTH_KEY, length_bonus, merge_vllm_kwargs

__all__ = ["GRAMMAR_FORMATS", "GRAMMAR_SCOPES", "Grammar", "Prefix", "HOOKS", "LENGTH_SCHEDULES", "LENGTH_TARGETS", "SPEC_VERSION", "VLLM_LENGTH_KEY", "BanChars", "Hook",
           "LengthPenalty", "MaxNewTokens", "MinNewTokens", "end_token_ids", "get_hook", "hook_from_spec",
           "hooks_from_spec", "hooks_to_spec", "length_bonus", "list_hooks", "merge_vllm_kwargs", "register_hook"]
