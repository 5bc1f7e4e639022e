"""Delimiter families: named sets of characters that NLA explanations use to mark spans.

One registry serves the generation-time ban hooks (which ban every token whose text contains a
family's characters) and the post-hoc span parser (which uses the families' open/close pairs).
Every character is listed in ``docs/hooks.md``.

A family has:

* ``chars`` — every character that belongs to it (what a ban removes, what the leak audit counts);
* ``pairs`` — ``(open, close)`` pairs the span parser matches; ``open == close`` for symmetric marks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nla_probe.errors import InputError, UnknownNameError


@dataclass(frozen=True)
class DelimiterFamily:
    """A named set of delimiter characters.

    Attributes:
        name: registry key, e.g. ``"double_quotes"``.
        chars: every character of the family, as a string of distinct characters.
        pairs: ``(open, close)`` pairs the span parser recognises, each a 1–2 character string.
        description: one line for ``list_families`` and the docs.
    """

    name: str
    chars: str
    pairs: tuple[tuple[str, str], ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.chars:
            raise InputError(f"delimiter family needs a name and at least one char, got {self!r}")
        if len(set(self.chars)) != len(self.chars):
            raise InputError(f"delimiter family {self.name!r}: chars repeat in {self.chars!r}")
        for pair in self.pairs:
            if len(pair) != 2 or not all(pair):
                raise InputError(f"delimiter family {self.name!r}: bad pair {pair!r}")

    @property
    def charset(self) -> frozenset[str]:
        return frozenset(self.chars)


_BUILTIN = (
    DelimiterFamily(
        "double_quotes",
        '"\u201c\u201d\u201e\u201f\uff02\u301d\u301e\u301f\u2033',
        (('"', '"'), ("\u201c", "\u201d"), ("\u201e", "\u201c"), ("\u201e", "\u201d"),
         ("\u201f", "\u201d"), ("\uff02", "\uff02"), ("\u301d", "\u301e"), ("\u301d", "\u301f")),
        "ASCII \", typographic \u201c \u201d \u201e \u201f, fullwidth \uff02, \u301d\u301e\u301f, double prime \u2033",
    ),
    DelimiterFamily(
        "single_quotes",
        "'\u2018\u2019\u201a\u201b`\u2032\uff07\u00b4",
        (("'", "'"), ("\u2018", "\u2019"), ("\u201a", "\u2018"), ("\u201a", "\u2019"),
         ("\u201b", "\u2019"), ("`", "`"), ("`", "'"), ("\uff07", "\uff07")),
        "ASCII ', typographic \u2018 \u2019 \u201a \u201b, backtick `, prime \u2032, fullwidth \uff07, acute \u00b4",
    ),
    DelimiterFamily(
        "corner_brackets",
        "\u300c\u300d\u300e\u300f\uff62\uff63",
        (("\u300c", "\u300d"), ("\u300e", "\u300f"), ("\uff62", "\uff63")),
        "\u300c\u300d \u300e\u300f and halfwidth \uff62\uff63",
    ),
    DelimiterFamily(
        "guillemets",
        "\u00ab\u00bb\u2039\u203a",
        (("\u00ab", "\u00bb"), ("\u00bb", "\u00ab"), ("\u2039", "\u203a")),
        "\u00ab\u00bb \u2039\u203a",
    ),
    DelimiterFamily("emphasis", "*_", (("**", "**"), ("*", "*"), ("__", "__"), ("_", "_")),
                    "markdown emphasis * and _"),
    DelimiterFamily("parentheses", "()\uff08\uff09", (("(", ")"), ("\uff08", "\uff09")),
                    "( ) and fullwidth \uff08\uff09"),
    DelimiterFamily("square_brackets", "[]\uff3b\uff3d", (("[", "]"), ("\uff3b", "\uff3d")),
                    "[ ] and fullwidth \uff3b\uff3d"),
)

#: Unions available by name.
QUOTES = ("double_quotes", "single_quotes")
ALL_FAMILIES = tuple(f.name for f in _BUILTIN)

_REGISTRY: dict[str, DelimiterFamily] = {f.name: f for f in _BUILTIN}
_UNIONS: dict[str, tuple[str, ...]] = {"quotes": QUOTES, "all": ALL_FAMILIES}


def list_families() -> list[str]:
    """Names of the registered delimiter families (unions ``quotes`` and ``all`` not included)."""
    return list(_REGISTRY)


def get_family(name: str) -> DelimiterFamily:
    """The family registered under ``name``; raises :class:`UnknownNameError` listing valid names."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownNameError("delimiter family", name, [*_REGISTRY, *_UNIONS]) from None


def register_family(family: DelimiterFamily, overwrite: bool = False) -> None:
    """Add a user-defined family to the registry (``overwrite=True`` to replace one)."""
    if not isinstance(family, DelimiterFamily):
        raise InputError(f"register_family takes a DelimiterFamily, got {type(family).__name__}")
    if (family.name in _REGISTRY or family.name in _UNIONS) and not overwrite:
        raise InputError(f"delimiter family {family.name!r} is already registered; pass overwrite=True")
    _REGISTRY[family.name] = family
    global REGISTRY_GENERATION
    REGISTRY_GENERATION += 1


#: Incremented by every :func:`register_family`, so caches keyed on family names can tell when
#: a name may resolve to another family.
REGISTRY_GENERATION = 0


def expand_family_names(names: str | Iterable[str]) -> tuple[str, ...]:
    """Expand union names (``quotes``, ``all``) and validate, keeping first-seen order."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for name in names:
        members = _UNIONS.get(name, (name,))
        for member in members:
            get_family(member)
            if member not in out:
                out.append(member)
    return tuple(out)


def resolve_chars(families: str | Sequence[str] = (), chars: str = "") -> frozenset[str]:
    """The union of the characters of ``families`` (names or unions) and the extra ``chars``."""
    result = set(chars)
    for name in expand_family_names(families):
        result |= _REGISTRY[name].charset
    return frozenset(result)


def family_of_char(ch: str) -> str | None:
    """Name of the first registered family containing ``ch`` (None if none)."""
    for fam in _REGISTRY.values():
        if ch in fam.charset:
            return fam.name
    return None
