"""Constrained decoding: :class:`Grammar` restricts the AV's output to a regular expression or a
context-free grammar; :class:`Prefix` writes fixed text after the prompt before decoding.

**Grammar.** The AV's generated text — ``</explanation>`` and the stop token included — must be a
text the grammar accepts: at every step a token is allowed only when the text so far, extended by
it, is still a prefix of an accepted text, and the stop token only when the text is complete.
One library, xgrammar, builds the token masks on both backends (``docs/hooks.md`` says why):

* every grammar, whatever its source format (built-in, regex, EBNF, Lark, JSON schema), is turned
  into one normalised EBNF text (:meth:`Grammar.ebnf`), and that text is what both backends compile;
* ``hf``: a logits processor per ``generate`` call holding one matcher per row (fresh state for
  every row and every chunk), that sets the logits of disallowed tokens to −inf;
* ``vllm``: ``SamplingParams(structured_outputs=StructuredOutputsParams(grammar=<EBNF>))`` with the
  engine's structured-output backend set to xgrammar (:mod:`nla_probe.nla.backends.vllm`).

``scope="body"`` (default) reads the grammar as the explanation body and wraps it as
``<explanation>\\n?BODY\\n?</explanation>``; ``scope="output"`` reads it as the whole generated text.
Built-in grammars and the scaffold language: :mod:`nla_probe.hooks.grammar_text`.

**Checks before any decode** (:meth:`Grammar.preflight`, run by the verbalizer with every hook of
the call): the text parses (errors carry the library's position); some text matches it (else
there is no way to end); some text matches it without a character a ban forbids (else the
grammar and the ban are refused together, both named); the shortest such text fits the length cap
in tokens.  **Dead ends at decode time**: when, after every hook has acted, no token has a logit
above ``DEAD_END_LOGIT`` (−1e8: the grammar's −inf and a ban's default −1e9 are both below it),
the row ends there with ``finish_reason="grammar_dead_end"`` and the tokens generated before that
step — identically on both backends.  A row that reaches the length cap first ends with
``"length"`` as usual.

**Prefix.** ``Prefix(text=...)`` (or ``Prefix(scaffold=...)``: a scaffold's fixed opening) is
tokenised and appended to the prompt; decoding continues after it.  The decode's ``raw_text``
starts with the prefix, so it counts as part of the explanation when parsing; ``token_ids`` and
``n_tokens`` count generated tokens only.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from nla_probe.errors import InputError
from nla_probe.hooks.base import Hook, _check_choice, register_hook
from nla_probe.hooks.grammar_check import GrammarParseError, shortest_text
from nla_probe.hooks.grammar_text import (
    BUILTINS,
    CLOSE_BODY,
    OPEN_BODY,
    builtin_body,
    resolve_scaffold,
    scaffold_opening,
    wrap_body,
)
from nla_probe.nla.generation import (
    CLOSE_TAG,
    DEAD_END_LOGIT,
    GRAMMAR_DEAD_END,
    OPEN_TAG,
    VLLM_GRAMMAR_GUARD_KEY,
    HookContext,
    length_limits,
)

#: Source formats of a grammar (exactly one is given).
GRAMMAR_FORMATS = ("builtin", "regex", "ebnf", "lark", "json_schema")
GRAMMAR_SCOPES = ("body", "output")
_LOG_PREFIX = re.compile(r"^\s*\[[^\]]*\]\s*\S+:\d+:\s*")


def _library_message(e: Exception) -> str:
    """The first meaningful line of an xgrammar error, without its log prefix."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return _LOG_PREFIX.sub("", lines[0]) if lines else type(e).__name__


def _xgrammar() -> Any:
    try:
        import xgrammar
    except ImportError as e:
        raise InputError(f"grammar hooks need xgrammar (pip install 'nla-probe[grammar]'; vLLM installs it); "
                         f"import failed: {e}") from None
    return xgrammar


@functools.lru_cache(maxsize=128)
def compile_ebnf(fmt: str, text: str, scope: str, scaffold: str) -> str:
    """The normalised EBNF of a grammar spec (see module doc); raises :class:`InputError`."""
    xgr = _xgrammar()

    if fmt == "builtin":
        body = builtin_body(text, scaffold)
        return str(xgr.Grammar.from_regex(wrap_body(body)))
    def compact_json(schema: str) -> Any:
        return xgr.Grammar.from_json_schema(schema, any_whitespace=False, separators=(",", ":"))

    build = {"regex": xgr.Grammar.from_regex, "ebnf": xgr.Grammar.from_ebnf, "lark": xgr.Grammar.from_lark,
             "json_schema": compact_json}[fmt]
    what = {"regex": "regular expression", "ebnf": "EBNF grammar", "lark": "Lark grammar",
            "json_schema": "JSON schema"}[fmt]
    try:
        g = build(text)  # alone first: error positions count in the user's text
        if scope == "body":
            g = xgr.Grammar.from_regex(wrap_body(text)) if fmt == "regex" else \
                xgr.Grammar.concat(xgr.Grammar.from_regex(OPEN_BODY), g, xgr.Grammar.from_regex(CLOSE_BODY))
    except (RuntimeError, ValueError, TypeError) as e:  # xgrammar's errors carry the position
        shown = text if len(text) <= 200 else text[:200] + "…"
        raise InputError(f"grammar.{fmt}: invalid {what}: {_library_message(e)}; found {shown!r}") from None
    return str(g)


@functools.lru_cache(maxsize=16)
def _compiler(tokenizer: Any, vocab_size: int) -> Any:
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
    return xgr.GrammarCompiler(info, cache_enabled=True)


@functools.lru_cache(maxsize=256)
def _shortest(ebnf: str, forbidden: frozenset[str]) -> str | None:
    return shortest_text(ebnf, forbidden)  # checked once per grammar and ban set, not once per chunk


def compiled_grammar(ebnf: str, ctx: HookContext) -> Any:
    """The xgrammar ``CompiledGrammar`` of ``ebnf`` for the AV tokenizer (cached per tokenizer)."""
    return _compiler(ctx.tokenizer, ctx.vocab_size).compile_grammar(ebnf)


class _GrammarMask:
    """transformers logits processor: one xgrammar matcher per row, created at the first call.

    At each call it feeds every live row's last token to its matcher, sets the logits of the
    tokens the matcher disallows to −inf and ends rows at a dead end (module doc) by allowing only
    the first stop id.  When every logit is −inf although the grammar allows a stop id (a
    ``min_new_tokens`` floor blocked it after the grammar completed), that stop id is allowed and
    the row ends normally — the rule vLLM applies to ``min_tokens`` under structured outputs.  Rows
    that accepted a stop token or ended at a dead end are left alone.  :meth:`finish_overrides`
    reports ``{row: (tokens before the dead end, "grammar_dead_end")}``.
    """

    runs_last: ClassVar[bool] = True

    def __init__(self, compiled: Any, stop_ids: tuple[int, ...], vocab_size: int):
        self.compiled, self.stop_ids, self.vocab_size = compiled, list(stop_ids), vocab_size
        self.stop_set = frozenset(self.stop_ids)
        self.matchers: list | None = None
        self.dead: dict[int, int] = {}
        self.t = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch
        import xgrammar as xgr

        n = scores.shape[0]
        if self.matchers is None:
            self.matchers = [xgr.GrammarMatcher(self.compiled, override_stop_tokens=self.stop_ids)
                             for _ in range(n)]
            self.done = [False] * n
            self.bitmask = xgr.allocate_token_bitmask(n, self.vocab_size)
            self.batch = xgr.BatchGrammarMatcher(max_threads=1)
        else:
            live = [i for i in range(n) if not self.done[i]]
            last = input_ids[:, -1].tolist()
            ok = xgr.BatchGrammarMatcher.batch_accept_token([self.matchers[i] for i in live], [last[i] for i in live])
            for i, accepted in zip(live, ok):
                if not accepted:
                    raise RuntimeError(f"grammar: row {i} produced token {last[i]}, which its mask disallowed")
                self.done[i] = last[i] in self.stop_set and self.matchers[i].is_terminated()  # ends only on a stop
        live = [i for i in range(n) if not self.done[i]]
        if len(live) < n:
            self.bitmask.fill_(-1)  # finished rows: leave their (padding) logits alone
        self.batch.batch_fill_next_token_bitmask([self.matchers[i] for i in live], self.bitmask, live)
        xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device), vocab_size=self.vocab_size)
        # numpy's single-threaded max on CPU: torch's threaded reduction stalls on a busy machine
        best = (scores.detach().numpy().max(axis=1) if scores.device.type == "cpu"
                else scores.amax(dim=1)).tolist()
        for i in range(n):
            if self.done[i] or best[i] > DEAD_END_LOGIT:
                continue
            stop = self._allowed_stop(i) if best[i] == -math.inf else None
            scores[i].fill_(-torch.inf)
            if stop is not None:  # a floor blocked the only token the grammar allows: the grammar wins
                scores[i, stop] = 0.0
            else:
                self.dead[i], self.done[i] = self.t, True
                scores[i, self.stop_ids[0]] = 0.0
        self.t += 1
        return scores

    def _allowed_stop(self, i: int) -> int | None:
        """The first stop id the row's grammar allows now, if any."""
        row = self.bitmask[i]
        for sid in self.stop_ids:
            if sid < self.vocab_size and (int(row[sid // 32]) >> (sid % 32)) & 1:
                return sid
        return None

    def finish_overrides(self) -> dict[int, tuple[int, str]]:
        return {i: (t, GRAMMAR_DEAD_END) for i, t in self.dead.items()}


def _forbidden_chars(hooks: Any) -> tuple[frozenset[str], list[Any]]:
    """Characters that hard bans (bias <= DEAD_END_LOGIT) forbid, and the hooks that ban them."""
    chars: set[str] = set()
    bans = []
    for h in hooks:
        banned = getattr(h, "banned_chars", None)
        if banned and getattr(h, "bias", -float("inf")) <= DEAD_END_LOGIT:
            chars |= set(banned)
            bans.append(h)
    return frozenset(chars), bans


@dataclass(frozen=True)
class Grammar(Hook):
    """Constrain the AV's output to a grammar (module doc).

    Args (exactly one of the first five):
        builtin: ``"spans_only"``, ``"scaffold_spans"`` or ``"no_delimiters"``
            (:mod:`nla_probe.hooks.grammar_text`).
        regex: a regular expression (xgrammar's syntax: Python ``re`` without lookaround or
            backreferences).
        ebnf: an EBNF grammar (GBNF: ``root ::= ...``).
        lark: a Lark grammar (``start: ...``).
        json_schema: a JSON schema (as a string); the JSON is compact (no whitespace between its
            tokens; strings may hold any).
        scope: ``"body"`` (the grammar describes the text between the tags) or ``"output"`` (the
            whole generated text); built-ins are bodies.
        scaffold: ``scaffold_spans`` only — a registered scaffold name (``released``, ``toy``) or a
            scaffold text (``grammar_text`` module doc).
    """

    name: ClassVar[str] = "grammar"
    builtin: str = ""
    regex: str = ""
    ebnf: str = ""
    lark: str = ""
    json_schema: str = ""
    scope: str = "body"
    scaffold: str = ""

    def __post_init__(self) -> None:
        given = [f for f in GRAMMAR_FORMATS if getattr(self, f) != ""]
        for f in GRAMMAR_FORMATS + ("scaffold",):
            if not isinstance(getattr(self, f), str):
                raise InputError(f"grammar.{f}: expected a string, found {getattr(self, f)!r}")
        if len(given) != 1:
            raise InputError(f"grammar: expected exactly one of {list(GRAMMAR_FORMATS)}, found "
                             f"{given or 'none'}")
        _check_choice(self.scope, "grammar.scope", GRAMMAR_SCOPES)
        if self.builtin:
            if self.builtin not in BUILTINS:
                from nla_probe.errors import UnknownNameError

                raise UnknownNameError("built-in grammar", self.builtin, BUILTINS)
            if self.scope != "body":
                raise InputError(f"grammar.scope: built-in grammars describe the body; expected 'body', found "
                                 f"{self.scope!r}")
        if self.scaffold and self.builtin != "scaffold_spans":
            raise InputError(f"grammar.scaffold: only used with builtin='scaffold_spans', found it with "
                             f"{given[0]}")
        if self.builtin == "scaffold_spans":
            resolve_scaffold(self.scaffold or "released")
        self.ebnf_text()  # parse now: a bad grammar fails when the hook is built, before any decode

    @property
    def format(self) -> str:
        return next(f for f in GRAMMAR_FORMATS if getattr(self, f) != "")

    def ebnf_text(self) -> str:
        """The normalised EBNF both backends compile (cached)."""
        fmt = self.format
        return compile_ebnf(fmt, getattr(self, fmt), self.scope, self.scaffold or "released")

    def shortest_text(self, forbidden: frozenset[str] = frozenset()) -> str | None:
        """The shortest text the grammar accepts avoiding ``forbidden`` (None: none; :mod:`grammar_check`)."""
        return _shortest(self.ebnf_text(), frozenset(forbidden))

    def preflight(self, hooks: Any, ctx: HookContext) -> None:
        """Refuse, before any decode, a combination that could never end (module doc)."""
        others = [h for h in hooks if h is not self]
        if any(getattr(h, "name", "") == "grammar" for h in others):
            raise InputError("grammar: expected at most one grammar hook per call, found several; combine them "
                             "into one grammar")
        if any(getattr(h, "prefix_text", None) for h in others):
            raise InputError(f"grammar with prefix: a prefix is written outside the grammar's control; to force a "
                             f"text under {self.describe()}, put it into the grammar")
        try:
            free = self.shortest_text()
        except GrammarParseError:
            return  # a construct the checker does not read: decoding reports dead ends per row
        if free is None:
            raise InputError(f"{self.describe()}: no text matches this grammar, so a decode could never end")
        chars, bans = _forbidden_chars(others)
        witness = free if not chars else self.shortest_text(chars)
        if witness is None:
            needed = sorted(set(free) & chars) or sorted(chars)
            raise InputError(f"{self.describe()} with {', '.join(b.describe() for b in bans)}: every text the "
                             f"grammar accepts needs a banned character (its shortest text {free!r} uses "
                             f"{''.join(needed)!r}); drop the ban or change the grammar")
        _, cap = length_limits(ctx.sampling, hooks)
        n = len(ctx.tokenizer.encode(witness, add_special_tokens=False))
        if n > cap:
            raise InputError(f"{self.describe()}: its shortest text takes {n} tokens ({witness[:80]!r}…), more than "
                             f"the length cap of {cap} tokens; raise max_new_tokens")
        if self.scope == "output" and CLOSE_TAG not in free:
            warnings.warn(f"{self.describe()}: its shortest text {free[:60]!r} has no {CLOSE_TAG!r}; decodes may "
                          f"have tag_status 'no_open'/'no_close'", UserWarning, stacklevel=3)

    def hf_logits_processors(self, ctx: HookContext) -> list:
        return [_GrammarMask(compiled_grammar(self.ebnf_text(), ctx), ctx.stop_ids, ctx.vocab_size)]

    def vllm_sampling_kwargs(self, ctx: HookContext) -> dict:
        return {"structured_outputs": {"grammar": self.ebnf_text()},
                "extra_args": {VLLM_GRAMMAR_GUARD_KEY: [{"stop": list(ctx.stop_ids)}]}}


@dataclass(frozen=True)
class Prefix(Hook):
    """Write fixed text after the prompt before decoding (module doc): an assistant prefix.

    Args (exactly one):
        text: the prefix text.
        scaffold: a registered scaffold name or scaffold text; the prefix is ``<explanation>\\n``
            followed by the scaffold's fixed opening (its text before the first slot).
    """

    name: ClassVar[str] = "prefix"
    text: str = ""
    scaffold: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not isinstance(self.scaffold, str):
            raise InputError(f"prefix: expected strings, found text={self.text!r}, scaffold={self.scaffold!r}")
        if bool(self.text) == bool(self.scaffold):
            raise InputError("prefix: expected exactly one of 'text' and 'scaffold', found "
                             f"{'both' if self.text else 'neither'}")
        if self.scaffold:
            resolve_scaffold(self.scaffold)

    def prefix_text(self) -> str:
        """The text appended after the prompt."""
        return self.text or f"{OPEN_TAG}\n{scaffold_opening(self.scaffold)}"

    def preflight(self, hooks: Any, ctx: HookContext) -> None:
        if sum(1 for h in hooks if getattr(h, "prefix_text", None)) > 1:
            raise InputError("prefix: expected at most one prefix hook per call, found several")


for _cls in (Grammar, Prefix):
    register_hook(_cls)
