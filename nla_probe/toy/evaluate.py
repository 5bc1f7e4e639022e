"""Measured numbers of a toy pair on its held-out evaluation parquet (the model-card figures).

All FVE figures are ``fve_nrm = 1 - mse_nrm / B`` with ``mse_nrm`` computed at ``mse_scale =
sqrt(d)`` and ``B`` the denominator passed in (the build uses Var(v_nrm) of the *training*
activations). Decoding is greedy.

- ``round_trip``: AV decode of each held-out vector, parsed, read by the AR, scored against
  that vector.
- ``shuffled_null``: the same explanations scored against a derangement of the vectors
  (explanation of row i against vector of row perm[i], perm without fixed points, seed 0).
- ``gold_ceiling``: the labeler's gold explanation for each row through the AR.
- ``tag_rate``: share of decodes with a well-formed ``<explanation>...</explanation>``.
- ``quote_rate``: share of decodes whose explanation holds at least one delimited span of
  any registered delimiter family (double/single quotes, parentheses, ...).
- ``token_hit_rate``: share of decodes whose first paragraph equals the gold first paragraph
  (the quoted current and previous tokens all right).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A permutation of ``range(n)`` with no fixed point (n >= 2), from ``default_rng(seed)``."""
    perm = np.random.default_rng(seed).permutation(n)
    sigma = np.empty(n, dtype=np.int64)
    sigma[perm] = np.roll(perm, -1)  # sigma(perm[k]) = perm[k + 1] != perm[k]
    return sigma


def _summary(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    return {"mean": float(x.mean()), "se": float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0,
            "median": float(np.median(x))}


def evaluate_pair(av_dir: str | Path, ar_dir: str | Path, eval_parquet: str | Path, *,
                  denominator: float, max_new_tokens: int = 64, n: int | None = None,
                  batch_size: int = 64) -> dict:
    """Evaluate a pair on (up to ``n`` rows of) an evaluation parquet; see the module doc."""
    import polars as pl

    from nla_probe.nla.checkpoint import load_pair
    from nla_probe.text.spans import find_spans
    from nla_probe.toy.nla_train import explanation_payload

    frame = pl.read_parquet(eval_parquet)
    if n is not None:
        frame = frame.head(n)
    vec = np.asarray(frame["activation_vector"].to_numpy(), dtype=np.float32)
    t0 = time.perf_counter()
    pair = load_pair(av_dir, ar_dir)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    decodes = pair.verbalizer().verbalize(vec, max_new_tokens=max_new_tokens, batch_size=batch_size)
    t_dec = time.perf_counter() - t0
    texts = [d.explanation for d in decodes]
    rec = pair.reconstructor()
    t0 = time.perf_counter()
    rt = rec.score(texts, vec, denominator=denominator, on_overflow="truncate")
    t_score = time.perf_counter() - t0
    perm = derangement(len(texts))
    null = rec.score(texts, vec[perm], denominator=denominator, on_overflow="truncate")
    gold_texts = [explanation_payload(e) for e in frame["explanation"].to_list()]
    gold = rec.score(gold_texts, vec, denominator=denominator, on_overflow="truncate")
    tag_ok = np.array([d.tag_status == "ok" for d in decodes])
    quoted = np.array([len(find_spans(t, "all").spans) > 0 for t in texts])
    first_hit = np.array([t.split("\n")[0].strip() == g.split("\n")[0].strip()
                          for t, g in zip(texts, gold_texts)])
    genres = frame["genre"].to_list() if "genre" in frame.columns else ["all"] * len(texts)
    fve = rt["fve_nrm"].to_numpy()
    by_genre = {g: _summary(fve[[i for i, x in enumerate(genres) if x == g]])
                for g in sorted(set(genres))}
    return {
        "n": len(texts),
        "denominator": float(denominator),
        "round_trip_fve_nrm": _summary(fve),
        "round_trip_cos": _summary(rt["cos"].to_numpy()),
        "round_trip_fve_nrm_by_genre": by_genre,
        "shuffled_null_fve_nrm": _summary(null["fve_nrm"].to_numpy()),
        "gold_ceiling_fve_nrm": _summary(gold["fve_nrm"].to_numpy()),
        "tag_rate": float(tag_ok.mean()),
        "quote_rate": float(quoted.mean()),
        "token_hit_rate": float(first_hit.mean()),
        "fve_when_token_hit": float(fve[first_hit].mean()) if first_hit.any() else None,
        "fve_when_token_miss": float(fve[~first_hit].mean()) if (~first_hit).any() else None,
        "mean_decode_tokens": float(np.mean([d.n_tokens for d in decodes])),
        "seconds": {"load": t_load, "decode": t_dec, "score": t_score},
        "examples": [{"gold": g, "decode": t} for g, t in list(zip(gold_texts, texts))[:5]],
    }
