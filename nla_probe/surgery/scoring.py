"""Explanation surgery: score edited explanations through the AR, and attribute FVE to their parts.

The AV's explanation is edited by a :mod:`~nla_probe.surgery` transform *after* generation, and
the AR reconstructs the activation from the edited text.  Edited texts are out of the AR's training
distribution, so every FVE measured on them is a lower bound on what the kept content could carry
(column ``ar_ood`` is ``True`` on those rows).

Definitions (per row; ``B`` = the FVE denominator, Var(v_nrm) of the training activations):

* ``mse_nrm`` — mean squared error of reconstruction and gold, both scaled to the AR's
  ``mse_scale`` (√d on released pairs); ``= 2 (1 − cos)``.
* ``fve_nrm = 1 − mse_nrm / B``; averaging it over rows gives the set-level FVE ``1 − mean(mse)/B``.
* ``n_chars`` — Unicode code points of the text; ``n_tokens`` — AR tokenizer tokens of the text
  alone (``add_special_tokens=False``, no template); ``n_spans`` / ``span_char_share`` —
  outermost spans of ``span_families`` in the (edited) text and the share of its characters they
  cover, marks included (null for an empty text).

:func:`score_variants` scores many variants of many explanations in one AR pass: identical texts
are reconstructed once and the rest goes through the AR in length-bucketed batches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nla_probe.errors import InputError
from nla_probe.surgery.base import Transform, from_spec
from nla_probe.surgery.functional import remove_ranges
from nla_probe.surgery.transforms import Identity, ProseOnly, ReplaceSpans, SpansOnly, SpansOnlyBare
from nla_probe.text.spans import outermost_raw, resolve_families, sentence_bounds

#: Column order of :func:`score_variants`.
SCORE_COLUMNS = ("sample_id", "variant", "spec", "text", "n_chars", "n_tokens", "n_spans", "span_char_share",
                 "mse_nrm", "cos", "fve_nrm", "ar_ood", "overflow", "denominator")
#: Column order of :func:`span_attribution`.
ATTRIBUTION_COLUMNS = ("sample_id", "unit", "index", "start", "end", "family", "part", "n_chars",
                       "fve_full", "fve_without", "delta_fve", "mse_full", "mse_without", "denominator")


def redaction_grid(families: str | Sequence[str] = "quotes", *, junk: str = "tokens",
                   seed: int = 0) -> dict[str, Transform]:
    """The post-hoc redaction grid (where does the reconstruction signal live?) as ``{name: transform}``.

    ``baseline`` (unedited), ``spans_only`` (outermost spans with their marks, space-joined),
    ``spans_only_bare`` (the same span text without marks), ``prose_only`` (spans deleted),
    ``redacted`` (span contents -> ``REDACTED``, marks kept) and ``junk`` (span contents -> random
    AR-vocabulary tokens of at least the same character length, ``junk="tokens"``, or random English
    words of matched lengths, ``junk="words"``; seeded).

    Args:
        families: delimiter families that make spans (default double and single quotes).
        junk: ``"tokens"`` or ``"words"``.
        seed: seed of the junk draws.
    """
    if junk not in ("tokens", "words"):
        raise InputError(f"redaction_grid: junk must be 'tokens' or 'words', found {junk!r}")
    return {
        "baseline": Identity(),
        "spans_only": SpansOnly(families),
        "spans_only_bare": SpansOnlyBare(families),
        "prose_only": ProseOnly(families),
        "redacted": ReplaceSpans("redacted", families),
        "junk": ReplaceSpans(junk, families, seed=seed),
    }


def resolve_variants(variants: Any) -> list[tuple[str, Transform]]:
    """Normalize ``variants`` to ``[(name, transform)]``.

    Accepts a mapping ``name -> transform or spec dict``, or a sequence of transforms, spec dicts or
    ``(name, transform)`` pairs.  Unnamed variants are named by :meth:`Transform.describe`, with
    ``-2``, ``-3``… appended on repeats; a repeated explicit name raises.
    """
    if isinstance(variants, Transform):
        variants = [variants]
    if isinstance(variants, Mapping):
        items = [(k, v) for k, v in variants.items()]
    elif isinstance(variants, Sequence) and not isinstance(variants, str):
        items = []
        for v in variants:
            if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str):
                items.append(v)
            else:
                items.append((None, v))
    else:
        raise InputError(f"variants: expected a dict name -> transform or a list of transforms, found {variants!r}")
    if not items:
        raise InputError("variants: expected at least one variant, found none")
    out: list[tuple[str, Transform]] = []
    seen: dict[str, int] = {}
    for name, v in items:
        t = from_spec(v) if isinstance(v, Mapping) else v
        if not isinstance(t, Transform):
            raise InputError(f"variants: {v!r} is neither a Transform nor a spec dict")
        if name is None:
            base = t.describe()
            seen[base] = seen.get(base, 0) + 1
            name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        elif not isinstance(name, str) or not name:
            raise InputError(f"variants: names must be non-empty strings, found {name!r}")
        if any(name == n for n, _ in out):
            raise InputError(f"variants: name {name!r} is used twice")
        out.append((name, t))
    return out


def _denominator(denominator: Any) -> float:
    from nla_probe.analysis.metrics import get_denominator

    if isinstance(denominator, str):
        return get_denominator(denominator).value
    if isinstance(denominator, bool) or not isinstance(denominator, (int, float)) \
            or not math.isfinite(denominator) or denominator <= 0:
        raise InputError(f"denominator: expected a positive finite number or a registered name, found {denominator!r}")
    return float(denominator)


def _inputs(reconstructor: Any, explanations: Any, vectors: Any, sample_ids: Any) -> tuple[list[str], np.ndarray, list]:
    from nla_probe.nla.injection import check_vectors

    if isinstance(explanations, str) or not isinstance(explanations, Sequence):
        raise InputError(f"explanations: expected a list of strings, found {type(explanations).__name__}")
    texts = list(explanations)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InputError(f"explanations: rows {bad[:20]} are not strings")
    gold = check_vectors(vectors, reconstructor.contract.d_model, "vectors").numpy()
    if gold.shape[0] != len(texts):
        raise InputError(f"explanations and vectors must have the same length, found {len(texts)} and {gold.shape[0]}")
    ids = list(range(len(texts))) if sample_ids is None else list(sample_ids)
    if len(ids) != len(texts):
        raise InputError(f"sample_ids: expected {len(texts)} ids (one per explanation), found {len(ids)}")
    return texts, gold, ids


def _reconstruct_unique(reconstructor: Any, texts: list[str], *, batch_size: int, on_overflow: str,
                        progress: bool) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """Reconstruct each distinct text once (the AR sorts them by token length and batches them).

    Returns ``(rows, unique, vectors, overflow)``: ``unique[rows[i]] == texts[i]``; ``vectors`` and
    ``overflow`` are per unique text.
    """
    index: dict[str, int] = {}
    rows = np.fromiter((index.setdefault(t, len(index)) for t in texts), dtype=np.int64, count=len(texts))
    unique = list(index)
    rec = reconstructor.reconstruct_detailed(unique, batch_size=batch_size, on_overflow=on_overflow,
                                             progress=progress)
    return rows, unique, rec.vectors, list(rec.overflow)


def score_variants(reconstructor: Any, explanations: Sequence[str], vectors: Any, variants: Any, *,
                   denominator: float | str, sample_ids: Sequence[Any] | None = None, batch_size: int = 32,
                   span_families: str | Sequence[str] = "quotes", on_overflow: str = "error",
                   progress: bool = False) -> Any:
    """Score every variant of every explanation against its vector through the AR.

    Args:
        reconstructor: a :class:`~nla_probe.nla.reconstructor.Reconstructor` (``load_ar(dir)``).
        explanations: the unedited explanations, one per vector.
        vectors: ``[n, d]`` gold activations (raw; only directions matter).
        variants: ``{name: transform or spec}`` or a list (see :func:`resolve_variants`), e.g.
            :func:`redaction_grid`.  Transforms that need the AR tokenizer (``replace_spans(with=
            "tokens")``, ``keep_first_tokens(unit="tokens")``) are bound to it here.
        denominator: ``B`` of ``fve_nrm`` — a number or a registered name (``metrics.DENOMINATORS``).
        sample_ids: one id per explanation (default ``0..n-1``).
        batch_size: AR batch size; texts are sorted by token length before batching.
        span_families: families counted in ``n_spans`` / ``span_char_share``.
        on_overflow: AR policy for texts above its context (``"error"``, ``"truncate"``, ``"nan"``).
        progress: show a progress bar over AR batches.

    Returns:
        A polars frame with one row per variant × sample (variant-major, in input order) and the
        columns :data:`SCORE_COLUMNS`: ``variant`` (name), ``spec`` (JSON of the unbound transform's
        spec), ``ar_ood`` (``True`` when the text differs from the unedited explanation),
        ``overflow`` (the AR's per-row action), ``denominator`` (``B``); the metrics are defined in
        the module docstring.
    """
    import polars as pl

    from nla_probe.analysis.metrics import cosine, fve_nrm, mse_nrm

    b = _denominator(denominator)
    resolve_families(span_families)  # unknown names fail before any AR work
    base, gold, ids = _inputs(reconstructor, explanations, vectors, sample_ids)
    resolved = resolve_variants(variants)
    tok = reconstructor.tokenizer
    n = len(base)
    names, specs, texts = [], [], []
    for name, t in resolved:
        bound = t.bind(tokenizer=tok)
        names.extend([name] * n)
        specs.extend([json.dumps(t.to_spec(), ensure_ascii=False)] * n)
        texts.extend(bound(x) for x in base)
    rows, unique, pred, overflow = _reconstruct_unique(reconstructor, texts, batch_size=batch_size,
                                                       on_overflow=on_overflow, progress=progress)
    tok_counts = [len(x) for x in tok(unique, add_special_tokens=False)["input_ids"]] if unique else []
    span_stats = []
    for t in unique:
        spans = outermost_raw(t, span_families)
        span_stats.append((len(spans), sum(s[1] - s[0] for s in spans) / len(t) if t else None))
    gold_rows = np.tile(gold, (len(resolved), 1))
    mse = mse_nrm(pred[rows], gold_rows, reconstructor.contract.mse_scale)
    return pl.DataFrame({
        "sample_id": ids * len(resolved),
        "variant": names,
        "spec": specs,
        "text": texts,
        "n_chars": [len(t) for t in texts],
        "n_tokens": [tok_counts[r] for r in rows],
        "n_spans": [span_stats[r][0] for r in rows],
        "span_char_share": [span_stats[r][1] for r in rows],
        "mse_nrm": mse,
        "cos": cosine(pred[rows], gold_rows),
        "fve_nrm": fve_nrm(mse, b),
        "ar_ood": [t != base[i % n] for i, t in enumerate(texts)],
        "overflow": [overflow[r] for r in rows],
        "denominator": [b] * len(texts),
    }).select(SCORE_COLUMNS)


def summarize_variants(frame: Any) -> Any:
    """Per-variant means of a :func:`score_variants` frame (set-level FVE = ``1 − mean(mse)/B``).

    Columns: ``variant``, ``n``, ``fve_nrm``, ``cos``, ``mse_nrm``, ``n_chars``, ``n_spans``,
    ``span_char_share``, ``share_edited`` (fraction of rows whose text changed), in first-seen order.
    """
    import polars as pl

    return frame.group_by("variant", maintain_order=True).agg(
        pl.len().alias("n"), pl.col("fve_nrm").mean(), pl.col("cos").mean(), pl.col("mse_nrm").mean(),
        pl.col("n_chars").mean(), pl.col("n_spans").mean(), pl.col("span_char_share").mean(),
        pl.col("ar_ood").mean().alias("share_edited"))


def _parts(text: str, families: Any, units: Sequence[str]) -> list[tuple[str, int, int, int, str | None, str]]:
    """``(unit, index, start, end, family, edited text)`` for each removable part of ``text``.

    A span is removed with its marks and nothing else; a sentence together with the whitespace
    that follows it (the last sentence: with the whitespace before it).
    """
    out = []
    if "span" in units:
        for k, t in enumerate(outermost_raw(text, families)):
            out.append(("span", k, t[0], t[1], t[4], remove_ranges(text, [(t[0], t[1])])))
    if "sentence" in units:
        bounds = sentence_bounds(text, families)
        for k, (a, b) in enumerate(bounds):
            if k + 1 < len(bounds):
                cut = (a, bounds[k + 1][0])
            elif k > 0:
                cut = (bounds[k - 1][1], b)
            else:
                cut = (a, b)
            out.append(("sentence", k, a, b, None, remove_ranges(text, [cut])))
    return out


ATTRIBUTION_UNITS = ("span", "sentence")


def span_attribution(reconstructor: Any, explanations: Sequence[str], vectors: Any, *, denominator: float | str,
                     families: str | Sequence[str] = "quotes", units: Sequence[str] = ATTRIBUTION_UNITS,
                     sample_ids: Sequence[Any] | None = None, batch_size: int = 32,
                     on_overflow: str = "error", progress: bool = False) -> Any:
    """Leave-one-out attribution: the FVE each span (and each sentence) carries.

    For every explanation, each outermost span of ``families`` (marks included) and each sentence
    (:func:`~nla_probe.text.spans.sentence_bounds`, with its trailing whitespace) is deleted in turn and
    the rest is scored through the AR; all texts of all explanations go through one bucketed pass.

    Returns:
        A polars frame with one row per part and the columns :data:`ATTRIBUTION_COLUMNS`:
        ``unit`` (``"span"``/``"sentence"``), ``index`` (text order within its unit), ``start``/
        ``end`` (character offsets of the part in the explanation), ``family`` (spans only),
        ``part`` (its text), ``fve_full`` / ``fve_without`` (FVE of the whole explanation / with the
        part removed), ``delta_fve = fve_full − fve_without`` (positive: removing the part loses
        reconstruction).  Edited texts are AR-out-of-distribution, so deltas mix the part's content
        with the AR's reaction to an unusual text.
    """
    import polars as pl

    from nla_probe.analysis.metrics import mse_nrm

    bad = [u for u in units if u not in ATTRIBUTION_UNITS]
    if isinstance(units, str) or bad or not units:
        raise InputError(f"units: expected a non-empty list from {list(ATTRIBUTION_UNITS)}, found {units!r}")
    resolve_families(families)  # unknown names fail before any AR work
    b = _denominator(denominator)
    base, gold, ids = _inputs(reconstructor, explanations, vectors, sample_ids)
    texts = list(base)
    owner = list(range(len(base)))
    meta = []
    for i, text in enumerate(base):
        for unit, k, a, e, fam, edited in _parts(text, families, units):
            meta.append((i, unit, k, a, e, fam))
            texts.append(edited)
            owner.append(i)
    rows, _, pred, _ = _reconstruct_unique(reconstructor, texts, batch_size=batch_size, on_overflow=on_overflow,
                                        progress=progress)
    mse = mse_nrm(pred[rows], gold[owner], reconstructor.contract.mse_scale)
    full = mse[: len(base)]
    without = mse[len(base):]
    cols: dict[str, list] = {c: [] for c in ATTRIBUTION_COLUMNS}
    for (i, unit, k, a, e, fam), m in zip(meta, without):
        for c, v in (("sample_id", ids[i]), ("unit", unit), ("index", k), ("start", a), ("end", e),
                     ("family", fam), ("part", base[i][a:e]), ("n_chars", e - a),
                     ("fve_full", 1 - full[i] / b), ("fve_without", 1 - m / b),
                     ("delta_fve", (m - full[i]) / b), ("mse_full", float(full[i])), ("mse_without", float(m)),
                     ("denominator", b)):
            cols[c].append(v)
    schema = {"sample_id": None, "unit": pl.Utf8, "index": pl.Int64, "start": pl.Int64, "end": pl.Int64,
              "family": pl.Utf8, "part": pl.Utf8, "n_chars": pl.Int64, "fve_full": pl.Float64,
              "fve_without": pl.Float64, "delta_fve": pl.Float64, "mse_full": pl.Float64,
              "mse_without": pl.Float64, "denominator": pl.Float64}
    return pl.DataFrame({c: pl.Series(c, v, dtype=schema[c]) if schema[c] else pl.Series(c, v)
                         for c, v in cols.items()})
