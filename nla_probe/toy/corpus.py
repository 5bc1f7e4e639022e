"""The toy corpus: three genres of public-domain / permissively licensed English prose.

The committed corpus lives in ``data/corpus/corpus.jsonl`` (one document per line:
``doc_id``, ``genre``, ``title``, ``text``, ``split``) next to the license notices of its
sources. :func:`extract_corpus` rebuilds that file from the Debian packages it came from
(``wordnet-base``, ``dict-devil``, ``jargon-text``), unpacked with ``dpkg-deb -x`` into one
root directory; :func:`load_corpus` reads the committed file back.

Genres (the labels the toy labeler speaks about):

- ``wordnet``: WordNet 3.0 usage examples, grouped in file order into documents of
  :data:`WORDNET_SENTENCES_PER_DOC` sentences (short, plain modern sentences).
- ``devil``: entries of Ambrose Bierce's *The Devil's Dictionary* (satirical definitions,
  some verse).
- ``jargon``: entries of *The Jargon File* 4.4.7 (hacker slang lexicon).

The split is by document: a document is held out iff a hash of its ``doc_id`` falls in the
held-out fraction, so adding documents never moves existing ones between splits.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

GENRES: tuple[str, ...] = ("wordnet", "devil", "jargon")
WORDNET_SENTENCES_PER_DOC = 8
HELDOUT_FRACTION = 0.1

# Character budget per genre (characters of document text), keeping the committed file
# under ~3 MB.
GENRE_CHAR_BUDGET: dict[str, int] = {"wordnet": 950_000, "devil": 400_000, "jargon": 1_100_000}

_ASCII_MAP = {
    "\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2014": "--",
    "\u2013": "-", "\u2026": "...", "\u00b7": "", "\u2022": "*", "\u2192": "->",
    "\u00a0": " ",
}


@dataclasses.dataclass(frozen=True)
class Document:
    """One corpus document.

    Attributes:
        doc_id: Stable id ``"{genre}:{index}"``.
        genre: One of :data:`GENRES`.
        title: Headword (dictionary genres) or first words (WordNet groups).
        text: The document text (ASCII-normalised, newlines kept).
        split: ``"train"`` or ``"heldout"``.
    """

    doc_id: str
    genre: str
    title: str
    text: str
    split: str


def split_of(doc_id: str, heldout_fraction: float = HELDOUT_FRACTION) -> str:
    """Return ``"heldout"`` or ``"train"`` from a sha256 hash of ``doc_id``."""
    h = int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big")
    return "heldout" if (h / 2**64) < heldout_fraction else "train"


def normalize_text(text: str) -> str:
    """NFC-normalise, map typographic punctuation to ASCII and drop other non-ASCII."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(_ASCII_MAP.get(c, c) for c in text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return text


def _reflow(lines: Sequence[str]) -> str:
    """Join wrapped lines into paragraphs; blank lines separate paragraphs."""
    paras: list[list[str]] = [[]]
    for line in lines:
        s = line.strip()
        if not s:
            if paras[-1]:
                paras.append([])
            continue
        paras[-1].append(s)
    return "\n".join(" ".join(p) for p in paras if p)


def _wordnet_docs(root: Path) -> list[tuple[str, str]]:
    sentences: list[str] = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = root / "usr/share/wordnet" / f"data.{pos}"
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue
            gloss = line.split("|", 1)[1]
            for ex in re.findall(r'"([^"]{12,})"', gloss):
                ex = normalize_text(ex.strip())
                if ex and ex[0].isalpha():
                    sentences.append(ex[0].upper() + ex[1:])
    docs = []
    n = WORDNET_SENTENCES_PER_DOC
    for i in range(0, len(sentences) - n + 1, n):
        group = sentences[i:i + n]
        text = " ".join(s if s[-1] in ".!?" else s + "." for s in group)
        docs.append((" ".join(group[0].split()[:3]), text))
    return docs


def _devil_docs(root: Path) -> list[tuple[str, str]]:
    raw = gzip.decompress((root / "usr/share/dictd/devil.dict.dz").read_bytes()).decode("latin-1")
    lines = raw.splitlines()
    head = re.compile(r"^([A-Z][A-Z' .-]*), (n|v|adj|adv|pp|pron|prep|x|interj|conj)\b")
    docs: list[tuple[str, str]] = []
    cur: list[str] = []
    title = ""
    for line in lines:
        m = head.match(line)
        if m:
            if cur and title:
                docs.append((title, cur))
            title, cur = m.group(1).title(), [line]
        elif title:
            cur.append(line)
    if cur and title:
        docs.append((title, cur))
    out = []
    for title, body in docs:
        text = normalize_text(_reflow(body)).replace("_", "")
        text = re.sub(r"\{([^}]*)\}", r"\1", text)
        if len(text) > 40:
            out.append((title, text))
    return out


def _jargon_docs(root: Path) -> list[tuple[str, str]]:
    raw = gzip.decompress(
        (root / "usr/share/doc/jargon-text/jargon.txt.gz").read_bytes()).decode("utf-8")
    lines = raw.splitlines()
    head = re.compile(r"^   :([^:]+):(.*)$")
    docs: list[tuple[str, list[str]]] = []
    title, cur = "", []
    for line in lines:
        if line.startswith("Appendix A."):
            break
        m = head.match(line)
        if m:
            if title:
                docs.append((title, cur))
            title, cur = m.group(1), []
        elif title:
            cur.append(line)
    if title:
        docs.append((title, cur))
    out = []
    for title, body in docs:
        text = normalize_text(_reflow(body))
        text = re.sub(r"\{([^}]*)\}", r"\1", text)
        text = re.sub(r"^\[[a-z ,]+\] ", "", text)
        title = normalize_text(title)
        if len(text) > 80:
            out.append((title, f"{title}: {text}"))
    return out


def extract_corpus(package_root: str | Path,
                   char_budget: dict[str, int] | None = None) -> list[Document]:
    """Extract the three genres from unpacked Debian packages.

    Args:
        package_root: Directory into which ``wordnet-base``, ``dict-devil`` and
            ``jargon-text`` were unpacked with ``dpkg-deb -x``.
        char_budget: Maximum characters of text per genre (defaults to
            :data:`GENRE_CHAR_BUDGET`); documents are taken in source order until the
            budget is spent.

    Returns:
        Documents of all genres with their split assigned.
    """
    root = Path(package_root)
    budget = dict(GENRE_CHAR_BUDGET if char_budget is None else char_budget)
    sources = {"wordnet": _wordnet_docs, "devil": _devil_docs, "jargon": _jargon_docs}
    docs: list[Document] = []
    for genre in GENRES:
        used = 0
        raw = sources[genre](root)
        # Spread a budget-limited selection over the whole source (not just its start).
        total = sum(len(t) for _, t in raw)
        keep_every = max(1.0, total / max(budget[genre], 1))
        acc = 0.0
        for i, (title, text) in enumerate(raw):
            acc += 1.0
            if acc < keep_every:
                continue
            acc -= keep_every
            if used + len(text) > budget[genre]:
                break
            used += len(text)
            doc_id = f"{genre}:{i}"
            docs.append(Document(doc_id, genre, title, text, split_of(doc_id)))
    return docs


def write_corpus(docs: Iterable[Document], path: str | Path) -> None:
    """Write documents as JSON lines (UTF-8, one document per line)."""
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(dataclasses.asdict(d), ensure_ascii=True) + "\n")


def load_corpus(path: str | Path) -> list[Document]:
    """Read a corpus file written by :func:`write_corpus`."""
    docs = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                docs.append(Document(**json.loads(line)))
    return docs


def default_corpus_path() -> Path:
    """Path of the committed corpus (``data/corpus/corpus.jsonl`` of the source tree)."""
    return Path(__file__).resolve().parents[2] / "data" / "corpus" / "corpus.jsonl"
