"""Post-hoc explanation transforms: named, pure, deterministic ``str -> str`` edits.

Each transform is a small frozen dataclass with a ``name`` and explicit parameters; the work is
done by a pure function in :mod:`nla_probe.surgery.functional`.  Transforms compose
(``Compose([a, b])`` or ``a | b``, applied left to right) and round-trip through the spec format
``{"name": ..., **params}`` (:meth:`Transform.to_spec` adds ``"version"``; :func:`from_spec`
migrates older versions and rejects unknown names and keys, listing the valid ones).  The base class,
the registry and the spec functions live in :mod:`nla_probe.surgery.base`.

Spans are the OUTERMOST spans of the chosen delimiter ``families`` (default ``"quotes"`` = double
and single quotes, straight and typographic) as found by :func:`nla_probe.text.spans.find_spans`; a span
includes its marks.  Randomness (``seed``) is drawn from ``(seed, text)`` by a stable hash: the
same text and seed always give the same output.  Definitions: ``docs/surgery.md``.
"""


from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nla_probe.errors import InputError
from nla_probe.surgery import functional as F
from nla_probe.surgery.base import (
    _DEFAULT_FAMILIES,
    Compose,
    FromCallable,
    Transform,
    _check_choice,
    _check_int,
    _families,
    _short,
    register_transform,
)


@dataclass(frozen=True)
class Identity(Transform):
    """The unedited explanation (the baseline row of every grid)."""

    name: ClassVar[str] = "identity"

    def __call__(self, text: str) -> str:
        return text


@dataclass(frozen=True)
class SpansOnly(Transform):
    """Only the outermost spans, marks included, joined by ``sep`` (text between spans dropped).

    Args:
        families: delimiter families that make spans (names or unions ``"quotes"``, ``"all"``).
        sep: string placed between consecutive spans.  No spans -> ``""``.
    """

    name: ClassVar[str] = "spans_only"
    families: tuple[str, ...] = _DEFAULT_FAMILIES
    sep: str = " "

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.sep, str):
            raise InputError(f"{self.name}.sep: expected a str, found {self.sep!r}")

    def __call__(self, text: str) -> str:
        return F.spans_only(text, self.families, self.sep)


@dataclass(frozen=True)
class SpansOnlyBare(SpansOnly):
    """Like ``spans_only`` but each span's content without its own marks and without the marks of
    the spans nested in it (``"he said 'no'"`` -> ``he said no``), joined by ``sep``."""

    name: ClassVar[str] = "spans_only_bare"

    def __call__(self, text: str) -> str:
        return F.spans_only_bare(text, self.families, self.sep)


@dataclass(frozen=True)
class ProseOnly(Transform):
    """The text with every outermost span (marks included) deleted; nothing else changes, so
    ``spans_only(sep="")`` and ``prose_only`` partition the characters of the text.

    Args:
        families: delimiter families that make spans.
    """

    name: ClassVar[str] = "prose_only"
    families: tuple[str, ...] = _DEFAULT_FAMILIES

    def __call__(self, text: str) -> str:
        return F.prose_only(text, self.families)


STRIP_SCOPES = ("marks", "chars")


@dataclass(frozen=True)
class StripDelimiters(Transform):
    """Delete delimiter marks, keep the span contents.

    Args:
        families: delimiter families whose marks are removed.
        scope: ``"marks"`` removes the open/close marks of every parsed span (all depths) and every
            unmatched mark the parser reports, but keeps apostrophes (``don't``, ``students'``) and
            marks that are in no pair (primes); ``"chars"`` removes every character of the
            families anywhere, apostrophes included (what a generation-time ban removes).
    """

    name: ClassVar[str] = "strip_delimiters"
    families: tuple[str, ...] = _DEFAULT_FAMILIES
    scope: str = "marks"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice(self.scope, f"{self.name}.scope", STRIP_SCOPES)

    def __call__(self, text: str) -> str:
        return F.strip_delimiters(text, self.families, self.scope)


@dataclass(frozen=True)
class ReplaceDelimiters(Transform):
    """Swap the marks of each family for other characters, keep the span contents.

    Args:
        mapping: family name (or union) -> replacement, either one string used for both marks
            (``{"double_quotes": "'"}``) or an ``[open, close]`` pair (``{"quotes": ["«", "»"]}``);
            ``""`` deletes the marks.  Every parsed span of a mapped family gets new marks, at all
            depths; unmatched marks of the family become the open (``unmatched_close``: the close)
            replacement.  Apostrophes are untouched.
    """

    name: ClassVar[str] = "replace_delimiters"
    mapping: tuple[tuple[str, str, str], ...] = ()

    def __post_init__(self) -> None:
        raw = self.mapping
        if isinstance(raw, Mapping):
            items = list(raw.items())
        elif isinstance(raw, (tuple, list)) and all(isinstance(x, (tuple, list)) and len(x) == 3 for x in raw):
            items = [(a, (b, c)) for a, b, c in raw]
        else:
            raise InputError(f"{self.name}.mapping: expected a dict family -> str or [open, close], found {raw!r}")
        if not items:
            raise InputError(f"{self.name}.mapping: expected at least one family, found an empty mapping")
        norm = []
        for fam, rep in items:
            _families(fam, self.name)
            if isinstance(rep, str):
                o = c = rep
            elif isinstance(rep, (tuple, list)) and len(rep) == 2 and all(isinstance(x, str) for x in rep):
                o, c = rep
            else:
                raise InputError(f"{self.name}.mapping[{fam!r}]: expected a str or [open, close], found {rep!r}")
            norm.append((fam, o, c))
        object.__setattr__(self, "mapping", tuple(norm))

    def params(self) -> dict[str, Any]:
        return {"mapping": {f: (o if o == c else [o, c]) for f, o, c in self.mapping}}

    def describe(self) -> str:
        return f"{self.name}({_short(self.params()['mapping'])})"

    def __call__(self, text: str) -> str:
        return F.replace_delimiters(text, {f: (o, c) for f, o, c in self.mapping})


REPLACE_MODES = ("redacted", "empty", "nothing", "words", "tokens")


@dataclass(frozen=True)
class ReplaceSpans(Transform):
    """Replace the content of every outermost span, keeping or dropping the marks.

    Args:
        with_: (spec key ``"with"``) what replaces each span:
            ``"redacted"`` — content -> ``placeholder``, marks kept (``"REDACTED"``);
            ``"empty"`` — content removed, marks kept (``""``);
            ``"nothing"`` — span and marks removed (same output as ``prose_only``);
            ``"words"`` — each whitespace-separated chunk of the content -> a random word of the same
            character length from ``vocab`` (default: built-in common English words); whitespace kept;
            ``"tokens"`` — content -> random strings from ``vocab`` (one per AR token when bound to the
            AR tokenizer by :meth:`bind`/``score_variants``) concatenated until at least the content's
            character length.
        families: delimiter families that make spans.
        placeholder: the replacement of ``"redacted"``.
        seed: seed of ``"words"``/``"tokens"`` (draws depend on ``(seed, text)``).
        vocab: strings to draw from for ``"words"``/``"tokens"``; ``None`` means the built-in words
            (``"words"``) or the AR tokenizer's vocabulary bound at scoring time (``"tokens"``).
    """

    name: ClassVar[str] = "replace_spans"
    with_: str = field(default="redacted", metadata={"spec_key": "with"})
    families: tuple[str, ...] = _DEFAULT_FAMILIES
    placeholder: str = "REDACTED"
    seed: int = 0
    vocab: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_choice(self.with_, f"{self.name}.with", REPLACE_MODES)
        super().__post_init__()
        if not isinstance(self.placeholder, str):
            raise InputError(f"{self.name}.placeholder: expected a str, found {self.placeholder!r}")
        _check_int(self.seed, f"{self.name}.seed")
        if self.vocab is not None:
            if isinstance(self.vocab, str) or not all(isinstance(v, str) and v and "\n" not in v
                                                      for v in self.vocab):
                raise InputError(f"{self.name}.vocab: expected a list of non-empty strings without line breaks, "
                                 f"found {self.vocab!r:.80}")
            object.__setattr__(self, "vocab", tuple(self.vocab))
            if not self.vocab:
                raise InputError(f"{self.name}.vocab: expected at least one string, found none")
        random_mode = self.with_ in ("words", "tokens")
        if self.placeholder != "REDACTED" and self.with_ != "redacted":
            raise InputError(f"{self.name}.placeholder is only used with with='redacted', found with={self.with_!r}")
        if not random_mode and (self.seed != 0 or self.vocab is not None):
            raise InputError(f"{self.name}: seed and vocab are only used with with='words' or 'tokens', "
                             f"found with={self.with_!r}")

    def bind(self, *, tokenizer: Any = None) -> Transform:
        if self.with_ == "tokens" and self.vocab is None and tokenizer is not None:
            return dataclasses.replace(self, vocab=F.cached_vocab(tokenizer))
        return self

    def __call__(self, text: str) -> str:
        if self.with_ == "tokens" and self.vocab is None:
            raise InputError(f"{self.name}(with='tokens') has no vocab: pass vocab=[...] or call "
                             ".bind(tokenizer=...) (score_variants binds the AR tokenizer)")
        return F.replace_spans(text, self.with_, self.families, self.placeholder, self.seed, self.vocab)


@dataclass(frozen=True)
class DeleteSpans(Transform):
    """Delete chosen outermost spans (marks included); the rest of the text is unchanged.

    Exactly one of ``indices`` / ``fraction`` may be given; neither deletes every span.

    Args:
        families: delimiter families that make spans.
        indices: span indices in text order (negative counts from the end); indices a text does
            not have are skipped for that text.
        fraction: share of the spans to delete, ``round(fraction * n_spans)`` chosen at random.
        seed: seed of ``fraction`` (draws depend on ``(seed, text)``).
    """

    name: ClassVar[str] = "delete_spans"
    families: tuple[str, ...] = _DEFAULT_FAMILIES
    indices: tuple[int, ...] | None = None
    fraction: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.indices is not None and self.fraction is not None:
            raise InputError(f"{self.name}: give indices or fraction, not both")
        if self.indices is not None:
            idx = (self.indices,) if isinstance(self.indices, int) else self.indices
            if not isinstance(idx, (tuple, list)):
                raise InputError(f"{self.name}.indices: expected a list of ints, found {self.indices!r}")
            for i in idx:
                _check_int(i, f"{self.name}.indices")
            object.__setattr__(self, "indices", tuple(idx))
        if self.fraction is not None:
            if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) \
                    or not 0 <= self.fraction <= 1:
                raise InputError(f"{self.name}.fraction: expected a number in [0, 1], found {self.fraction!r}")
        _check_int(self.seed, f"{self.name}.seed")
        if self.fraction is None and self.seed != 0:
            raise InputError(f"{self.name}.seed is only used with fraction, found fraction=None")

    def __call__(self, text: str) -> str:
        return F.delete_spans(text, self.families, self.indices, self.fraction, self.seed)


TOKEN_UNITS = ("words", "chars", "tokens")


@dataclass(frozen=True)
class KeepFirstTokens(Transform):
    """Truncate the explanation after its first ``n`` units (the rest is dropped, nothing added).

    Args:
        n: number of units kept (``0`` gives ``""``; texts with at most ``n`` units are unchanged).
        unit: ``"words"`` — maximal runs of non-whitespace (``\\S+``), cut after the n-th;
            ``"chars"`` — Unicode code points; ``"tokens"`` — tokens of the bound tokenizer
            (``add_special_tokens=False``), cut at the end offset of the n-th token; the AR
            tokenizer is bound by ``score_variants`` (or :meth:`bind`).
        tokenizer: a fast Hugging Face tokenizer (not serialized; bound at run time).
    """

    name: ClassVar[str] = "keep_first_tokens"
    n: int = 32
    unit: str = "words"
    tokenizer: Any = field(default=None, compare=False, repr=False, metadata={"spec": False})

    def __post_init__(self) -> None:
        _check_int(self.n, f"{self.name}.n", minimum=0)
        _check_choice(self.unit, f"{self.name}.unit", TOKEN_UNITS)
        if self.tokenizer is not None and self.unit != "tokens":
            raise InputError(f"{self.name}.tokenizer is only used with unit='tokens', found unit={self.unit!r}")

    def bind(self, *, tokenizer: Any = None) -> Transform:
        if self.unit == "tokens" and self.tokenizer is None and tokenizer is not None:
            return dataclasses.replace(self, tokenizer=tokenizer)
        return self

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(o) for o in enc["offset_mapping"]]

    def __call__(self, text: str) -> str:
        if self.unit == "tokens" and self.tokenizer is None:
            raise InputError(f"{self.name}(unit='tokens') has no tokenizer: call .bind(tokenizer=...) "
                             "(score_variants binds the AR tokenizer)")
        return F.keep_first_tokens(text, self.n, self.unit, self._offsets if self.unit == "tokens" else None)


@dataclass(frozen=True)
class ShuffleSentences(Transform):
    """Permute the sentences at random, keeping the whitespace/line layout between them.

    Sentences are those of :func:`nla_probe.text.spans.sentence_bounds` (an end of sentence inside a
    span of ``families`` does not split).  Texts with fewer than two sentences are unchanged.

    Args:
        seed: seed of the permutation (drawn from ``(seed, text)``).
        families: delimiter families whose spans protect their content from sentence splits.
    """

    name: ClassVar[str] = "shuffle_sentences"
    seed: int = 0
    families: tuple[str, ...] = _DEFAULT_FAMILIES

    def __post_init__(self) -> None:
        _check_int(self.seed, f"{self.name}.seed")
        super().__post_init__()

    def __call__(self, text: str) -> str:
        return F.shuffle_sentences(text, self.seed, self.families)


for _cls in (Identity, SpansOnly, SpansOnlyBare, ProseOnly, StripDelimiters, ReplaceDelimiters, ReplaceSpans,
             DeleteSpans, KeepFirstTokens, ShuffleSentences, FromCallable, Compose):
    register_transform(_cls)
del _cls
