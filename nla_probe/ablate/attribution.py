"""Leave-one-out span attribution for rows of an ablation run, stored beside its results.

For a capped number of activations per experiment, the baseline condition's explanation is
passed to :func:`nla_probe.surgery.scoring.span_attribution`: each outermost span of the
experiment's delimiter families (``params.families``, default ``["quotes"]``) and each sentence is
deleted in turn and the rest is reconstructed by the AR; ``delta_fve = fve_full − fve_without``
(positive: removing the part loses reconstruction).  Edited texts are out of the AR's training
distribution, so the deltas mix the part's content with the AR's reaction to an unusual text.

Which rows (:func:`select_rows`, at most ``max_rows`` per experiment): first, in turns over the
non-baseline conditions, each condition's rows with the largest FVE drop against the baseline
(``fve_nrm(baseline) − fve_nrm(condition)``, largest first), until half the cap is used; then
the remaining rows in ``sample_id`` order.  So the row whose FVE dropped most under each
condition is always attributed.

Only kinds whose baseline scores the AV's explanation of the stored activation with the run's AR
are attributed (:data:`ATTRIBUTABLE_KINDS`).  The rows go to ``results/attribution.parquet``
(columns :data:`nla_probe.surgery.scoring.ATTRIBUTION_COLUMNS` plus ``experiment``, ``condition``,
``explanation``, ``families``, ``reason``); rows already there for the same explanation,
families and denominator are reused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nla_probe.errors import InputError

ATTRIBUTION_NAME = "attribution.parquet"
#: Default cap on attributed activations per experiment.
DEFAULT_ROWS = 100
#: Kinds whose baseline rows are (explanation of the stored vector, scored by the run's AR).
ATTRIBUTABLE_KINDS = ("quote_ban", "roundtrip", "redaction", "copying")


def attribution_path(root: str | Path) -> Path:
    return Path(root) / "results" / ATTRIBUTION_NAME


def load_attribution(root: str | Path) -> Any:
    """The stored attribution frame of a run directory, or None when the run has none."""
    import polars as pl

    path = attribution_path(root)
    if not path.is_file():
        return None
    try:
        return pl.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - any read failure is reported the same way
        raise InputError(f"{path}: unreadable attribution file ({e})") from None


def families_of(spec: Any) -> list[str]:
    """The delimiter families whose spans are attributed for ``spec``."""
    fams = spec.params.get("families") if isinstance(spec.params, dict) else None
    return list(fams) if fams else ["quotes"]


def select_rows(frame: Any, baseline: str, max_rows: int) -> list[tuple[int, str]]:
    """``[(sample_id, reason)]`` of the rows to attribute (rule in the module doc).

    ``frame`` holds ``condition, sample_id, fve_nrm``; ``reason`` is ``"largest drop under <cond>"``
    or ``"first rows"``.
    """
    import polars as pl

    if not isinstance(max_rows, int) or max_rows < 0:
        raise InputError(f"max_rows: expected an integer >= 0, found {max_rows!r}")
    base = frame.filter(pl.col("condition") == baseline).select("sample_id", pl.col("fve_nrm").alias("_b"))
    ids = sorted(base["sample_id"].to_list())
    if max_rows == 0 or not ids:
        return []
    others = [c for c in dict.fromkeys(frame["condition"].to_list()) if c != baseline]
    ranked = []
    for cond in others:
        d = (frame.filter(pl.col("condition") == cond).join(base, on="sample_id")
             .with_columns((pl.col("_b") - pl.col("fve_nrm")).alias("_drop"))
             .filter(pl.col("_drop").is_not_nan() & pl.col("_drop").is_not_null())
             .sort(["_drop", "sample_id"], descending=[True, False]))
        ranked.append((cond, d["sample_id"].to_list()))
    chosen: dict[int, str] = {}
    half = max_rows // 2 if others else 0
    pos = [0] * len(ranked)
    while len(chosen) < half and any(p < len(r[1]) for p, r in zip(pos, ranked)):
        for k, (cond, order) in enumerate(ranked):
            while pos[k] < len(order) and order[pos[k]] in chosen:
                pos[k] += 1
            if pos[k] < len(order) and len(chosen) < half:
                chosen[order[pos[k]]] = f"largest drop under {cond}"
                pos[k] += 1
    for sid in ids:
        if len(chosen) >= max_rows:
            break
        chosen.setdefault(sid, "first rows")
    return list(chosen.items())


def attribute_run(result: Any, reconstructor: Any, vectors_of: Callable[[Sequence[int]], np.ndarray], *,
                  max_rows: int = DEFAULT_ROWS, batch_size: int = 32, progress: bool = False) -> Path | None:
    """Attribute up to ``max_rows`` activations per experiment of ``result`` and store the rows.

    Args:
        result: an :class:`~nla_probe.ablate.result.AblationResult`.
        reconstructor: the run's AR (:class:`~nla_probe.nla.reconstructor.Reconstructor`), or a
            function without arguments returning it (called only when some row is not stored yet).
        vectors_of: ``sample_ids -> [n, d]`` gold activations (the rows ``sample_ids`` of the data file).
        max_rows: cap per experiment (0: nothing is computed, an existing file is left as is).
        batch_size: AR batch size.
        progress: show a progress bar over AR batches.

    Returns:
        The path of ``results/attribution.parquet``, or None when no experiment is attributable.
    """
    import polars as pl

    from nla_probe.surgery.scoring import ATTRIBUTION_COLUMNS, span_attribution

    if not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 0:
        raise InputError(f"attribution rows: expected an integer >= 0, found {max_rows!r}")
    if max_rows == 0:
        return None
    old = load_attribution(result.root)
    frames: list[Any] = []  # rows of this call, reused across experiments (same explanation, same vector)
    for name in result.experiments:
        spec = result.spec(name)
        if spec.kind not in ATTRIBUTABLE_KINDS:
            continue
        fams = families_of(spec)
        fam_key = ",".join(fams)
        denom = result._denominator(name)[0]
        f = result.scan(name).select("condition", "sample_id", "fve_nrm", "explanation", "text").collect()
        picks = select_rows(f.select("condition", "sample_id", "fve_nrm"), spec.baseline, max_rows)
        if not picks:
            continue
        base = f.filter((pl.col("condition") == spec.baseline) & (pl.col("text") == pl.col("explanation")))
        expl = dict(zip(base["sample_id"].to_list(), base["explanation"].to_list()))
        picks = [(s, why) for s, why in picks if s in expl]
        pool = [x for x in [old, *frames] if x is not None and x.height]
        reuse = None
        if pool:
            reuse = pl.concat([x.select(pool[-1].columns) for x in pool], how="vertical_relaxed").filter(
                (pl.col("families") == fam_key) & (pl.col("denominator") == denom))
        todo, kept = [], []
        for sid, why in picks:
            hit = None
            if reuse is not None:
                hit = reuse.filter((pl.col("sample_id") == sid) & (pl.col("explanation") == expl[sid]))
            if hit is not None and hit.height:
                kept.append(hit.unique(subset=["unit", "index"], keep="first").sort("unit", "index")
                            .with_columns(pl.lit(name).alias("experiment"), pl.lit(spec.baseline).alias("condition"),
                                          pl.lit(why).alias("reason")))
            else:
                todo.append((sid, why))
        if todo:
            ids = [s for s, _ in todo]
            if callable(reconstructor) and not hasattr(reconstructor, "reconstruct_detailed"):
                reconstructor = reconstructor()
            got = span_attribution(reconstructor, [expl[s] for s in ids], vectors_of(ids), denominator=denom,
                                   families=fams, sample_ids=ids, batch_size=batch_size,
                                   on_overflow=spec.metrics.on_overflow, progress=progress)
            why = dict(todo)
            got = got.with_columns(pl.col("sample_id").cast(pl.Int64))
            kept.append(got.with_columns(
                pl.lit(name).alias("experiment"), pl.lit(spec.baseline).alias("condition"),
                pl.col("sample_id").replace_strict(expl, return_dtype=pl.Utf8).alias("explanation"),
                pl.lit(fam_key).alias("families"),
                pl.col("sample_id").replace_strict(why, return_dtype=pl.Utf8).alias("reason")))
        cols = ["experiment", "condition", *ATTRIBUTION_COLUMNS, "explanation", "families", "reason"]
        frames += [k.with_columns(pl.col("sample_id").cast(pl.Int64)).select(cols) for k in kept]
    if not frames:
        return None
    path = attribution_path(result.root)
    out = pl.concat(frames, how="vertical_relaxed")
    tmp = path.with_suffix(".tmp")
    out.write_parquet(tmp)
    tmp.replace(path)
    return path


__all__ = ["ATTRIBUTABLE_KINDS", "ATTRIBUTION_NAME", "DEFAULT_ROWS", "attribute_run", "attribution_path",
           "families_of", "load_attribution", "select_rows"]
