"""Pure functions behind the explanation transforms of :mod:`nla_probe.surgery`.

Every function maps ``str -> str``, never raises on text content, and is deterministic: random
ones derive their generator from ``(seed, text)`` with a stable hash, so the same text and seed
always give the same output, on any machine and in any process, and different texts get
independent draws.  Definitions and parameters are documented once, on the classes in
:mod:`nla_probe.surgery`, and in ``docs/surgery.md``.

"Outermost spans" below are the depth-0 spans of :func:`nla_probe.text.spans.find_spans` for the given
families; nested spans travel with their enclosing span.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache

import regex

from nla_probe.errors import InputError
from nla_probe.text.delimiters import expand_family_names, resolve_chars
from nla_probe.text.spans import outermost_raw, parse_raw, resolve_families, sentence_bounds

_WORD = regex.compile(r"\S+")

#: Built-in vocabulary of ``replace_spans(with="words")``: 332 common English words, 1–12 letters.
ENGLISH_WORDS: tuple[str, ...] = tuple("""
a I an as at be by do go he if in is it me my no of on or so to up us we
all and any are big boy but can day did end far few for get got had has her him his how its
let man may new not now old one our out own put say see she the too two use was way who why yes
able also back been best both call came come down each even find from give good have here high
home into just keep kind know last left life like line long look made make many more most much
must name need next only open over part play real room said same seem show side some such take
than that them then they this time tree turn very want well went were what when will with word
work year about above after again along began being below black bring build carry clean close
could earth every field first found given great green group house large later learn light might
money never night often order other paper place plant point right river round small sound start
state still study their there these thing think three today under until water where which while
white whole world would write young animal answer around become before better change chosen
circle common course finish during family father follow friend garden ground happen letter little
mother moving number people person player really school second should simple spring summer system
though toward travel winter without another between brother captain century certain company
country example general history however machine measure morning nothing problem produce project
science several special student surface thought through whether building children complete
consider continue describe distance exercise government hospital language material mountain
national question remember sentence situation something sometimes strength structure together
yesterday beautiful community condition different important including knowledge direction
education equipment experience following necessary political understand interesting development
information environment temperature relationship particularly
""".split())


def rng_for(seed: int, text: str, salt: str = "") -> random.Random:
    """A ``random.Random`` seeded from ``(seed, crc32(salt, text))``: stable across runs, processes
    and machines (unlike ``hash``), and different for different texts."""
    crc = zlib.crc32(text.encode("utf-8", "surrogatepass"), zlib.crc32(salt.encode()))
    return random.Random((seed << 32) ^ crc)


def remove_ranges(text: str, ranges: Iterable[tuple[int, int]]) -> str:
    """``text`` without the characters in ``ranges`` (half-open, sorted, non-overlapping)."""
    out, pos = [], 0
    for a, b in ranges:
        out.append(text[pos:a])
        pos = b
    out.append(text[pos:])
    return "".join(out)


def replace_ranges(text: str, edits: Iterable[tuple[int, int, str]]) -> str:
    """``text`` with each half-open range ``(a, b)`` replaced by its string (sorted, non-overlapping)."""
    out, pos = [], 0
    for a, b, s in edits:
        out.append(text[pos:a])
        out.append(s)
        pos = b
    out.append(text[pos:])
    return "".join(out)


def _mark_ranges(spans: Iterable[tuple]) -> list[tuple[int, int]]:
    """Offsets of the open and close marks of raw spans ``(start, end, inner_start, inner_end, ...)``."""
    ranges = []
    for t in spans:
        ranges.append((t[0], t[2]))
        ranges.append((t[3], t[1]))
    ranges.sort()
    return ranges


def identity(text: str) -> str:
    return text


def spans_only(text: str, families: str | Sequence[str] = "quotes", sep: str = " ") -> str:
    """See :class:`nla_probe.surgery.SpansOnly`."""
    return sep.join([text[t[0]:t[1]] for t in outermost_raw(text, families)])


def spans_only_bare(text: str, families: str | Sequence[str] = "quotes", sep: str = " ") -> str:
    """See :class:`nla_probe.surgery.SpansOnlyBare`."""
    raw = parse_raw(text, families)[0]
    if all(t[7] == 0 for t in raw):
        return sep.join([text[t[2]:t[3]] for t in raw])
    pieces = []
    nested = sorted(t for t in raw if t[7] > 0)
    k = 0
    for outer in (t for t in raw if t[7] == 0):
        inside = []
        while k < len(nested) and nested[k][0] < outer[1]:
            inside.append(nested[k])
            k += 1
        marks = [(a - outer[2], b - outer[2]) for a, b in _mark_ranges(inside)]
        pieces.append(remove_ranges(text[outer[2]:outer[3]], marks))
    return sep.join(pieces)


def prose_only(text: str, families: str | Sequence[str] = "quotes") -> str:
    """See :class:`nla_probe.surgery.ProseOnly`."""
    return remove_ranges(text, [(t[0], t[1]) for t in outermost_raw(text, families)])


@lru_cache(maxsize=64)
def _char_class(families: tuple) -> re.Pattern:
    chars = sorted({c for fam in families for c in fam.chars})
    return re.compile("[" + "".join(re.escape(c) for c in chars) + "]")


def strip_delimiters(text: str, families: str | Sequence[str] = "quotes", scope: str = "marks") -> str:
    """See :class:`nla_probe.surgery.StripDelimiters`."""
    if scope == "chars":
        return _char_class(resolve_families(families)).sub("", text)
    raw, problems = parse_raw(text, families)
    ranges = _mark_ranges(raw) + [(p.start, p.end) for p in problems]
    ranges.sort()
    return remove_ranges(text, ranges)


def replace_delimiters(text: str, mapping: Mapping[str, tuple[str, str]]) -> str:
    """See :class:`nla_probe.surgery.ReplaceDelimiters`. ``mapping``: family -> (open, close)."""
    table: dict[str, tuple[str, str]] = {}
    for fam, pair in mapping.items():
        for name in expand_family_names(fam):
            table[name] = pair
    if not table:
        return text
    raw, problems = parse_raw(text, tuple(table))
    edits = []
    for t in raw:
        o, c = table[t[4]]
        edits.append((t[0], t[2], o))
        edits.append((t[3], t[1], c))
    for p in problems:
        o, c = table[p.family]
        edits.append((p.start, p.end, c if p.kind == "unmatched_close" else o))
    edits.sort(key=lambda e: e[0])
    return replace_ranges(text, edits)


_BY_LENGTH: dict[int, tuple[Sequence[str], dict[int, list[str]]]] = {}


def _words_by_length(vocab: Sequence[str]) -> dict[int, list[str]]:
    """``vocab`` grouped by length, cached per vocabulary object (identity, not hash: vocabularies
    can hold 10^5 strings)."""
    hit = _BY_LENGTH.get(id(vocab))
    if hit is None or hit[0] is not vocab:
        table: dict[int, list[str]] = {}
        for w in vocab:
            table.setdefault(len(w), []).append(w)
        if len(_BY_LENGTH) > 32:
            _BY_LENGTH.clear()
        hit = _BY_LENGTH[id(vocab)] = (vocab, table)
    return hit[1]


_WS_SPLIT = regex.compile(r"(\s+)")


def junk_words(inner: str, rng: random.Random, vocab: Sequence[str] = ENGLISH_WORDS) -> str:
    """Each whitespace-separated chunk of ``inner`` replaced by a random word of the same length
    from ``vocab``; a length ``vocab`` lacks is filled with random words concatenated and cut."""
    by_len = _words_by_length(vocab)
    rand = rng.random
    parts = _WS_SPLIT.split(inner)
    for k in range(0, len(parts), 2):
        length = len(parts[k])
        if not length:
            continue
        pool = by_len.get(length)
        if pool:
            parts[k] = pool[int(rand() * len(pool))]
        else:
            out = ""
            while len(out) < length:
                out += vocab[int(rand() * len(vocab))]
            parts[k] = out[:length]
    return "".join(parts)


def junk_tokens(inner: str, rng: random.Random, vocab: Sequence[str]) -> str:
    """Random ``vocab`` strings concatenated, without leading or trailing whitespace, until at
    least ``len(inner)`` characters ('' stays ''; a vocabulary of only whitespace gives '')."""
    rand = rng.random
    size = len(vocab)
    out = ""
    for _ in range(4 * len(inner) + 8):  # bound the loop for whitespace-heavy vocabularies
        if len(out) >= len(inner) and not out[-1:].isspace():
            break
        out = (out + vocab[int(rand() * size)]).lstrip()
    return out.rstrip()


def replace_spans(text: str, with_: str = "redacted", families: str | Sequence[str] = "quotes",
                  placeholder: str = "REDACTED", seed: int = 0, vocab: Sequence[str] | None = None) -> str:
    """See :class:`nla_probe.surgery.ReplaceSpans`."""
    spans = outermost_raw(text, families)
    if not spans:
        return text
    if with_ == "nothing":
        return remove_ranges(text, [(t[0], t[1]) for t in spans])
    if with_ in ("redacted", "empty"):
        fill = placeholder if with_ == "redacted" else ""
        return replace_ranges(text, [(t[2], t[3], fill) for t in spans])
    rng = rng_for(seed, text, salt=with_)
    if with_ == "words":
        # One pass over all span contents, joined by "\n" (contents never hold a line break and
        # whitespace is kept, so splitting on "\n" gives the pieces back).
        inners = "\n".join([text[t[2]:t[3]] for t in spans])
        fills = junk_words(inners, rng, ENGLISH_WORDS if vocab is None else vocab).split("\n")
        return replace_ranges(text, [(t[2], t[3], f) for t, f in zip(spans, fills)])
    if with_ == "tokens":
        if not vocab:
            return text  # the class refuses this; the functional form leaves text unchanged
        return replace_ranges(text, [(t[2], t[3], junk_tokens(text[t[2]:t[3]], rng, vocab)) for t in spans])
    raise ValueError(f"replace_spans: unknown with_={with_!r}")


def delete_spans(text: str, families: str | Sequence[str] = "quotes", indices: Sequence[int] | None = None,
                 fraction: float | None = None, seed: int = 0) -> str:
    """See :class:`nla_probe.surgery.DeleteSpans`."""
    spans = outermost_raw(text, families)
    n = len(spans)
    if indices is not None:
        chosen = sorted({i % n for i in indices if -n <= i < n}) if n else []
    elif fraction is not None:
        k = min(n, int(round(fraction * n)))
        chosen = sorted(rng_for(seed, text, salt="delete_spans").sample(range(n), k))
    else:
        chosen = list(range(n))
    return remove_ranges(text, [(spans[i][0], spans[i][1]) for i in chosen])


def keep_first_tokens(text: str, n: int, unit: str = "words",
                      offsets: Callable[[str], list[tuple[int, int]]] | None = None) -> str:
    """See :class:`nla_probe.surgery.KeepFirstTokens`; ``offsets`` maps text to token char spans."""
    if n <= 0:
        return ""
    if unit == "chars":
        return text[:n]
    if unit == "words":
        for k, m in enumerate(_WORD.finditer(text), 1):
            if k == n:
                return text[:m.end()]
        return text
    if offsets is None:
        raise ValueError("keep_first_tokens(unit='tokens') needs token offsets")
    spans = offsets(text)
    return text if len(spans) <= n else text[:spans[n - 1][1]]


def shuffle_sentences(text: str, seed: int = 0, families: str | Sequence[str] = "quotes") -> str:
    """See :class:`nla_probe.surgery.ShuffleSentences`."""
    bounds = sentence_bounds(text, families)
    if len(bounds) < 2:
        return text
    order = list(range(len(bounds)))
    rng_for(seed, text, salt="shuffle_sentences").shuffle(order)
    return replace_ranges(text, [(a, b, text[bounds[j][0]:bounds[j][1]]) for (a, b), j in zip(bounds, order)])


def vocab_from_tokenizer(tokenizer, *, max_chars: int = 16) -> tuple[str, ...]:
    """Decoded single-token strings of ``tokenizer`` usable as junk: no special tokens, no line
    breaks or control characters, no delimiter characters of any registered family, no replacement
    character (partial UTF-8), at least one letter or digit, at most ``max_chars`` characters.
    Sorted by token id."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids = [i for i in range(len(tokenizer)) if i not in special]
    texts = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    ok = regex.compile(r"^[^\p{C}\n\ufffd]*[\p{L}\p{N}][^\p{C}\n\ufffd]*$")
    delimiters = resolve_chars("all")
    seen: set[str] = set()
    out = []
    for t in texts:
        if t in seen or len(t) > max_chars or not ok.match(t) or any(c in delimiters for c in t):
            continue
        seen.add(t)
        out.append(t)
    return tuple(out)


_VOCAB_CACHE: dict[int, tuple[object, tuple[str, ...]]] = {}


def cached_vocab(tokenizer) -> tuple[str, ...]:
    """:func:`vocab_from_tokenizer`, computed once per tokenizer object; raises if it is empty."""
    hit = _VOCAB_CACHE.get(id(tokenizer))
    if hit is None or hit[0] is not tokenizer:
        hit = _VOCAB_CACHE[id(tokenizer)] = (tokenizer, vocab_from_tokenizer(tokenizer))
    if not hit[1]:
        raise InputError("the tokenizer has no usable vocabulary strings for replace_spans(with='tokens')")
    return hit[1]
