"""The committed toy corpus: size, genres, licenses and a document-level split."""

import collections
import hashlib

from nla_probe.toy.corpus import GENRES, default_corpus_path, load_corpus, split_of


def test_committed_corpus_size_genres_and_notices():
    path = default_corpus_path()
    assert path.stat().st_size <= 3_000_000
    docs = load_corpus(path)
    counts = collections.Counter((d.genre, d.split) for d in docs)
    for g in GENRES:
        assert counts[(g, "train")] > 100 and counts[(g, "heldout")] > 20
    for name in ("LICENSE.wordnet", "LICENSE.devils-dictionary", "LICENSE.jargon-file"):
        assert (path.parent / name).stat().st_size > 200
    assert len({d.doc_id for d in docs}) == len(docs)
    assert all(d.text.isascii() for d in docs)


def test_split_is_by_document_hash():
    docs = load_corpus(default_corpus_path())
    for d in docs[::97]:
        h = int.from_bytes(hashlib.sha256(d.doc_id.encode()).digest()[:8], "big") / 2**64
        assert d.split == ("heldout" if h < 0.1 else "train") == split_of(d.doc_id)
    share = sum(d.split == "heldout" for d in docs) / len(docs)
    assert 0.07 < share < 0.13
