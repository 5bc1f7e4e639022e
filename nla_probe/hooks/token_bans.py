"""Which vocabulary tokens a character ban removes: token byte tables and ban-set resolution.

A character ban (:class:`nla_probe.hooks.BanChars`) forbids every token whose text could put a
banned character into the decoded output.  Resolution works on the **bytes** of each token, not on
``tokenizer.decode([id])``, because byte-level vocabularies hold pieces that are not whole
characters:

* **byte-level BPE** (GPT-2 / Qwen / Llama-3 style, decoder ``ByteLevel``): each token string is
  mapped back through the byte alphabet to its exact bytes;
* **byte fallback** (SentencePiece style, decoder with ``ByteFallback``): ``<0xNN>`` tokens are the
  single byte ``NN``; other pieces are their text with ``▁`` read as a space;
* anything else: the UTF-8 bytes of ``tokenizer.decode([id])`` (partial pieces cannot be seen).

A token is banned when, for some banned character ``c`` with UTF-8 encoding ``e``:

1. **full** — its bytes contain ``e`` (UTF-8 is self-synchronising, so a byte match is always a
   whole character); or
2. **partial** (``partial_bytes="ban"``, the default) — its bytes *end with a proper prefix* of
   ``e`` (for ``“`` = ``E2 80 9C``: a token ending in ``E2`` or ``E2 80``).

Rule 2 makes the ban exact: in any output containing ``c``, the token holding ``c``'s first byte
either contains all of ``e`` (rule 1) or ends inside it (rule 2).  Its price is that such a token is
also the first piece of other characters sharing the prefix (``E2 80`` starts every character in
U+2000–U+203F); they stay writable through any token that holds them whole.  With
``partial_bytes="allow"`` only rule 1 applies and a multi-byte character can still be assembled
from byte pieces.  Tokens whose bytes start with a continuation byte (the *tail* of a character)
are never banned for it: only the first piece matters.

Special tokens, added special tokens and the stop ids are never banned.  Results are cached per
tokenizer object (see :func:`token_bytes`) and per resolution key (:func:`resolve_ban`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nla_probe.errors import InputError

logger = logging.getLogger(__name__)

PARTIAL_POLICIES = ("ban", "allow")
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_LOCK = threading.Lock()


def byte_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet inverted: printable stand-in character -> byte value.

    Bytes that are printable Latin-1 characters stand for themselves; the remaining 68 bytes are
    mapped, in byte order, to the code points 256, 257, ...  (the GPT-2 convention that byte-level
    tokenizers share).
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table: dict[str, int] = {chr(b): b for b in keep}
    extra = 0
    for b in range(256):
        if b not in keep:
            table[chr(256 + extra)] = b
            extra += 1
    return table


@dataclass(frozen=True)
class TokenBytes:
    """The bytes of every token of one tokenizer.

    Attributes:
        pieces: ``pieces[id]`` = the token's bytes (``None`` for ids without text).
        special: ids that are special tokens (never banned).
        kind: ``"byte_level"``, ``"byte_fallback"`` or ``"text"`` (how ``pieces`` were read).
    """

    pieces: tuple[bytes | None, ...]
    special: frozenset[int]
    kind: str


def _decoder_kind(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    dec = getattr(backend, "decoder", None)
    if dec is None or not hasattr(dec, "__getstate__"):
        return "text"
    try:
        decoder = json.loads(dec.__getstate__()) or {}
    except (ValueError, TypeError):  # pragma: no cover - a decoder that does not serialize
        return "text"
    types = [d.get("type") for d in decoder.get("decoders", [])] if decoder.get("type") == "Sequence" \
        else [decoder.get("type")]
    if "ByteLevel" in types:
        return "byte_level"
    if "ByteFallback" in types:
        return "byte_fallback"
    return "text"


def _read_pieces(tokenizer: Any, kind: str) -> tuple[tuple[bytes | None, ...], frozenset[int]]:
    n = len(tokenizer)
    added = dict(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    special = {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or [])}
    special |= {int(i) for i, t in added.items() if getattr(t, "special", False)}
    strings = tokenizer.convert_ids_to_tokens(list(range(n)))
    alphabet = byte_alphabet() if kind == "byte_level" else {}
    pieces: list[bytes | None] = []
    for i, s in enumerate(strings):
        if s is None:
            pieces.append(None)
        elif i in added:
            pieces.append(str(getattr(added[i], "content", s)).encode("utf-8"))
        elif kind == "byte_level" and all(c in alphabet for c in s):
            pieces.append(bytes(alphabet[c] for c in s))
        elif kind == "byte_fallback":
            m = _BYTE_TOKEN.match(s)
            pieces.append(bytes([int(m.group(1), 16)]) if m else s.replace("\u2581", " ").encode("utf-8"))
        else:
            pieces.append(tokenizer.decode([i]).encode("utf-8"))
    return tuple(pieces), frozenset(special)


_BYTE_CACHE: dict[int, tuple[weakref.ref, TokenBytes]] = {}


def token_bytes(tokenizer: Any) -> TokenBytes:
    """The :class:`TokenBytes` of ``tokenizer``, computed once per tokenizer object and cached.

    The cache is keyed by the object's identity and holds a weak reference, so a tokenizer that is
    garbage-collected drops its entry.
    """
    key = id(tokenizer)
    with _LOCK:
        hit = _BYTE_CACHE.get(key)
        if hit is not None and hit[0]() is tokenizer:
            return hit[1]
    kind = _decoder_kind(tokenizer)
    pieces, special = _read_pieces(tokenizer, kind)
    table = TokenBytes(pieces, special, kind)
    try:
        ref = weakref.ref(tokenizer, lambda _r, k=key: _BYTE_CACHE.pop(k, None))
    except TypeError:  # objects without weakref support are not cached
        return table
    with _LOCK:
        _BYTE_CACHE[key] = (ref, table)
    return table


@dataclass(frozen=True)
class BanSet:
    """A resolved character ban for one tokenizer.

    Attributes:
        ids: banned token ids, ascending.
        chars: the banned characters (sorted).
        n_full: tokens banned because their bytes contain a whole banned character.
        n_partial: tokens banned only because they end with the first byte(s) of one.
        by_char: banned character -> number of tokens that contain it whole.
        absent_chars: banned characters that no token contains whole (writable, if at all, only
            from byte pieces).
        n_allowed: real, non-special tokens left allowed.
        vocab_size: number of logits.
        kind: how the token bytes were read (see :class:`TokenBytes`).
        partial_bytes: the partial-piece policy used.
    """

    ids: tuple[int, ...]
    chars: str
    n_full: int
    n_partial: int
    by_char: dict[str, int]
    absent_chars: str
    n_allowed: int
    vocab_size: int
    kind: str
    partial_bytes: str
    _texts: dict[int, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def count(self) -> int:
        """Number of banned token ids."""
        return len(self.ids)

    def examples(self, k: int = 10) -> list[str]:
        """Up to ``k`` banned pieces (bytes shown as text; undecodable bytes as ``\\xNN``), spread
        evenly over the banned ids."""
        if not self.ids or k <= 0:
            return []
        step = max(1, len(self.ids) // k)
        return [self._texts[i] for i in self.ids[::step][:k]]

    def summary(self) -> str:
        """One line: counts, the characters, and a few examples."""
        chars = " ".join(f"{c}(U+{ord(c):04X})" for c in self.chars)
        absent = f"; in no token: {' '.join(self.absent_chars)}" if self.absent_chars else ""
        return (f"{self.count} of {self.vocab_size} token ids banned ({self.n_full} contain a banned character, "
                f"{self.n_partial} end in a partial one; partial_bytes={self.partial_bytes!r}, {self.kind} tokenizer); "
                f"chars: {chars}{absent}; examples: {self.examples(8)}")


def _prefix_pattern(chars: Iterable[str]) -> re.Pattern | None:
    prefixes = {c.encode("utf-8")[:k] for c in chars for k in range(1, len(c.encode("utf-8")))}
    if not prefixes:
        return None
    return re.compile(b"(?:" + b"|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True)) + b")\\Z")


def ban_ids(pieces: Sequence[bytes | None], chars: Iterable[str], protected: Iterable[int] = (),
            partial_bytes: str = "ban") -> tuple[list[int], list[int]]:
    """The pure rule (module doc): ``(full_ids, partial_ids)`` for ``pieces`` and banned ``chars``.

    ``protected`` ids are never returned.  ``partial_ids`` is empty when ``partial_bytes="allow"``.
    """
    if partial_bytes not in PARTIAL_POLICIES:
        raise InputError(f"partial_bytes: expected one of {list(PARTIAL_POLICIES)}, found {partial_bytes!r}")
    chars = sorted(set(chars))
    if not chars:
        return [], []
    full_pat = re.compile(b"|".join(re.escape(c.encode("utf-8")) for c in chars))
    part_pat = _prefix_pattern(chars) if partial_bytes == "ban" else None
    protected = set(protected)
    full, partial = [], []
    for i, piece in enumerate(pieces):
        if piece is None or i in protected:
            continue
        if full_pat.search(piece):
            full.append(i)
        elif part_pat is not None and part_pat.search(piece):
            partial.append(i)
    return full, partial


_BAN_CACHE: dict[tuple, tuple[weakref.ref, BanSet]] = {}


def resolve_ban(tokenizer: Any, chars: Iterable[str], *, vocab_size: int | None = None,
                protected: Iterable[int] = (), partial_bytes: str = "ban") -> BanSet:
    """Resolve banned characters to a :class:`BanSet` for ``tokenizer`` (cached).

    Args:
        tokenizer: a transformers tokenizer.
        chars: the banned characters.
        vocab_size: number of logits (defaults to ``len(tokenizer)``); ids beyond the tokenizer
            have no text and are never banned.
        protected: extra ids never banned (the stop ids); special tokens are always protected.
        partial_bytes: ``"ban"`` or ``"allow"`` (module doc).

    Raises:
        InputError: no banned characters, or the ban leaves no real token allowed.
    """
    chars = "".join(sorted(set(chars)))
    if not chars:
        raise InputError("character ban: expected at least one character to ban, found none")
    protected = frozenset(int(i) for i in protected)
    key = (id(tokenizer), chars, vocab_size, protected, partial_bytes)
    with _LOCK:
        hit = _BAN_CACHE.get(key)
        if hit is not None and hit[0]() is tokenizer:
            return hit[1]
    table = token_bytes(tokenizer)
    n_logits = len(table.pieces) if vocab_size is None else int(vocab_size)
    pieces = table.pieces[:n_logits]
    keep = protected | table.special
    full, partial = ban_ids(pieces, chars, keep, partial_bytes)
    by_char = {c: sum(1 for i in full if c.encode("utf-8") in pieces[i]) for c in chars}  # type: ignore[operator]
    real = [i for i, p in enumerate(pieces) if p is not None and i not in keep]
    ids = tuple(sorted(full + partial))
    n_allowed = len(real) - len(ids)
    if n_allowed <= 0:
        raise InputError(f"character ban {chars!r}: expected at least one allowed token, found none — all "
                         f"{len(real)} non-special tokens of this tokenizer contain a banned character")
    texts = {i: pieces[i].decode("utf-8", errors="backslashreplace") for i in ids}  # type: ignore[union-attr]
    result = BanSet(ids=ids, chars=chars, n_full=len(full), n_partial=len(partial), by_char=by_char,
                    absent_chars="".join(c for c in chars if by_char[c] == 0), n_allowed=n_allowed,
                    vocab_size=n_logits, kind=table.kind, partial_bytes=partial_bytes, _texts=texts)
    logger.debug("resolved ban: %s", result.summary())
    try:
        ref = weakref.ref(tokenizer, lambda _r, k=key: _BAN_CACHE.pop(k, None))
    except TypeError:
        return result
    with _LOCK:
        _BAN_CACHE[key] = (ref, result)
    return result


def cache_info() -> dict[str, int]:
    """Number of cached token byte tables and ban sets."""
    with _LOCK:
        return {"token_bytes": len(_BYTE_CACHE), "ban_sets": len(_BAN_CACHE)}


def clear_cache() -> None:
    """Drop every cached token byte table and ban set."""
    with _LOCK:
        _BYTE_CACHE.clear()
        _BAN_CACHE.clear()
