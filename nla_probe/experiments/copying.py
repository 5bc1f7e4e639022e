"""``copying``: do explanations copy their source context?  (abra.me report 01 §3)

Each condition is one on-policy decode of every activation (its ``hooks`` applied together, e.g.
``ban_chars`` on quotes, its ``sampling``/``seed`` overriding the spec's), scored by the AR like
``roundtrip``.  Then, per condition, :func:`nla_probe.copying.copy_detection` measures the
explanation against:

* the **true context** ``source_text[:char_end]`` of the activation (the document up to and
  including its token; with ``params.window = w > 0`` only the last ``w`` whitespace-separated
  chunks), and
* ``params.n_null`` **null contexts**: the contexts of other activations of *other documents* of the
  same selection (:func:`nla_probe.copying.null_sources`, seed = the spec's ``seed``; the draw
  depends only on the documents, so every condition gets the same null contexts per activation).

Per row (one activation × condition) the kind writes ``run_len``, the longest run of words the
explanation shares with its true context (words of :class:`nla_probe.copying.wordruns.WordNormalizer`,
``params.normalizer``), the run lengths against the null contexts (``null_run_lens``, a string of
space-separated integers: result columns are scalar), their median/p90/max, ``run_percentile``
(mid-rank percentile of ``run_len`` among them: 50 = no more than chance), and the quoted-span
counts ``n_spans`` (outermost double/single-quote spans), ``n_spans_verbatim`` (those with at
least one word, all occurring contiguously in the true context) and ``null_spans_verbatim`` (the
same count against a null context, averaged over the row's null contexts).

The report section gives, per condition, the median, p90 and ``≥ n`` word rates (``params.ns``) of
``run_len`` (true) and of the null run lengths (medians/p90 over all explanation × null pairs;
rates = mean over explanations of the share of their nulls with a run ``≥ n``), with
document-clustered bootstrap CIs (:func:`nla_probe.copying.summarize_copying`), plus the paired
excess ``1[run_len ≥ n] − share of nulls ≥ n``.  Copy detection needs every decode of a
condition (the nulls draw from the whole selection), so rows are yielded after all chunks are
decoded; decodes and AR scores are cached as usual, so a resumed run redoes only the detection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nla_probe.ablate.kinds import ExperimentKind, register_experiment
from nla_probe.ablate.spec import Field
from nla_probe.errors import InputError

#: Columns the data file must hold (see :mod:`nla_probe.nla.extraction`).
SOURCE_COLUMNS = ("source_text", "char_end")


def _normalizer_check(v: dict) -> str | None:
    from nla_probe.copying.wordruns import WordNormalizer
    from nla_probe.errors import NLAProbeError

    try:
        WordNormalizer.from_dict(v)
    except (NLAProbeError, TypeError) as e:
        return str(e)
    return None


def _ns_check(v: list) -> str | None:
    ok = v and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)
    return None if ok else "expected a non-empty array of integers >= 1"


def copy_settings(spec: Any) -> Any:
    """The :class:`nla_probe.copying.CopySettings` of a spec (seed = the spec's ``seed``)."""
    from nla_probe.copying import CopySettings
    from nla_probe.copying.wordruns import WordNormalizer

    p = spec.params
    return CopySettings(n_null=p["n_null"], seed=spec.seed, window=p["window"] or None,
                        normalizer=WordNormalizer.from_dict(p["normalizer"]), spans=True, span_families="quotes")


def parse_run_lens(values: Any) -> list[list[int]]:
    """``null_run_lens`` strings (space-separated integers) as lists of ints (``""`` -> ``[]``)."""
    return [[int(x) for x in s.split()] if s else [] for s in values]


def copy_columns(explanations: list[str], sources: list[str], char_ends: list[int], doc_ids: list[str],
                 settings: Any) -> dict[str, list]:
    """The kind's columns for one condition's explanations (at least one), in input order (module doc)."""
    import polars as pl

    from nla_probe.copying import iter_copy_detection

    parts = list(iter_copy_detection(explanations, sources, doc_ids, settings, char_ends=char_ends))
    s = pl.concat([p[0] for p in parts])
    verbatim, null_verbatim = [0] * len(explanations), [0.0] * len(explanations)
    for _, spans in parts:
        for i, v, nv in spans.select("sample_id", "verbatim", "null_verbatim_rate").iter_rows():
            verbatim[i] += int(v)
            null_verbatim[i] += nv
    cols = {c: s[c].to_list() for c in ("run_len", "run_text", "n_words", "n_context_words", "null_median",
                                         "null_p90", "null_max", "run_percentile", "n_spans")}
    cols["null_run_lens"] = [" ".join(map(str, x)) for x in s["null_run_lens"].to_list()]
    cols["n_spans_verbatim"], cols["null_spans_verbatim"] = verbatim, null_verbatim
    return cols


def copy_summary(frame: Any, spec: Any) -> Any:
    """Median, p90 and ``≥ n`` rates of run lengths per condition: true context, null, and the
    paired excess (true − null, rates only), with document-clustered CIs.

    Returns:
        polars frame ``condition, source ("true" | "null" | "excess"), statistic ("median", "p90",
        "rate_ge_{n}"), estimate, ci_low, ci_high, n, n_clusters``; conditions in spec order.  For
        ``null`` quantiles ``n`` counts explanation × null pairs, otherwise explanations.
    """
    import warnings

    import numpy as np
    import polars as pl

    from nla_probe.analysis.stats import cluster_bootstrap_ci
    from nla_probe.copying import summarize_copying

    m, ns = spec.metrics, list(spec.params["ns"])
    samples = frame.select("condition", "doc_id", "run_len", pl.Series("null_run_lens", parse_run_lens(
        frame["null_run_lens"].to_list()), dtype=pl.List(pl.Int64)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="bootstrap over only")
        out = summarize_copying(samples, by="condition", ns=ns, n_boot=m.n_boot, seed=spec.seed, level=m.level)
        rows = []
        for (cond,), sub in samples.group_by(["condition"], maintain_order=True):
            true = sub["run_len"].to_numpy()
            nulls = sub["null_run_lens"].to_list()
            for n in ns:
                d = (true >= n).astype(np.float64) - np.array([np.mean(np.asarray(x) >= n) for x in nulls])
                ci = cluster_bootstrap_ci(d, sub["doc_id"].to_numpy(), n_boot=m.n_boot, level=m.level, seed=spec.seed)
                rows.append({"condition": cond, "source": "excess", "statistic": f"rate_ge_{n}",
                             "estimate": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "n": ci.n,
                             "n_clusters": ci.n_clusters})
    out = pl.concat([out, pl.DataFrame(rows, schema=out.schema)])
    order = {c.name: i for i, c in enumerate(spec.conditions)}
    src = {"true": 0, "null": 1, "excess": 2}
    return out.with_columns(pl.col("condition").replace_strict(order, default=len(order), return_dtype=pl.Int64)
                            .alias("_o"), pl.col("source").replace_strict(src, return_dtype=pl.Int64).alias("_s"),
                            pl.int_range(pl.len()).alias("_r")).sort("_o", "_s", "_r").drop("_o", "_s", "_r")


def _cell(r: dict, rate: bool, unit: str = "") -> str:
    if unit:
        return f"{100 * r['estimate']:.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}] ({r['n']} {unit})"
    if rate:
        return f"{100 * r['estimate']:.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"
    return f"{r['estimate']:g} [{r['ci_low']:g}, {r['ci_high']:g}]"


def copy_table(summary: Any, spec: Any, spans: Any = None) -> Any:
    """:func:`copy_summary` as one row per condition × source with text cells ``estimate [CI]``; with
    ``spans`` (:func:`nla_probe.copying.summarize_span_counts`) a column of quoted spans verbatim."""
    import polars as pl

    ns = list(spec.params["ns"])
    labels = {"true": "true context", "null": f"null ({spec.params['n_null']} other-document contexts)",
              "excess": "excess: true − null (paired)"}
    stats = ["median", "p90", *(f"rate_ge_{n}" for n in ns)]
    heads = ["median run", "p90 run", *(f"≥{n} words" for n in ns)]
    if spans is not None and spans.height:
        summary = pl.concat([summary, spans.select(summary.columns)])
        stats.append("spans_verbatim")
        heads.append("quoted spans verbatim")
    rows = []
    for (cond, source), sub in summary.group_by(["condition", "source"], maintain_order=True):
        cells = {r["statistic"]: r for r in sub.iter_rows(named=True)}
        row = {"condition": cond, "contexts": labels[source]}
        for stat, head in zip(stats, heads):
            unit = "spans" if stat == "spans_verbatim" else ""
            row[head] = _cell(cells[stat], stat.startswith("rate"), unit) if stat in cells else "—"
        first = cells[f"rate_ge_{ns[0]}"]
        row["explanations"], row["docs"] = first["n"], first["n_clusters"]
        rows.append(row)
    return pl.DataFrame(rows, schema={"condition": pl.Utf8, "contexts": pl.Utf8, **{h: pl.Utf8 for h in heads},
                                      "explanations": pl.Int64, "docs": pl.Int64})


@register_experiment
class Copying(ExperimentKind):
    """Copy detection of on-policy explanations against shuffled-context nulls (see module doc)."""

    name = "copying"
    description = ("decode under each condition's hooks, then the longest word run each explanation shares with "
                   "its source context, against contexts of other documents")
    condition_keys = ("hooks", "sampling", "seed")
    params = {
        "n_null": Field((int,), 20, "null contexts (other documents) per explanation",
                        lambda v: None if v >= 1 else "expected an integer >= 1"),
        "window": Field((int,), 0, "context = the last this many whitespace-separated chunks up to the token "
                        "(0 = the whole prefix)", lambda v: None if v >= 0 else "expected an integer >= 0"),
        "normalizer": Field((dict,), dict, "word definition: WordNormalizer options {punctuation = 'strip', "
                            "nfkc = true, casefold = true, fold_apostrophes = true}", _normalizer_check),
        "ns": Field((list,), lambda: [4, 6, 8], "run lengths n (words) of the reported >= n rates", _ns_check),
    }
    columns = {"run_len": "Int64", "run_text": "Utf8", "n_words": "Int64", "n_context_words": "Int64",
               "null_run_lens": "Utf8", "null_median": "Float64", "null_p90": "Float64", "null_max": "Int64",
               "run_percentile": "Float64", "n_spans": "Int64", "n_spans_verbatim": "Int64",
               "null_spans_verbatim": "Float64"}
    column_docs = {
        "run_len": "longest run of words (normalised) the explanation shares with its true source context "
                   "source_text[:char_end]; mean per condition in the summary.",
        "null_run_lens": "the same run length against each null context (contexts of other documents), "
                         "space-separated integers.",
        "run_percentile": "mid-rank percentile of run_len among the row's null run lengths (50 = chance); mean "
                          "per condition in the summary.",
        "n_spans_verbatim": "quoted spans (outermost double/single quotes) with at least one word, all occurring "
                            "contiguously in the true context.",
        "null_spans_verbatim": "the same count against a null context, averaged over the row's null contexts.",
    }
    summary_means = {"run_len": "run_len", "run_percentile": "run_percentile"}

    def run(self, spec: Any, ctx: Any) -> Iterator[dict[str, list]]:
        frame = ctx.data.frame
        missing = [c for c in SOURCE_COLUMNS if c not in frame.columns]
        if missing:
            raise InputError(f"data ({ctx.data.info.get('path')}): kind 'copying' needs column(s) {missing} "
                             f"(written by nla-probe extract); found {frame.columns}")
        settings = copy_settings(spec)
        row_of = {int(s): i for i, s in enumerate(frame["sample_id"].to_list())}
        sources, ends = frame["source_text"].to_list(), frame["char_end"].to_list()
        doc_ids = [str(d) for d in frame["doc_id"].to_list()]
        plans = [(c, spec.sampling_for(c)) for c in spec.conditions]
        done: list[tuple[Any, dict[str, dict[str, list]]]] = []
        for chunk in ctx.chunks():
            per_cond = {}
            for cond, sampling in plans:
                decodes = ctx.decode(chunk, cond.hooks, sampling)
                texts = [d["explanation"] for d in decodes]
                per_cond[cond.name] = ctx.base_rows(chunk, cond.name, decodes, texts, ctx.score(chunk, texts))
            done.append((chunk, per_cond))
        if not done:
            return
        rows = [row_of[int(s)] for chunk, _ in done for s in chunk.sample_ids]
        src, end, docs = [sources[r] for r in rows], [int(ends[r]) for r in rows], [doc_ids[r] for r in rows]
        extra = {}
        for cond, _ in plans:
            texts = [t for _, per in done for t in per[cond.name]["text"]]
            extra[cond.name] = copy_columns(texts, src, end, docs, settings)
        start = 0
        for chunk, per_cond in done:
            stop = start + len(chunk)
            batch: dict[str, list] = {}
            for cond, _ in plans:
                cols = {**per_cond[cond.name], **{k: v[start:stop] for k, v in extra[cond.name].items()}}
                for k, v in cols.items():
                    batch.setdefault(k, []).extend(v)
            start = stop
            yield batch

    def caveats(self, spec: Any) -> list[str]:
        from nla_probe.ablate.markdown import CAVEATS

        out = ["Null contexts come from other documents of the same selection; common phrases reach the same "
               "run lengths there, so compare the true rates with the null rates (the excess row), not with 0."]
        if not spec.sampling.do_sample and not any(c.sampling.get("do_sample") for c in spec.conditions):
            out.append(CAVEATS["greedy"])
        return out

    def report_sections(self, spec: Any, frame: Any, out_dir: Path) -> list:
        """A section with the true-vs-null table (:func:`copy_table`) and a bar chart of the >= n rates
        and of the share of quoted spans found verbatim, each with its CI."""
        import warnings

        import polars as pl

        from nla_probe.ablate.markdown import ReportSection
        from nla_probe.ablate.plots import condition_bars, save_png
        from nla_probe.copying import summarize_span_counts

        if frame.height == 0:
            return []
        summary = copy_summary(frame, spec)
        m = spec.metrics
        pct = f"{m.level * 100:g}%"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="bootstrap over only")
            spans = summarize_span_counts(frame, by="condition", n_boot=m.n_boot, seed=spec.seed, level=m.level)
        rates = summary.filter(pl.col("statistic").str.starts_with("rate_ge_") & (pl.col("source") != "excess"))
        rates = rates.with_columns(pl.format("{} · {} · run ≥{} words", "condition", "source",
                                             pl.col("statistic").str.strip_prefix("rate_ge_")).alias("bar"))
        span_bars = spans.with_columns(pl.format("{} · {} · quoted spans verbatim", "condition", "source")
                                       .alias("bar")).select(rates.columns)
        bars = pl.concat([rates, span_bars])
        zero_note = all_zero_note(frame, summary, spec)
        title = f"{spec.name}: shared word runs and verbatim quotes\ntrue context vs null ({pct} CI)"
        if zero_note:
            title += "\n" + zero_note["figure"]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            plot = condition_bars(bars, x="bar", fill="source", reference_lines={},
                                  ylabel="share (of explanations; of quoted spans for 'verbatim')", title=title)
            path = save_png(plot, Path(out_dir) / "figures" / f"{spec.name}_copy_rates.png", width=7.5,
                            height=max(2.5, 0.3 * bars.height + 1.7))
        p = spec.params
        window = f"its last {p['window']} whitespace-separated chunks" if p["window"] else "all of it"
        by_cond = {(r["condition"], r["source"]): r for r in spans.iter_rows(named=True)}
        span_parts = []
        for c in spec.conditions:
            t, n = by_cond.get((c.name, "true")), by_cond.get((c.name, "null"))
            if t is None:
                span_parts.append(f"`{c.name}` no quoted spans")
                continue
            span_parts.append(f"`{c.name}` {_cell(t, True, 'spans')} in the true context vs "
                              f"{_cell(n, True, 'spans')} in null contexts")
        text = (f"Longest run of words each explanation shares with its source context (the document up to and "
                f"including the activation's token, {window}), against {p['n_null']} contexts of other documents "
                f"(seed {spec.seed}, the same null contexts in every condition). Words: NFKC, casefolded, "
                f"punctuation at word edges stripped (options {p['normalizer'] or 'default'}). Median and p90 in "
                f"words; `≥n words` = share of explanations with a shared run of at least n words (null: mean over "
                f"explanations of the share of their null contexts); excess = the paired difference true − null. "
                f"{pct} CIs: clustered bootstrap over documents, {m.n_boot} resamples. Quoted spans (outermost "
                f"double/single quotes) whose words all occur contiguously in the context, share of all quoted "
                f"spans [{pct} CI]: {'; '.join(span_parts)}.")
        if zero_note:
            text += "\n\n" + zero_note["long"]
        caption = ("share of explanations with a shared run of at least n words, and share of quoted spans found "
                   f"verbatim, true context vs null, per condition ({pct} CI, clustered by document).")
        if zero_note:
            caption += " Every run rate is 0: " + zero_note["short"] + "."
        return [ReportSection(title=f"{spec.name}: copy detection", text=text,
                              table=copy_table(summary, spec, spans), figures=[(path, caption)])]


def all_zero_note(frame: Any, summary: Any, spec: Any) -> dict[str, str] | None:
    """When every ``≥ n words`` rate (true and null, every condition) is 0, why: the longest shared
    run and the longest quoted span found, next to the smallest n.  None otherwise.

    Returns:
        ``{"short": one clause for a caption, "long": a paragraph for the report, "figure": a title line}``.
    """
    import polars as pl

    from nla_probe.text.spans import find_spans

    rates = summary.filter(pl.col("statistic").str.starts_with("rate_ge_") & (pl.col("source") != "excess"))
    if rates.height == 0 or rates["estimate"].abs().max() > 0 or rates["ci_high"].abs().max() > 0:
        return None
    n_min = min(spec.params["ns"])
    longest_run = int(max(frame["run_len"].max() or 0, frame["null_max"].max() or 0))
    quote_words = [len(s.inner(t).split()) for t in frame["text"].to_list()
                   for s in find_spans(t, ("quotes",)).spans if s.depth == 0]
    longest_quote = max(quote_words) if quote_words else 0
    short = (f"no explanation shares a run of {n_min}+ words with any context (longest shared run "
             f"{longest_run} words; longest quoted span {longest_quote} words)")
    figure = f"run rates all 0: longest shared run {longest_run} words < n = {n_min}"
    long = (f"**Why every bar of shared runs is 0.** The smallest n reported is {n_min} words, but the longest run "
            f"any explanation shares with any context (true or null) is {longest_run} words, and the longest "
            f"quoted span in these explanations holds {longest_quote} words. Explanations whose quotes are this "
            f"short cannot reach the ≥{n_min}-word rates, so the rates carry no information here; the quoted-span "
            f"verbatim rate (bars and last column) still separates the true context from the null. On the "
            f"embedded toy pair this is by construction: its explanations quote only the current token and the "
            f"two before it.")
    return {"short": short, "long": long, "figure": figure}
