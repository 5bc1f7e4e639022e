"""The result of an ablation run: tidy frame, statistics, figures, report, save/load and merge.

:class:`AblationResult` reads an output directory written by :func:`nla_probe.ablate.engine.ablate`
(``results/<experiment>.parquet`` + ``results/info.json``).  Statistics (per experiment, on the
spec's primary metric, default ``fve_nrm``):

* per condition: mean with a clustered percentile-bootstrap CI over documents
  (:func:`nla_probe.analysis.stats.summarize`; ``n`` samples, ``n_clusters`` documents);
* per non-baseline condition: the paired difference condition − baseline on the same samples
  (``sample_id``), its clustered CI, and a Wilcoxon signed-rank p value
  (:func:`nla_probe.analysis.stats.compare_to_baseline`); ``p_bh`` is Benjamini–Hochberg adjusted across
  every test of the result (every experiment), as in the report.

Rows whose metric is NaN (AR overflow policy ``"nan"``) are left out and ``n`` says how many remain.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nla_probe.ablate.store import write_json_atomic
from nla_probe.errors import InputError, NLAProbeError

#: Columns every kind writes (name -> polars dtype), documented in ``docs/ablations.md``.
BASE_COLUMNS: dict[str, str] = {
    "experiment": "Utf8", "condition": "Utf8", "sample_id": "Int64", "doc_id": "Utf8", "position": "Int64",
    "explanation": "Utf8", "text": "Utf8", "tag_status": "Utf8", "n_tokens": "Int64", "finish_reason": "Utf8",
    "ar_tokens": "Int64", "overflow": "Utf8", "mse_nrm": "Float64", "cos": "Float64", "fve_nrm": "Float64",
}

INFO_NAME = "info.json"
_SUMMARY_EXTRA = {"cos": "cos", "n_tokens": "n_tokens", "ar_tokens": "ar_tokens"}


def result_columns(kind: Any) -> dict[str, str]:
    """Result columns of a kind: :data:`BASE_COLUMNS` plus the kind's own."""

    clash = set(BASE_COLUMNS) & set(kind.columns)
    if clash:
        raise NLAProbeError(f"experiment kind {kind.name!r} redeclares base columns {sorted(clash)}")
    return {**BASE_COLUMNS, **kind.columns}


class AblationResult:
    """Results of one ablation run (one or more experiments) stored under ``root``.

    Attributes:
        root: the output directory.
        info: provenance (specs, checkpoint identities, data, denominators, seeds, settings).
    """

    def __init__(self, root: str | Path, info: dict):
        self.root = Path(root)
        self.info = info
        self._summaries: dict[str, Any] = {}
        self._frame = None

    # ------------------------------------------------------------------------------------ loading

    @classmethod
    def load(cls, root: str | Path) -> AblationResult:
        """Open an output directory (or a copy written by :meth:`save`)."""
        root = Path(root)
        path = root / "results" / INFO_NAME
        if not path.is_file():
            raise InputError(f"{root}: not an ablation output directory (no results/{INFO_NAME}); "
                             "run `nla-probe ablate --out DIR` first")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: unreadable ({e})") from None
        if info.get("format") != "nla-probe-ablation":
            raise InputError(f"{path}: field 'format': expected 'nla-probe-ablation', found {info.get('format')!r}")
        for name in info.get("experiments", []):
            if not (root / "results" / f"{name}.parquet").is_file():
                raise InputError(f"{root}: results/{name}.parquet is missing (listed in {INFO_NAME})")
        return cls(root, info)

    @property
    def experiments(self) -> list[str]:
        return list(self.info["experiments"])

    def spec(self, experiment: str) -> Any:
        """The :class:`~nla_probe.ablate.spec.Spec` an experiment ran with."""
        from nla_probe.ablate.spec import Spec

        self._check(experiment)
        return Spec.from_dict(self.info["specs"][experiment])

    def _check(self, experiment: str) -> None:
        if experiment not in self.experiments:
            from nla_probe.errors import UnknownNameError

            raise UnknownNameError("experiment", experiment, self.experiments)

    def path(self, experiment: str) -> Path:
        self._check(experiment)
        return self.root / "results" / f"{experiment}.parquet"

    def scan(self, experiment: str | None = None) -> Any:
        """A polars LazyFrame over the results (one experiment or all, diagonally concatenated)."""
        import polars as pl

        names = [experiment] if experiment else self.experiments
        frames = [pl.scan_parquet(self.path(n)) for n in names]
        return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")

    @property
    def frame(self) -> Any:
        """The tidy frame: one row per activation x condition x experiment (columns: docs/ablations.md)."""
        if self._frame is None:
            self._frame = self.scan().collect()
        return self._frame

    # ------------------------------------------------------------------------------------ statistics

    def _stats_frame(self, experiment: str, metric: str) -> Any:
        import polars as pl

        from nla_probe.ablate.kinds import get_experiment

        kind = get_experiment(self.spec(experiment).kind)
        cols = ["condition", "sample_id", "doc_id", metric, "tag_status", *_SUMMARY_EXTRA.values(),
                *kind.summary_means.values()]
        return self.scan(experiment).select(list(dict.fromkeys(cols))).collect().with_columns(
            pl.col(metric).cast(pl.Float64))

    def _summary_one(self, experiment: str) -> Any:
        import warnings

        import polars as pl

        from nla_probe.ablate.kinds import get_experiment
        from nla_probe.analysis.stats import compare_to_baseline, summarize

        spec = self.spec(experiment)
        m = spec.metrics
        kind = get_experiment(spec.kind)
        f = self._stats_frame(experiment, m.primary)
        if f.height == 0:
            return pl.DataFrame({"experiment": [], "condition": []}, schema={"experiment": pl.Utf8,
                                                                            "condition": pl.Utf8})
        f = f.with_columns(pl.col(m.primary).fill_nan(None)).drop_nulls(m.primary)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="bootstrap over only")
            s = summarize(f, m.primary, by=["condition"], cluster="doc_id", n_boot=m.n_boot, level=m.level,
                          seed=spec.seed)
            conds = f["condition"].unique().to_list()
            c = None
            if len(conds) > 1 and spec.baseline in conds:
                c = compare_to_baseline(f, m.primary, "condition", spec.baseline, pair_on=["sample_id"],
                                        cluster="doc_id", n_boot=m.n_boot, level=m.level, seed=spec.seed,
                                        wilcoxon_unit=m.wilcoxon_unit)
        extra = {**_SUMMARY_EXTRA, **kind.summary_means}
        means = f.group_by("condition", maintain_order=True).agg(
            [pl.col(col).cast(pl.Float64).mean().alias(name) for name, col in extra.items()]
            + [(pl.col("tag_status") == "ok").mean().alias("tag_ok")])
        out = s.join(means, on="condition", how="left")
        if c is not None:
            c = c.select("condition", pl.col("diff"), pl.col("ci_low").alias("diff_low"),
                         pl.col("ci_high").alias("diff_high"), pl.col("n").alias("n_pairs"), "n_zero", "p")
            out = out.join(c, on="condition", how="left")
        else:
            out = out.with_columns(*(pl.lit(None, dtype=pl.Float64).alias(k) for k in ("diff", "diff_low",
                                                                                       "diff_high", "p")),
                                   *(pl.lit(None, dtype=pl.Int64).alias(k) for k in ("n_pairs", "n_zero")))
        order = [c.name for c in spec.conditions]
        out = out.with_columns(pl.col("condition").replace_strict(
            {n: i for i, n in enumerate(order)}, default=len(order), return_dtype=pl.Int64).alias("_o")
        ).sort("_o").drop("_o")
        return out.select(pl.lit(experiment).alias("experiment"), pl.lit(m.primary).alias("metric"), pl.all())

    def summary(self, experiment: str | None = None) -> Any:
        """Per-condition statistics (one experiment or all), with ``p_bh`` adjusted over all tests.

        Columns: ``experiment, metric, condition, estimate, ci_low, ci_high, n, n_clusters`` (primary
        metric mean and its clustered CI), kind-specific means, ``cos, n_tokens, ar_tokens, tag_ok``
        (means; ``tag_ok`` = share of decodes with both explanation tags), ``diff, diff_low,
        diff_high, n_pairs, n_zero, p`` (paired comparison with the baseline; null on the baseline
        row) and ``p_bh``.
        """
        import polars as pl

        from nla_probe.analysis.stats import bh_adjust

        for name in self.experiments:
            if name not in self._summaries:
                self._summaries[name] = self._summary_one(name)
        frames = [self._summaries[n] for n in self.experiments if self._summaries[n].height]
        if not frames:
            return pl.DataFrame()
        allp = pl.concat(frames, how="diagonal_relaxed")
        p = allp["p"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        allp = allp.with_columns(pl.Series("p_bh", bh_adjust(p), dtype=pl.Float64).fill_nan(None))
        if experiment is None:
            return allp
        self._check(experiment)
        return allp.filter(pl.col("experiment") == experiment).select([*self._summaries[experiment].columns, "p_bh"])

    # ------------------------------------------------------------------------------------ figures

    def _denominator(self, experiment: str) -> tuple[float, str]:
        d = self.info["denominators"][experiment]
        return float(d["value"]), str(d["source"])

    def plot(self, experiment: str | None = None, what: str = "metric") -> Any:
        """A plotnine figure: ``what="metric"`` (mean per condition with CIs) or ``"diff"``
        (paired difference to the baseline with CIs)."""
        from nla_probe.ablate.plots import FVE_REFERENCE, condition_bars

        experiment = experiment or self.experiments[0]
        if what not in ("metric", "diff"):
            raise InputError(f"what: expected 'metric' or 'diff', found {what!r}")
        s = self.summary(experiment)
        if s.height == 0:
            raise InputError(f"experiment {experiment!r} has no rows to plot")
        spec = self.spec(experiment)
        metric = spec.metrics.primary
        label = metric
        if metric == "fve_nrm":
            label = f"fve_nrm (Var(v_nrm) = {self._denominator(experiment)[0]:.4g})"
        pct = f"{spec.metrics.level * 100:g}%"
        if what == "metric":
            return condition_bars(s, x="condition", title=f"{experiment}: {metric} by condition ({pct} CI)",
                                  ylabel=label,
                                  reference_lines=FVE_REFERENCE if metric == "fve_nrm" else {})
        d = s.filter(s["diff"].is_not_null())
        if d.height == 0:
            raise InputError(f"experiment {experiment!r} has no condition besides the baseline")
        return condition_bars(d, x="condition", y="diff", ymin="diff_low", ymax="diff_high", n="n_pairs",
                              title=f"{experiment}: condition − {spec.baseline} ({pct} CI, paired)",
                              ylabel=f"Δ {label}", reference_lines={spec.baseline: 0.0})

    # ------------------------------------------------------------------------------------ report

    def write_report(self, out: str | Path | None = None) -> Path:
        """Write ``report.md``, ``figures/*.png``, ``tables/*.csv`` and ``report.html`` (the run
        explorer, :mod:`nla_probe.ablate.explorer`) into ``out`` (default: :attr:`root`);
        returns the path of ``report.md``."""
        from nla_probe.ablate.explorer import write_html
        from nla_probe.ablate.report import build_report

        out = Path(out) if out is not None else self.root
        try:
            path = build_report(self, out)
            write_html(self, out)
        except OSError as e:
            if isinstance(e, NLAProbeError):
                raise
            import errno

            full = e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)
            what = "no space left on device" if full else (e.strerror or str(e))
            raise NLAProbeError(
                f"{e.filename or out}: {what} while writing the report; the results in {self.root / 'results'} and "
                f"the records in {self.root / 'store'} are safe: {'free some space, then ' if full else ''}rebuild "
                f"the report with `nla-probe report {self.root}`") from None
        return path

    @property
    def report_path(self) -> Path:
        return self.root / "report.md"

    @property
    def html_path(self) -> Path:
        """``report.html`` of the run (written with the report)."""
        return self.root / "report.html"

    # ------------------------------------------------------------------------------------ notebooks

    def show(self, rows: Any = None, experiment: str | None = None) -> Any:
        """The run explorer (summary and decode browser) for a notebook cell.

        Args:
            rows: an int (at most that many activations per experiment, sampled as in
                ``report.html``), a list of ``sample_id`` s, or None (up to
                :data:`nla_probe.ablate.explorer.NOTEBOOK_ROWS`).
            experiment: one experiment (default: all).

        Returns:
            An :class:`~nla_probe.ablate.explorer.ExplorerView`; Jupyter renders it, ``.save(path)``
            writes a standalone page.
        """
        from nla_probe.ablate.explorer import view

        if experiment is not None:
            self._check(experiment)
        return view(self, rows, experiment=experiment)

    def _repr_html_(self) -> str:
        return self.show()._repr_html_()

    # ------------------------------------------------------------------------------------ save / load

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Copy results, info and specs (not the store) to ``path``; :meth:`load` reads it back."""
        dest = Path(path)
        if (dest / "results" / INFO_NAME).exists() and not overwrite:
            raise InputError(f"{dest}: already holds results; pass overwrite=True")
        (dest / "results").mkdir(parents=True, exist_ok=True)
        for name in self.experiments:
            shutil.copyfile(self.path(name), dest / "results" / f"{name}.parquet")
        if (self.root / "specs").is_dir():
            shutil.copytree(self.root / "specs", dest / "specs", dirs_exist_ok=True)
        from nla_probe.ablate.attribution import attribution_path

        if attribution_path(self.root).is_file():
            shutil.copyfile(attribution_path(self.root), attribution_path(dest))
        write_json_atomic(dest / "results" / INFO_NAME, self.info)
        return dest

    def __repr__(self) -> str:
        return f"AblationResult({str(self.root)!r}, experiments={self.experiments})"


_MUST_MATCH = ("spec_hashes", "denominators", "batch_size", "limit")


def merge(dirs: Sequence[str | Path], out: str | Path, report: bool = True) -> AblationResult:
    """Join shard outputs (``ablate(..., shard="i/n")``) into one output directory.

    Checks that every input ran the same specs, pair, data, denominators and batch size with
    distinct shards of one ``n``; concatenates the result rows (refusing duplicate
    experiment x condition x sample rows), copies the store segments, writes ``info.json`` and
    (by default) the report.
    """
    import polars as pl


    results = [AblationResult.load(d) for d in dirs]
    if not results:
        raise InputError("merge: expected at least one output directory, found none")
    first = results[0].info
    shards = []
    for r in results:
        for k in _MUST_MATCH:
            if r.info.get(k) != first.get(k):
                raise InputError(f"merge: {r.root}: field '{k}' differs from {results[0].root}: "
                                 f"expected {first.get(k)!r}, found {r.info.get(k)!r}")
        for side in ("av", "ar"):
            a, b = r.info["pair"][side]["fingerprint"], first["pair"][side]["fingerprint"]
            if a != b:
                raise InputError(f"merge: {r.root}: {side.upper()} fingerprint {a} differs from {b}")
        if r.info["data"].get("digest") != first["data"].get("digest"):
            raise InputError(f"merge: {r.root}: data digest differs ({r.info['data'].get('digest')} vs "
                             f"{first['data'].get('digest')})")
        shards.append(r.info.get("shard"))
    if len(results) > 1:
        if None in shards or len(set(shards)) != len(shards) or len({s.split('/')[1] for s in shards}) != 1:
            raise InputError(f"merge: expected distinct shards 'i/n' of one n, found {shards}")
        total = int(shards[0].split("/")[1])
        if len(shards) < total:
            import warnings

            warnings.warn(f"merge: {len(shards)} of {total} shards given ({sorted(shards)}); the result is partial",
                          stacklevel=2)
    out = Path(out)
    (out / "results").mkdir(parents=True, exist_ok=True)
    for name in first["experiments"]:
        frame = pl.concat([pl.read_parquet(r.path(name)) for r in results], how="vertical_relaxed")
        frame = frame.sort(["condition", "sample_id"], maintain_order=True)
        if frame.select("condition", "sample_id").is_duplicated().any():
            raise InputError(f"merge: experiment {name!r} has duplicate condition x sample rows across inputs")
        frame.write_parquet(out / "results" / f"{name}.parquet")
    (out / "store").mkdir(exist_ok=True)
    for r in results:
        for seg in (r.root / "store").glob("seg-*.jsonl"):
            if not (out / "store" / seg.name).exists():
                shutil.copyfile(seg, out / "store" / seg.name)
        if (r.root / "specs").is_dir():
            shutil.copytree(r.root / "specs", out / "specs", dirs_exist_ok=True)
    from nla_probe.ablate.attribution import attribution_path, load_attribution

    parts = [a for a in (load_attribution(r.root) for r in results) if a is not None]
    if parts:  # shards hold distinct documents, so their attributed rows never overlap
        pl.concat(parts, how="vertical_relaxed").write_parquet(attribution_path(out))
    info = dict(first)
    info["shard"] = None if len(results) == 1 else f"merged {sorted(shards)}"
    info["merged_from"] = [str(Path(r.root).resolve()) for r in results]
    info["selection"] = {name: {"n_selected": sum(r.info["selection"][name]["n_selected"] for r in results),
                                "n_limit": first["selection"][name]["n_limit"], "shard": info["shard"]}
                         for name in first["experiments"]}
    info["counts"] = {str(r.root): r.info.get("counts") for r in results}
    write_json_atomic(out / "results" / INFO_NAME, info)
    merged = AblationResult.load(out)
    if report:
        merged.write_report()
    return merged
