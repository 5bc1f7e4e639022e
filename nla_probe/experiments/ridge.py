"""``ridge``: a supervised linear map between two families vs the zero-pair text route.

Evaluation rows are the cross-family evaluation rows (:mod:`nla_probe.experiments.cross_family`:
family A's selection, aligned by character offset to family B, v_A and v_B extracted).  Training
pairs come from TRAINING documents (``params.train_corpus``, a JSONL with ``doc_id``, ``text`` and
optionally ``split``; rows with ``split == params.train_split``): ``params.n_train_docs``
documents in a seeded random order, ``params.positions_per_doc`` positions each (drawn as
:func:`nla_probe.nla.extraction.sample_positions`, ``min_position <= position < max_tokens`` of A's
tokenization), aligned to B and extracted in both families.  A training document whose id or text
occurs in the evaluation selection raises :class:`InputError`: the two sets must be disjoint.

Each condition is a direction (``params.direction``: ``self_to_other`` = A → B, or
``other_to_self``).  For every n of ``params.n_grid`` a ridge map (:mod:`nla_probe.analysis.ridge`:
unit-normalised rows, intercept, α by grouped CV on the training pairs) is trained on the first n
training pairs and scored on the evaluation rows against the target family's gold with the
target family's denominator (rows ``<condition>@n<n>``).  The text route — the target family's AR
reading the source family's AV explanation, zero paired examples — is scored on the same rows
(``<condition>@text``).  The log-linear crossover is in :func:`ridge_report`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nla_probe.ablate.kinds import ExperimentKind, register_experiment
from nla_probe.ablate.spec import REQUIRED, Field
from nla_probe.errors import InputError, SpecError
from nla_probe.experiments.cross_family import FAMILY_PARAMS, family_roundtrips, setup_two_families
from nla_probe.experiments.vector_common import empty_decode_fields, rows_block, rowwise_cos
from nla_probe.nla.layers import LazyBase

DIRECTIONS = ("self_to_other", "other_to_self")


def _positive(v: int) -> str | None:
    return None if v >= 1 else "expected an integer >= 1"


def _int_list(v: list) -> str | None:
    ok = v and all(isinstance(x, int) and not isinstance(x, bool) and x >= 2 for x in v)
    return None if ok else "expected a non-empty array of integers >= 2"


def _float_list(v: list) -> str | None:
    ok = v and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v)
    return None if ok else "expected a non-empty array of positive numbers"


def read_documents(path: Path, split: str) -> list[dict]:
    """``[{"doc_id", "text"}]`` of a JSONL corpus, keeping rows whose ``split`` equals ``split``
    (every row when ``split`` is empty or the file has no split field)."""
    if not path.is_file():
        raise InputError(f"params.train_corpus: {str(path)!r} not found (a JSONL with doc_id and text per line)")
    out = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            rec = json.loads(line)
            if "doc_id" not in rec or "text" not in rec:
                raise InputError(f"{path}: line {i + 1}: expected fields doc_id and text, found {sorted(rec)}")
            if split and rec.get("split", split) != split:
                continue
            out.append({"doc_id": str(rec["doc_id"]), "text": rec["text"]})
    return out


def training_frame(docs: list[dict], tokenizer: Any, *, n_per_doc: int, min_position: int, max_tokens: int,
                   seed: int) -> Any:
    """Sampled positions of ``docs`` in ``tokenizer``'s tokenization (columns of an activation frame)."""
    import polars as pl

    from nla_probe.nla.extraction import sample_positions

    special = set(tokenizer.all_special_ids)
    cols: dict[str, list] = {k: [] for k in ("doc_id", "position", "token_id", "char_start", "char_end",
                                             "source_text")}
    for d in docs:
        enc = tokenizer(d["text"], add_special_tokens=True, return_offsets_mapping=True, verbose=False)
        ids = enc["input_ids"][:max_tokens]
        offs = enc["offset_mapping"][:max_tokens]
        mask = [t in special or e <= s for t, (s, e) in zip(ids, offs)]
        for p in sample_positions(len(ids), mask, d["doc_id"], n_per_doc=n_per_doc, min_position=min_position,
                                  seed=seed):
            for k, v in zip(cols, (d["doc_id"], p, ids[p], offs[p][0], offs[p][1], d["text"])):
                cols[k].append(v)
    return pl.DataFrame(cols, schema={"doc_id": pl.Utf8, "position": pl.Int64, "token_id": pl.Int64,
                                      "char_start": pl.Int64, "char_end": pl.Int64, "source_text": pl.Utf8})


@register_experiment
class Ridge(ExperimentKind):
    """Ridge maps between two families vs the text route (module doc)."""

    name = "ridge"
    description = "ridge regression between two families' vectors vs number of training pairs, and the text route"
    condition_keys = ("params",)
    params = {
        **FAMILY_PARAMS,
        "train_corpus": Field((str,), "data/corpus/corpus.jsonl", "JSONL of training documents (doc_id, text, split)"),
        "train_split": Field((str,), "train", "value of the split field to use ('' = every row)"),
        "n_train_docs": Field((int,), 1000, "training documents (seeded random order)", _positive),
        "positions_per_doc": Field((int,), 6, "positions per training document", _positive),
        "min_position": Field((int,), 1, "smallest training position (tokens of A)",
                              lambda v: None if v >= 0 else "expected an integer >= 0"),
        "max_tokens": Field((int,), 128, "training positions are < max_tokens (tokens of A)", _positive),
        "n_grid": Field((list,), lambda: [16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
                        "training-pair counts of the scaling curve", _int_list),
        "alphas": Field((list,), lambda: [0.001, 0.01, 0.1, 1.0, 10.0, 100.0], "ridge penalties tried by CV",
                        _float_list),
        "n_folds": Field((int,), 5, "grouped CV folds for alpha", lambda v: None if v >= 2 else "expected >= 2"),
        "fit_last": Field((int,), 3, "largest n values used by the log-linear extrapolation",
                          lambda v: None if v >= 2 else "expected >= 2"),
        "text_route": Field((bool,), True, "score the zero-pair text route on the same rows"),
    }
    condition_params = {
        "direction": Field((str,), REQUIRED, f"one of {list(DIRECTIONS)}",
                           lambda v: None if v in DIRECTIONS else f"expected one of {list(DIRECTIONS)}"),
    }
    columns = {"direction": "Utf8", "route": "Utf8", "n_train": "Int64", "alpha": "Float64", "src_family": "Utf8",
               "tgt_family": "Utf8", "denominator": "Float64"}
    column_docs = {
        "route": "ridge (linear map trained on n_train pairs) or text (AV explanation → other family's AR).",
        "n_train": "number of training pairs (0 for the text route).",
        "alpha": "ridge penalty chosen by grouped CV on the training pairs.",
    }

    @classmethod
    def validate(cls, spec: Any) -> None:
        dirs = [c.params["direction"] for c in spec.conditions]
        dup = sorted({d for d in dirs if dirs.count(d) > 1})
        if dup:
            raise SpecError(f"conditions: direction(s) {dup} appear more than once")

    def run(self, spec: Any, ctx: Any) -> Iterator[dict[str, list]]:
        from nla_probe.analysis.ridge import scaling_curve
        from nla_probe.defaults import REPO_ROOT

        p = spec.params
        fam = setup_two_families(spec, ctx)
        corpus = Path(p["train_corpus"])
        corpus = corpus if corpus.is_absolute() or corpus.is_file() else REPO_ROOT / corpus
        train = training_pairs(spec, ctx, fam, corpus)
        f = fam.frame
        sids, docs = f["sample_id"].to_list(), f["doc_id"].to_list()
        n = f.height
        cells = [("self", "other") if c.params["direction"] == "self_to_other" else ("other", "self")
                 for c in spec.conditions]
        rt = family_roundtrips(spec, fam, cells) if p["text_route"] else {}
        for cond, (src, tgt) in zip(spec.conditions, cells):
            den = fam.denominator[tgt]
            pos = f["position" if tgt == "self" else "tgt_position"].to_list()
            base = {"direction": [cond.params["direction"]] * n, "src_family": [fam.names[src]] * n,
                    "tgt_family": [fam.names[tgt]] * n}
            curve = scaling_curve(train[src], train[tgt], train["doc_id"], fam.gold[src], fam.gold[tgt], p["n_grid"],
                                  p["alphas"], n_folds=p["n_folds"], seed=spec.seed)
            for pt in curve:
                mse = pt["mse_nrm"]
                cos = 1.0 - mse / 2.0
                yield rows_block(spec, f"{cond.name}@n{pt['n_train']}", sids, docs, pos, empty_decode_fields(n),
                                 [""] * n, [0] * n, [""] * n, mse, cos, den,
                                 {**base, "route": ["ridge"] * n, "n_train": [pt["n_train"]] * n,
                                  "alpha": [pt["alpha"]] * n})
            if rt:
                r = rt[(src, tgt)]
                cos = rowwise_cos(r["vectors"], fam.gold[tgt])
                yield rows_block(spec, f"{cond.name}@text", sids, docs, pos, r, r["text"], r["ar_tokens"],
                                 r["overflow"], 2.0 * (1.0 - cos), cos, den,
                                 {**base, "route": ["text"] * n, "n_train": [0] * n, "alpha": [float("nan")] * n})

    def section_text(self, spec: Any, summary: Any) -> str:
        return ("Rows `<condition>@n<N>`: ridge map trained on N pairs from training documents; `<condition>@text`: "
                "the zero-pair text route. **fve_nrm uses the target family's denominator** (column "
                "`denominator`).")

    def caveats(self, spec: Any) -> list[str]:
        return ["The log-linear extrapolation of the crossover assumes the last gains per doubling continue; it is "
                "a trend line, not a prediction, and its CI covers evaluation-set sampling only (not the "
                "training-subset draw)."]

    def report_sections(self, spec: Any, frame: Any, out_dir: Path) -> list:
        return ridge_report(spec, frame, out_dir)


def training_pairs(spec: Any, ctx: Any, fam: Any, corpus: Path) -> dict:
    """Aligned training vectors ``{"self": [m, d_A], "other": [m, d_B], "doc_id": [m]}`` (module doc)."""
    import polars as pl

    from nla_probe.analysis.alignment import align_frame
    from nla_probe.nla.layers import cached_layers

    p = spec.params
    docs = read_documents(corpus, p["train_split"])
    eval_ids = set(ctx.data.frame["doc_id"].cast(str).to_list())
    eval_texts = set(ctx.data.frame["source_text"].to_list()) if "source_text" in ctx.data.frame.columns else set()
    clash = [d["doc_id"] for d in docs if d["doc_id"] in eval_ids or d["text"] in eval_texts]
    if clash:
        raise InputError(f"params.train_corpus: {len(clash)} training document(s) also occur in the evaluation data "
                         f"(e.g. {clash[:3]}); training and evaluation documents must be disjoint (check "
                         "params.train_split)")
    order = np.random.default_rng(spec.seed).permutation(len(docs))[:p["n_train_docs"]]
    docs = [docs[i] for i in sorted(order)]
    base_a = LazyBase(p["base_model"], ctx.handle.av_dir)
    base_b = LazyBase(p["other_base_model"], fam.ctx["other"].handle.av_dir, "params.other_base_model")
    frame = training_frame(docs, base_a.tokenizer, n_per_doc=p["positions_per_doc"], min_position=p["min_position"],
                           max_tokens=p["max_tokens"], seed=spec.seed)
    frame = align_frame(frame, base_b.tokenizer)
    if p["max_other_position"] >= 0:
        frame = frame.filter(pl.col("tgt_position") <= p["max_other_position"])
    if frame.height < 2:
        raise InputError(f"ridge: only {frame.height} training pairs from {len(docs)} documents of {corpus}")
    ka, kb = ctx.handle.contract.layer, fam.ctx["other"].handle.contract.layer
    va, vb = [], []
    block = 256
    for s in range(0, frame.height, block):
        part = frame.slice(s, block)
        va.append(cached_layers(ctx.cached, base_a, part, [ka], batch_size=p["extract_batch"])[ka])
        vb.append(cached_layers(ctx.cached, base_b, part, [kb], position_col="tgt_position", check_tokens=False,
                                batch_size=p["extract_batch"])[kb])
    return {"self": np.concatenate(va), "other": np.concatenate(vb), "doc_id": frame["doc_id"].to_list()}


def ridge_curve_table(frame: Any, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Any:
    """``direction, route, n_train, estimate, ci_low, ci_high, n, n_clusters, alpha`` (FVE per point)."""
    import polars as pl

    from nla_probe.analysis.stats import summarize

    g = frame.select("direction", "route", "n_train", "doc_id", "fve_nrm", "alpha")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="bootstrap over only")
        s = summarize(g, "fve_nrm", by=["direction", "route", "n_train"], cluster="doc_id", n_boot=n_boot,
                      level=level, seed=seed)
    a = g.group_by("direction", "route", "n_train").agg(pl.col("alpha").first())
    return s.join(a, on=["direction", "route", "n_train"], how="left")  # spec order, n ascending, text last


def crossover_table(frame: Any, fit_last: int, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Any:
    """Per direction: log-linear fit ``FVE ≈ a + b·log10 n`` on the ``fit_last`` largest n, the text route's
    FVE, the crossover ``n*`` and the CI of ``log10 n*`` (:func:`nla_probe.analysis.ridge.crossover_ci`), and the
    paired difference text route − ridge at the largest n (clustered CI, two-sided Wilcoxon ``p``)."""
    import polars as pl

    from nla_probe.analysis.ridge import crossover_ci
    from nla_probe.analysis.stats import paired_difference

    rows = []
    for (direction,), g in frame.group_by(["direction"], maintain_order=True):
        text = g.filter(pl.col("route") == "text").sort("sample_id")
        if text.height == 0:
            continue
        ridge = g.filter(pl.col("route") == "ridge")
        per_n = {int(n): ridge.filter(pl.col("n_train") == n).sort("sample_id")["fve_nrm"].to_numpy()
                 for n in ridge["n_train"].unique().to_list()}
        if len(per_n) < 2:
            continue
        c = crossover_ci(per_n, text["fve_nrm"].to_numpy(), text["doc_id"].to_list(), fit_last=fit_last,
                         n_boot=n_boot, level=level, seed=seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="bootstrap over only")
            gap = paired_difference(text["fve_nrm"].to_numpy(), per_n[max(per_n)], text["doc_id"].to_numpy(),
                                    n_boot=n_boot, level=level, seed=seed, nan_policy="omit")
        rows.append({"direction": direction, "text_route_fve": c["reference"], "fit_a": c["a"],
                     "fit_b_per_decade": c["b"], "fit_n": ",".join(map(str, c["n_fit"])), "n_star": c["n_star"],
                     "log10_n_star": float(np.log10(c["n_star"])) if 0 < c["n_star"] < np.inf else c["n_star"],
                     "log10_ci": f"[{c['log10_low']:.2f}, {c['log10_high']:.2f}]",
                     "share_no_crossover": c["share_infinite"], "max_n": max(per_n),
                     "ridge_fve_at_max_n": float(np.mean(per_n[max(per_n)])),
                     "text_minus_ridge_at_max_n": f"{gap.diff.estimate:+.3f} [{gap.diff.low:+.3f}, {gap.diff.high:+.3f}]",
                     "p": gap.p_value,
                     "status": ("ridge already above the text route" if np.mean(per_n[max(per_n)]) >= c["reference"]
                                else "extrapolated" if c["n_star"] < np.inf else "never (flat or falling trend)")})
    return pl.DataFrame(rows)


def ridge_report(spec: Any, frame: Any, out_dir: Path) -> list:
    """Report section: the scaling curve (table + log-x figure with the text route) and the crossover table."""
    import polars as pl

    from nla_probe.ablate.markdown import ReportSection
    from nla_probe.ablate.plots import curve, save_png

    m = spec.metrics
    t = ridge_curve_table(frame, m.n_boot, m.level, spec.seed)
    ridge = t.filter(pl.col("route") == "ridge").with_columns(pl.col("n_train").cast(pl.Float64))
    refs = {f"text route {r['direction']}": r["estimate"] for r in t.filter(pl.col("route") == "text").iter_rows(named=True)}
    figs = []
    if ridge.height:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            fig = curve(ridge, x="n_train", group="direction", logx=True, reference_lines=refs,
                        title=f"{spec.name}: ridge FVE vs training pairs", xlabel="training pairs (log scale)",
                        ylabel="fve_nrm (target family's denominator)")
            figs.append((save_png(fig, Path(out_dir) / "figures" / f"{spec.name}_curve.png", width=7, height=4.5),
                         "Ridge FVE on the evaluation rows vs number of training pairs; dashed: the zero-pair text "
                         f"route; ribbons: {m.level * 100:g}% clustered CIs."))
    sections = [ReportSection(title=f"{spec.name}: scaling curve", table=t, figures=figs,
                              metric="FVE (target family's Var(v_nrm))",
                              text="FVE of the ridge map per training size and of the text route (n_train = 0).")]
    x = crossover_table(frame, spec.params["fit_last"], m.n_boot, m.level, spec.seed)
    if x.height:
        sections.append(ReportSection(
            title=f"{spec.name}: extrapolated crossover",
            text=(f"Least-squares line FVE = a + b·log10(n) through the {spec.params['fit_last']} largest training "
                  "sizes; n* = where it reaches the text route's FVE (inf: never, b <= 0). log10_ci: clustered "
                  "bootstrap over evaluation documents of the whole fit. text_minus_ridge_at_max_n: paired "
                  "difference on the same rows with its clustered CI; p: two-sided Wilcoxon signed-rank."),
            table=x))
    return sections
