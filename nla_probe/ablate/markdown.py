"""A small markdown report writer: sections with tables, figures and caveats, plus definitions and
provenance.

``Report(title, provenance).add_section(ReportSection(...)).write(out_dir)`` writes
``out_dir/report.md``, one CSV per table under ``out_dir/tables/`` and the full provenance as
``out_dir/provenance.json`` (absolute paths rewritten relative to ``out_dir``, so the directory can
be moved or shared); the report itself carries a short provenance summary and a link.  Tables from
:func:`nla_probe.analysis.stats.summarize` / :func:`nla_probe.analysis.stats.compare_to_baseline` are rendered with the
CI and counts in one cell, e.g. ``0.512 [0.470, 0.550] (n=400, 40 docs)``.  With
``bh_scope="report"`` (the default) the ``p_bh`` column of every table is recomputed by
Benjamini–Hochberg over all p values in the report, and the number of tests is stated.
"""

from __future__ import annotations

import json
import math
import platform
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from nla_probe.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

#: Caveats that most experiments need; pass the relevant ones to a section.
CAVEATS: Mapping[str, str] = MappingProxyType({
    "ar_ood": "Edited explanations are out of the AR's training distribution (it was trained on unedited "
              "AV output), so their FVE is a lower bound on the information the edited text carries.",
    "per_sample_wilcoxon": "Wilcoxon p values treat samples as independent; positions from one document are "
                           "correlated, so p values can be optimistic. CIs are clustered by document.",
    "denominator": "FVE depends on the denominator Var(v_nrm); numbers computed with different denominators "
                   "are not comparable.",
    "self_selection": "Best-of-N selected by the same AR that scores it is optimistically biased: the "
                      "selector is the metric.",
    "greedy": "Greedy decoding: one explanation per activation; sampling variance is not in the CIs.",
})

#: Packages whose installed versions go into the provenance block (looked up, not imported).
VERSION_PACKAGES = ("nla-probe", "numpy", "scipy", "polars", "plotnine", "torch", "transformers", "vllm")

_CI_COLS = ("ci_low", "ci_high", "n", "n_clusters")
_P_COLS = ("p", "p_bh")
_BH_SCOPES = ("report", "table")


@dataclass(frozen=True)
class Definitions:
    """What the numbers of a report mean; rendered as the report's "Definitions" block.

    Attributes:
        denominator: the FVE denominator ``Var(v_nrm)`` used (None: not stated, rendered as such).
        denominator_source: where the denominator comes from (e.g. "training set, official header").
        recall_k: k of recall@k, if reported.
        recall_pool: pool size of recall@k (chance = k / pool), if reported.
        cluster: column the bootstrap resamples (default "doc_id").
        cluster_label: plural noun for clusters in table cells ("docs").
        n_boot, level, seed: bootstrap settings used by the stats calls.
        alternative, zero_method, wilcoxon_unit: Wilcoxon settings used by the stats calls.
        extra: further term -> definition entries.
    """

    denominator: float | None = None
    denominator_source: str = ""
    recall_k: int | None = None
    recall_pool: int | None = None
    cluster: str = "doc_id"
    cluster_label: str = "docs"
    n_boot: int = 2000
    level: float = 0.95
    seed: int = 0
    alternative: str = "two-sided"
    zero_method: str = "wilcox"
    wilcoxon_unit: str = "sample"
    extra: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def label(self, metric: str) -> str:
        """``metric`` with the number that defines it: the denominator for FVE, the pool for recall."""
        if metric.startswith("fve") and self.denominator is not None:
            return f"{metric}, Var(v_nrm)={self.denominator:g}"
        if metric.startswith("recall") and self.recall_pool is not None:
            return f"{metric}, pool {self.recall_pool}"
        return metric

    def lines(self, n_tests: int, bh_scope: str) -> list[str]:
        """Markdown bullet lines; ``n_tests`` is the number of p values BH was applied over."""
        denom = (
            f"{self.denominator:g} ({self.denominator_source or 'source not stated'})"
            if self.denominator is not None else "not stated"
        )
        pct = f"{self.level * 100:g}%"
        out = [
            f"- **fve_nrm** = 1 − mse_nrm / Var(v_nrm), with mse_nrm the mean over the d dimensions of the squared "
            f"difference of reconstruction and gold, both L2-normalised to √d (= 2(1 − cos)); "
            f"**Var(v_nrm) = {denom}**. 0 = predicting the mean, 1 = perfect.",
            "- **cos**: cosine similarity of reconstruction and gold activation.",
        ]
        if self.recall_k is not None or self.recall_pool is not None:
            chance = (f"; chance = {self.recall_k / self.recall_pool:.4g}"
                      if self.recall_k and self.recall_pool else "")
            out.append(f"- **recall@{self.recall_k}**: gold activation within the top {self.recall_k} of a pool of "
                       f"**{self.recall_pool}** gold activations by cosine to the reconstruction{chance}.")
        scope = (_count_tests(n_tests) if bh_scope == "report"
                 else "the tests of each table separately")
        out += [
            f"- **estimate [{pct} CI] (n, {self.cluster_label})**: mean over n samples; percentile bootstrap "
            f"CI from {self.n_boot} resamples of the {self.cluster_label} (column `{self.cluster}`) with "
            f"replacement, seed {self.seed}. n = samples, {self.cluster_label} = distinct clusters.",
            "- **diff**: condition − baseline, paired on the sample id; CI as above on the paired differences.",
            f"- **p**: Wilcoxon signed-rank test (scipy.stats.wilcoxon) on the per-{self.wilcoxon_unit} "
            f"differences, alternative={self.alternative}, zero_method={self.zero_method} "
            "(n_zero = zero differences); all-zero differences give p = 1.",
            f"- **p_bh**: Benjamini–Hochberg adjusted p (scipy.stats.false_discovery_control) over {scope}.",
            ("- **when the CI and p disagree**: the CI of a difference is a bootstrap of its *mean*; the "
             "Wilcoxon p ranks the per-sample differences and asks whether they lean to one side. A few "
             "large differences can move the mean so far that its CI excludes 0 while most differences are "
             "small or of either sign (p not small); many small same-sign differences give the reverse. "
             "Sections name the conditions where this happens; read the CI as the size of the average "
             "effect and p as how consistent its sign is."),
        ]
        out += [f"- **{k}**: {v}" for k, v in self.extra.items()]
        return out


@dataclass(frozen=True, eq=False)
class ReportSection:
    """One experiment of a report.

    Attributes:
        title: section heading.
        text: markdown paragraph(s) (what was done, finding).
        table: optional result table (polars).
        figures: PNG paths, or ``(path, caption)`` pairs.
        caveats: caveat sentences (see :data:`CAVEATS`).
        metric: what the table's estimate/diff column measures (e.g. "fve_nrm", "recall@10"); shown in
            the column header with its denominator or pool size (see :meth:`Definitions.label`).
    """

    title: str
    text: str = ""
    table: pl.DataFrame | None = None
    figures: Sequence[Path | str | tuple[Path | str, str]] = ()
    caveats: Sequence[str] = ()
    metric: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.title, str) and self.title.strip()):
            raise InputError(f"ReportSection.title: expected a non-empty string, found {self.title!r}")
        figs = []
        for f in self.figures:
            path, caption = (f if isinstance(f, tuple) else (f, ""))
            figs.append((Path(path), str(caption)))
        object.__setattr__(self, "figures", tuple(figs))
        object.__setattr__(self, "caveats", tuple(str(c) for c in self.caveats))


def format_ci(estimate: float, low: float, high: float, n: int, n_clusters: int, cluster_label: str = "docs",
              digits: int = 3) -> str:
    """``"0.512 [0.470, 0.550] (n=400, 40 docs)"``; NaN numbers render as "n/a"."""
    def f(x: float) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"

    return f"{f(estimate)} [{f(low)}, {f(high)}] (n={n}, {n_clusters} {cluster_label})"


def _fmt_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _fmt_cell(x: object) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        return f"{x:.2e}" if (x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5)) else f"{x:.3f}"
    return str(x).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pl.DataFrame, level: float = 0.95, cluster_label: str = "docs", metric: str = "") -> str:
    """Render a frame as a markdown table.

    ``metric`` (e.g. "fve_nrm, Var(v_nrm)=0.7335") prefixes the header of the estimate/diff cell.
    ``estimate`` or ``diff`` together with ``ci_low, ci_high, n, n_clusters`` become one cell
    (see :func:`format_ci`); ``p`` and ``p_bh`` use 3 decimals or scientific notation below 1e-3;
    other floats 3 decimals; strings are escaped.
    """
    cols = list(frame.columns)
    main = next((c for c in ("estimate", "diff") if c in cols), None)
    combine = main is not None and all(c in cols for c in _CI_COLS)
    header, getters = [], []
    for c in cols:
        if combine and c in _CI_COLS:
            continue
        if combine and c == main:
            header.append(f"{metric + ': ' if metric else ''}{main} [{level * 100:g}% CI] (n, {cluster_label})")
            getters.append(lambda r, m=main: format_ci(r[m], r["ci_low"], r["ci_high"], r["n"], r["n_clusters"],
                                                        cluster_label))
        elif c == "statistic":
            header.append(c)
            getters.append(lambda r: _fmt_p(None) if r["statistic"] is None else f"{r['statistic']:.6g}")
        elif c in _P_COLS:
            header.append(c)
            getters.append(lambda r, c=c: _fmt_p(r[c]))
        else:
            header.append(c)
            getters.append(lambda r, c=c: _fmt_cell(r[c]))
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    for r in frame.iter_rows(named=True):
        lines.append("| " + " | ".join(g(r) for g in getters) + " |")
    return "\n".join(lines)


def _count_tests(n: int) -> str:
    """"all 4 tests in this report", "the one test in this report", "no tests in this report"."""
    if n == 0:
        return "no tests in this report (none)"
    return "the one test in this report" if n == 1 else f"all {n} tests in this report"


def _slug(text: str, limit: int = 40) -> str:
    """File-name slug of ``text``: lowercase words joined by "_", cut at a word boundary to at most
    ``limit`` characters (a single longer word is cut inside)."""
    words = [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]
    out = ""
    for w in words:
        cand = f"{out}_{w}" if out else w
        if len(cand) > limit:
            break
        out = cand
    if not out and words:
        out = words[0][:limit]
    return out or "section"


def relative_paths(obj: object, root: Path) -> object:
    """``obj`` (JSON-like) with every string that is an absolute path rewritten relative to ``root``
    (``os.path.relpath``, POSIX separators); other values unchanged."""
    import os

    if isinstance(obj, Mapping):
        return {k: relative_paths(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [relative_paths(v, root) for v in obj]
    if isinstance(obj, str) and obj.startswith("/") and "\n" not in obj and os.path.isabs(obj):
        return Path(os.path.relpath(obj, root)).as_posix()
    return obj


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in VERSION_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


class Report:
    """A markdown report: sections, a Definitions block and a provenance block.

    Args:
        title: report title.
        provenance: configuration, seeds, checkpoint identities (paths, hashes, sidecar contents),
            data identity; written to ``provenance.json`` beside the report (non-JSON values via
            ``str``, absolute paths made relative to the report's directory).
        definitions: what the numbers mean (denominator, pool sizes, bootstrap/test settings).
        caveats: report-wide caveats.
        preface: markdown paragraphs shown right under the title (e.g. what the numbers can show).
        provenance_summary: markdown bullet lines for the report's short "Provenance" block (None:
            the top-level scalar entries of ``provenance``).
        bh_scope: "report" (recompute ``p_bh`` across every table's ``p``) or "table" (keep each
            table's own ``p_bh``).
    """

    def __init__(self, title: str, provenance: Mapping[str, object], definitions: Definitions | None = None,
                 caveats: Sequence[str] = (), bh_scope: str = "report", preface: Sequence[str] = (),
                 provenance_summary: Sequence[str] | None = None):
        if bh_scope not in _BH_SCOPES:
            raise InputError(f"bh_scope: expected one of {list(_BH_SCOPES)}, found {bh_scope!r}")
        if not isinstance(provenance, Mapping):
            raise InputError(f"provenance: expected a mapping, found {type(provenance).__name__}")
        self.title = title
        self.provenance = dict(provenance)
        self.definitions = definitions if definitions is not None else Definitions()
        self.caveats = tuple(caveats)
        self.preface = tuple(str(p) for p in preface)
        self.provenance_summary = None if provenance_summary is None else tuple(provenance_summary)
        self.bh_scope = bh_scope
        self.sections: list[ReportSection] = []

    def add_section(self, section: ReportSection) -> Report:
        """Append a section; returns the report for chaining."""
        if not isinstance(section, ReportSection):
            raise InputError(f"add_section: expected a ReportSection, found {type(section).__name__}")
        self.sections.append(section)
        return self

    def rendered_tables(self) -> tuple[list[pl.DataFrame | None], int]:
        """Section tables as rendered (``p_bh`` adjusted per ``bh_scope``) and the number of tests."""
        import polars as pl

        from nla_probe.analysis.stats import bh_across

        tables = [s.table for s in self.sections]
        present = [i for i, t in enumerate(tables) if t is not None]
        n_tests = sum(
            int(t["p"].cast(pl.Float64).fill_null(float("nan")).is_not_nan().sum())
            for t in tables if t is not None and "p" in t.columns
        )
        if self.bh_scope == "report" and present:
            adjusted = bh_across([tables[i] for i in present])
            for i, t in zip(present, adjusted):
                tables[i] = t
        return tables, n_tests

    def _figure(self, path: Path, out_dir: Path) -> str:
        """Relative link to ``path``, copying it into ``out_dir/figures`` if it lies outside."""
        src = path.resolve()
        if not src.is_file():
            raise InputError(f"figure {str(path)!r}: expected an existing file, found none")
        root = out_dir.resolve()
        if not src.is_relative_to(root):
            dest = root / "figures" / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            src = dest
        return src.relative_to(root).as_posix()

    def write(self, out_dir: str | Path, overwrite: bool = False) -> Path:
        """Write ``out_dir/report.md``, ``out_dir/tables/*.csv`` and ``out_dir/provenance.json``;
        returns the report path.

        Raises:
            InputError: ``report.md`` exists and ``overwrite`` is False, or a figure is missing.
        """
        out_dir = Path(out_dir)
        path = out_dir / "report.md"
        if path.exists() and not overwrite:
            raise InputError(f"{path}: already exists; pass overwrite=True to replace it")
        out_dir.mkdir(parents=True, exist_ok=True)
        tables, n_tests = self.rendered_tables()
        d = self.definitions
        md = [f"# {self.title}", "",
              f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by nla-probe.", ""]
        for para in self.preface:
            md += [para.strip(), ""]
        for k, (section, table) in enumerate(zip(self.sections, tables), start=1):
            md += [f"## {k}. {section.title}", ""]
            if section.text:
                md += [section.text.strip(), ""]
            if table is not None:
                csv = Path("tables") / f"{k:02d}_{_slug(section.title)}.csv"
                (out_dir / "tables").mkdir(exist_ok=True)
                table.write_csv(out_dir / csv)
                label = d.label(section.metric) if section.metric else ""
                md += [markdown_table(table, d.level, d.cluster_label, label), "",
                       f"Table as CSV: [{csv.as_posix()}]({csv.as_posix()})", ""]
            for j, (fig, caption) in enumerate(section.figures, start=1):
                rel = self._figure(fig, out_dir)
                caption_line = f"*Figure {k}.{j}*" + (f" — {caption}" if caption else "")
                md += [f"![{caption or fig.stem}]({rel})", "", caption_line, ""]
            if section.caveats:
                md += ["**Caveats**", ""] + [f"- {c}" for c in section.caveats] + [""]
        if self.caveats:
            md += ["## Caveats", ""] + [f"- {c}" for c in self.caveats] + [""]
        md += ["## Definitions", ""] + d.lines(n_tests, self.bh_scope) + [""]
        versions = _versions()
        prov = relative_paths(json.loads(json.dumps({"versions": versions, **self.provenance}, default=str)),
                              out_dir.resolve())
        (out_dir / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
        summary = self.provenance_summary
        if summary is None:
            summary = [f"- {k}: {v}" for k, v in sorted(prov.items()) if isinstance(v, (str, int, float, bool))]
        shown = ", ".join(f"{k} {versions[k]}" for k in ("nla-probe", "python", "torch", "transformers")
                          if versions.get(k) not in (None, "not installed"))
        md += ["## Provenance", "", f"- versions: {shown}", *summary,
               ("- everything else (specs, checkpoint and data identities with file hashes, selection, cache "
                "counts, all package versions): [provenance.json](provenance.json); its paths are relative to "
                "this report's directory."), ""]
        path.write_text("\n".join(md), encoding="utf-8")
        return path
