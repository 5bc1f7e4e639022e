"""``best_of_n``: test-time selection among N sampled explanations, with an independent verifier.

For every activation the AV draws ``K`` explanations with the spec's ``[sampling]`` (which must
sample, e.g. temperature 1): sample ``k`` (``k = 0 .. K-1``) is decoded with the sampling seed
``seed + k``, so the samples form one fixed sequence and a larger ``K`` reuses the smaller run's
samples from the store.  ``K`` is the largest ``n`` among the conditions.

Each condition (``[conditions.params]``) is one selection rule:

* ``n`` — the number of candidates: the first ``n`` samples (**prefix-N**, see
  :mod:`nla_probe.analysis.selection`); ``n = 0`` is the greedy decode instead (no sampling).
* ``select_by`` — who picks the winner: ``"ar"`` (default), the pair's own AR, i.e. the AR that
  also defines the metric (highest per-sample ``fve_nrm``), or ``"verifier"``.

The row's base columns (explanation, ``fve_nrm``, ...) describe the chosen sample as scored by the
pair's AR.  Extra columns:

* ``n_candidates`` (``n``), ``chosen`` (index of the chosen sample; −1 for greedy), ``select_by``.
* ``verifier_fve`` / ``verifier_cos`` — the chosen text scored by the **verifier**: a second AR
  (``params.verifier_ar``) that took no part in the selection (null where it has no gold vector or
  there is no verifier).  The
  difference between the gain of the selecting AR and the verifier's gain from ``n = 1`` to ``n``
  is the selection bias of using the metric's own AR as the selector.
* ``fve_subsets`` / ``verifier_fve_subsets`` — the all-subsets estimator
  (:func:`nla_probe.analysis.selection.subset_best`): expected FVE of the winner of a random ``n``-subset of
  all ``K`` samples (lower variance than the prefix; same expectation).

Verifier (``[params]``):

* ``verifier_ar`` — an AR checkpoint directory ("" = no verifier).  Relative paths are read from
  the working directory, else from the repository root.
* ``verifier_data`` — an activation parquet with the verifier's own gold vectors: either with a
  ``main_row`` column (the row of the data file each row is aligned to; data rows without one get
  no verifier score) — as the toy's second-family ``eval.parquet`` — or row-aligned with the data
  file (row i = the activation of row i's document at the position aligned by character offset,
  see :mod:`nla_probe.analysis.alignment`).
* ``verifier_base_model`` — or the verifier family's base LM (``"auto"`` =
  ``<verifier_ar>/../base``, the toy layout): its layer-K vectors are extracted at the positions
  aligned by character offset (:func:`nla_probe.analysis.alignment.align_frame`, cached in the store);
  ``verifier_align_error`` records the character offset of each aligned position, and
  ``verifier_max_position`` (>= 0) leaves rows whose aligned token index exceeds it without a
  verifier score (e.g. positions beyond the verifier base LM's training context).
* Neither (default): the verifier reads the run's gold vectors (same model, e.g. an AR trained on
  another split of the data).
* ``verifier_denominator`` — its FVE denominator: ``"auto"`` (the spec's denominator when the gold
  vectors are shared; Var(v_nrm) of the verifier's gold vectors of the scored rows otherwise), a
  registered name or a number.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nla_probe.ablate.kinds import ExperimentKind, register_experiment
from nla_probe.ablate.spec import Field
from nla_probe.errors import InputError, SpecError

SELECTORS = ("ar", "verifier")
#: Column of a ``verifier_data`` parquet holding, per row, the row of the data file it is aligned to.
ROW_COLUMN = "main_row"


def resolve_path(value: str) -> Path:
    """A spec path: as given when it exists (absolute, or relative to the working directory), else
    relative to the repository root (where ``ablations/`` and ``data/`` live)."""
    p = Path(value)
    if p.is_absolute() or p.exists():
        return p
    from nla_probe.defaults import REPO_ROOT

    return REPO_ROOT / p


def _denominator_check(v: Any) -> str | None:
    if isinstance(v, str):
        return None
    return None if math.isfinite(v) and v > 0 else "expected 'auto', a registered name or a positive number"


def _hash_rows(vectors: np.ndarray) -> str:
    v = np.ascontiguousarray(vectors, dtype="<f4")
    h = hashlib.sha256(str(v.shape).encode())
    h.update(v.tobytes())
    return h.hexdigest()


class Verifier:
    """A second AR scoring texts against its gold vectors, with store-cached scores.

    Args:
        path: AR checkpoint directory.
        ctx: the run context (store, device, dtype, selected data).
        data_path: row-aligned activation parquet for the verifier's gold ("" = not used).
        base_model: the verifier family's base LM ("auto" = ``<verifier_ar>/../base``; "" = not used):
            gold vectors are extracted at the positions aligned by character offset.
        denominator: ``"auto"``, a registered name or a number (see module doc).

    Attributes:
        align_error: per selected row (by ``sample_id``), ``|Δ char_end|`` of the aligned position
            (0 when the gold is shared or read from ``verifier_data``).
    """

    def __init__(self, path: str, ctx: Any, data_path: str = "", base_model: str = "", denominator: Any = "auto",
                 max_position: int = -1):
        from nla_probe.nla.contract import read_sidecar
        from nla_probe.nla.identity import checkpoint_identity

        self.path = resolve_path(path)
        self.ctx = ctx
        self.contract = read_sidecar(self.path)
        self.identity = checkpoint_identity(self.path)
        self._ar = None
        main = ctx.data.frame
        ids = [int(i) for i in main["sample_id"].to_list()]
        self.align_error = dict.fromkeys(ids, 0)
        self.valid = dict.fromkeys(ids, True)
        self.max_position = max_position
        self.gold: np.ndarray | None = None
        self._row: dict[int, int] = {}
        if data_path:
            self.gold, self.source = self._from_file(data_path, main, ids)
        elif base_model:
            self.gold, self.source = self._from_base(base_model, main, ids)
        elif self.contract.d_model != ctx.handle.contract.d_model:
            raise InputError(f"params.verifier_ar ({self.path}): d_model {self.contract.d_model} differs from the "
                             f"pair's {ctx.handle.contract.d_model}; give its gold as params.verifier_data or "
                             "params.verifier_base_model")
        else:
            self.source = "the run's gold vectors"
        self.denominator = self._denominator(denominator)

    def _from_file(self, data_path: str, main: Any, ids: list[int]) -> tuple[np.ndarray, str]:
        from nla_probe.nla.extraction import read_activations

        p = resolve_path(data_path)
        frame, vecs = read_activations(p, d_model=self.contract.d_model)
        theirs = frame["doc_id"].cast(str).to_list()
        if ROW_COLUMN in frame.columns:
            at = {int(r): k for k, r in enumerate(frame[ROW_COLUMN].to_list())}
            self._row = {i: at[i] for i in ids if i in at}
            self.valid = {i: i in at for i in ids}
            how = f"rows matched by its {ROW_COLUMN!r} column"
        else:
            need = max(ids, default=-1) + 1
            if vecs.shape[0] < need:
                raise InputError(f"params.verifier_data ({p}): expected at least {need} rows aligned with the data "
                                 f"file (or a {ROW_COLUMN!r} column), found {vecs.shape[0]}")
            self._row = {i: i for i in ids}
            how = "row-aligned"
        docs = dict(zip((int(i) for i in ids), main["doc_id"].cast(str).to_list()))
        bad = [i for i, r in self._row.items() if theirs[r] != docs[i]]
        if bad:
            raise InputError(f"params.verifier_data ({p}): the rows for data rows {bad[:10]} belong to other documents; "
                             f"the file must be row-aligned with the data file or carry a {ROW_COLUMN!r} column")
        return vecs, f"vectors from {p} ({how})"

    def _from_base(self, base_model: str, main: Any, ids: list[int]) -> tuple[np.ndarray, str]:
        from nla_probe.analysis.alignment import align_frame
        from nla_probe.nla.layers import LazyBase, cached_layers

        base = LazyBase(base_model, self.path, "params.verifier_base_model")
        k = self.contract.layer
        if base.n_blocks <= k:
            raise InputError(f"params.verifier_base_model: {base.path} has {base.n_blocks} blocks, the verifier "
                             f"reads layer {k}")
        frame = align_frame(main, base.tokenizer)
        bs = self.ctx.batch_size
        parts = [cached_layers(self.ctx.cached, base, frame.slice(s, bs), [k], position_col="tgt_position",
                               check_tokens=False)[k] for s in range(0, frame.height, bs)]
        self._row = {i: r for r, i in enumerate(ids)}
        self.align_error = {i: int(e) for i, e in zip(ids, frame["align_error"].to_list())}
        if self.max_position >= 0:
            self.valid = {i: int(t) <= self.max_position for i, t in zip(ids, frame["tgt_position"].to_list())}
        return (np.concatenate(parts).astype(np.float32),
                f"layer-{k} vectors of {base.path} at the positions aligned by character offset")

    def _denominator(self, setting: Any) -> tuple[float, str]:
        from nla_probe.analysis.metrics import get_denominator, variance_baseline

        if isinstance(setting, (int, float)):
            return float(setting), "a number given in the spec"
        if setting == "auto":
            if self.gold is None:
                return self.ctx.denominator
            gold = self.gold[sorted({r for i, r in self._row.items() if self.valid[i]})]
            return float(variance_baseline(gold)), f"Var(v_nrm) of the verifier's {len(gold)} gold vectors"
        d = get_denominator(setting)
        return d.value, f"{d.name}: {d.source}"

    def _gold(self, chunk: Any) -> tuple[np.ndarray, str]:
        """Gold rows of the chunk (rows without a verifier gold get the first row; their score is NaN)."""
        if self.gold is None:
            return chunk.vectors, chunk.vec_hash
        v = self.gold[[self._row.get(int(i), 0) for i in chunk.sample_ids]]
        return v, _hash_rows(v)

    @property
    def ar(self) -> Any:
        if self._ar is None:
            from nla_probe.nla.checkpoint import load_ar

            h = self.ctx.handle
            self._ar = load_ar(self.path, dtype=h.dtype, device=h.device)
        return self._ar

    def score(self, chunk: Any, texts: list[str]) -> dict[str, list]:
        """``mse_nrm``, ``cos`` and ``fve_nrm`` (with :attr:`denominator`) of ``texts`` for the chunk."""
        policy = self.ctx.spec.metrics.on_overflow
        gold, gold_hash = self._gold(chunk)
        h = self.ctx.handle
        payload = {"ar": self.identity["fingerprint"], "dtype": h.dtype, "device_type": str(h.device).split(":")[0],
                   "gold": gold_hash, "on_overflow": policy,
                   "texts": hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()}

        def compute() -> dict:
            from nla_probe.analysis.metrics import cosine, mse_nrm

            rec = self.ar.reconstruct_detailed(texts, batch_size=max(len(texts), 1), on_overflow=policy)
            return {"mse_nrm": [float(x) for x in mse_nrm(rec.vectors, gold, self.contract.mse_scale)],
                    "cos": [float(x) for x in cosine(rec.vectors, gold)]}

        out = dict(self.ctx.cached("verifier_score", payload, compute, rows=len(texts)))
        ok = [self.valid[int(i)] for i in chunk.sample_ids]
        out["mse_nrm"] = [m if v else math.nan for m, v in zip(out["mse_nrm"], ok)]
        out["cos"] = [c if v else math.nan for c, v in zip(out["cos"], ok)]
        out["fve_nrm"] = [1.0 - m / self.denominator[0] for m in out["mse_nrm"]]
        return out


def _select_check(v: str) -> str | None:
    return None if v in SELECTORS else f"expected one of {list(SELECTORS)}"


@register_experiment
class BestOfN(ExperimentKind):
    """Prefix-N selection among sampled decodes, with an optional independent verifier."""

    name = "best_of_n"
    description = ("N sampled explanations per activation; the prefix-n best chosen by the AR (or a verifier); "
                   "FVE vs n, and the chosen text scored by an independent verifier")
    condition_keys = ("params",)
    params = {
        "verifier_ar": Field((str,), "", "AR checkpoint directory of the independent verifier ('' = none)"),
        "verifier_data": Field((str,), "", "activation parquet of the verifier's gold, with a 'main_row' column or "
                                           "row-aligned with the data file ('' = not used)"),
        "verifier_base_model": Field((str,), "", "the verifier family's base LM ('auto' = <verifier_ar>/../base) to "
                                                 "extract its gold at positions aligned by character offset ('' = "
                                                 "none)"),
        "verifier_max_position": Field((int,), -1, "with verifier_base_model: rows whose aligned token index exceeds "
                                                   "this get no verifier score (NaN), e.g. the base LM's training "
                                                   "context − 1 (-1: no limit)"),
        "verifier_denominator": Field((str, float), "auto", "verifier FVE denominator: 'auto', a name or a number",
                                      _denominator_check),
    }
    condition_params = {
        "n": Field((int,), 1, "candidates: the first n samples (0 = the greedy decode)",
                   lambda v: None if v >= 0 else "expected an integer >= 0"),
        "select_by": Field((str,), "ar", f"who chooses: one of {list(SELECTORS)}", _select_check),
    }
    columns = {"n_candidates": "Int64", "chosen": "Int64", "select_by": "Utf8", "verifier_fve": "Float64",
               "verifier_cos": "Float64", "fve_subsets": "Float64", "verifier_fve_subsets": "Float64",
               "verifier_align_error": "Int64"}
    column_docs = {
        "n_candidates": "number of sampled candidates the winner was chosen from (0 = greedy decode).",
        "chosen": "index of the chosen sample in sampling order (−1 = greedy).",
        "verifier_fve": "fve_nrm of the chosen text under the independent verifier AR (its own denominator); "
                        "null where the verifier has no gold vector (means are over the scored rows).",
        "fve_subsets": "expected fve_nrm of the winner of a uniformly random n-subset of all K samples.",
        "verifier_fve_subsets": "the same under the verifier.",
        "verifier_align_error": "characters between the row's token end and the verifier's aligned token end "
                                "(0 when the verifier reads the same positions).",
    }
    summary_means = {"verifier_fve": "verifier_fve", "fve_subsets": "fve_subsets",
                     "verifier_fve_subsets": "verifier_fve_subsets"}

    @classmethod
    def validate(cls, spec: Any) -> None:
        if not spec.sampling.do_sample:
            raise SpecError("sampling.do_sample: kind 'best_of_n' draws its candidates by sampling; expected true, "
                            "found false (the greedy decode is the condition with params.n = 0)")
        for c in spec.conditions:
            if c.params["select_by"] == "verifier" and not spec.params["verifier_ar"]:
                raise SpecError(f"conditions ({c.name!r}).params.select_by: 'verifier' needs params.verifier_ar")
            if c.params["n"] == 0 and c.params["select_by"] != "ar":
                raise SpecError(f"conditions ({c.name!r}).params: n = 0 is the greedy decode; select_by does not "
                                f"apply, found {c.params['select_by']!r}")
        p = spec.params
        for key in ("verifier_data", "verifier_base_model"):
            if p[key] and not p["verifier_ar"]:
                raise SpecError(f"params.{key}: given without params.verifier_ar")
        if p["verifier_max_position"] >= 0 and not p["verifier_base_model"]:
            raise SpecError("params.verifier_max_position: only used with params.verifier_base_model")
        if p["verifier_data"] and p["verifier_base_model"]:
            raise SpecError("params.verifier_data and params.verifier_base_model: give at most one source of the "
                            "verifier's gold vectors")

    def run(self, spec: Any, ctx: Any) -> Iterator[dict[str, list]]:
        from nla_probe.analysis.selection import prefix_best_index, subset_best

        conds = [(c, c.params["n"], c.params["select_by"]) for c in spec.conditions]
        k_max = max(n for _, n, _ in conds)
        p = spec.params
        verifier = Verifier(p["verifier_ar"], ctx, p["verifier_data"], p["verifier_base_model"],
                            p["verifier_denominator"], p["verifier_max_position"]) if p["verifier_ar"] else None
        b = ctx.denominator[0]
        for chunk in ctx.chunks():
            rows_n = len(chunk)
            samples, scores = [], []
            main = np.full((rows_n, k_max), np.nan)
            ver = np.full((rows_n, k_max), np.nan)
            ver_cos = np.full((rows_n, k_max), np.nan)
            for k in range(k_max):
                dec = ctx.decode(chunk, (), {**spec.sampling.to_dict(), "seed": spec.seed + k})
                texts = [d["explanation"] for d in dec]
                sc = ctx.score(chunk, texts)
                samples.append(dec)
                scores.append(sc)
                main[:, k] = [1.0 - m / b for m in sc["mse_nrm"]]
                if verifier is not None:
                    vs = verifier.score(chunk, texts)
                    ver[:, k], ver_cos[:, k] = vs["fve_nrm"], vs["cos"]
            batch: dict[str, list] = {}
            for cond, n, select_by in conds:
                if n == 0:
                    dec = ctx.decode(chunk, (), {**spec.sampling.to_dict(), "do_sample": False, "seed": spec.seed})
                    texts = [d["explanation"] for d in dec]
                    sc = ctx.score(chunk, texts)
                    rows = ctx.base_rows(chunk, cond.name, dec, texts, sc)
                    vs = verifier.score(chunk, texts) if verifier is not None else None
                    nan = [math.nan] * rows_n
                    rows.update(n_candidates=[0] * rows_n, chosen=[-1] * rows_n, select_by=["greedy"] * rows_n,
                                verifier_fve=vs["fve_nrm"] if vs else nan, verifier_cos=vs["cos"] if vs else nan,
                                fve_subsets=rows["fve_nrm"], verifier_fve_subsets=vs["fve_nrm"] if vs else nan)
                else:
                    sel = main if select_by == "ar" else ver
                    idx = prefix_best_index(sel, [n])[:, 0]
                    dec = [samples[j][i] for i, j in enumerate(idx)]
                    texts = [d["explanation"] for d in dec]
                    sc = {key: [scores[j][key][i] for i, j in enumerate(idx)]
                          for key in ("mse_nrm", "cos", "ar_tokens", "overflow")}
                    rows = ctx.base_rows(chunk, cond.name, dec, texts, sc)
                    ar_rows = np.arange(rows_n)
                    rows.update(n_candidates=[n] * rows_n, chosen=[int(j) for j in idx], select_by=[select_by] * rows_n,
                                verifier_fve=ver[ar_rows, idx].tolist(), verifier_cos=ver_cos[ar_rows, idx].tolist(),
                                fve_subsets=subset_best(sel, [n], main)[:, 0].tolist(),
                                verifier_fve_subsets=subset_best(sel, [n], ver)[:, 0].tolist())
                rows["verifier_align_error"] = ([verifier.align_error[int(i)] for i in chunk.sample_ids]
                                                if verifier is not None else [0] * rows_n)
                for key in ("verifier_fve", "verifier_cos", "verifier_fve_subsets"):
                    rows[key] = [None if math.isnan(x) else float(x) for x in rows[key]]  # null: not scored
                for key, v in rows.items():
                    batch.setdefault(key, []).extend(v)
            yield batch

    # ------------------------------------------------------------------------------------ report

    def report_sections(self, spec: Any, frame: Any, out_dir: Path) -> list:
        """A section with the selection table (FVE, gain over N = 1 and selection bias, clustered CIs)
        and the figures FVE vs N and gain vs N."""
        import warnings

        from nla_probe.ablate.markdown import ReportSection
        from nla_probe.ablate.plots import curve

        table = selection_table(frame, spec)
        if table is None:
            return []
        m = spec.metrics
        has_ver = bool(spec.params["verifier_ar"])
        ns = sorted(set(table["N"].to_list()))
        fig_dir = Path(out_dir) / "figures"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            plot = curve(table.filter(table["quantity"] == "fve"), x="N", group="scorer", logx=True,
                         title=f"{spec.name}: FVE of the prefix-N best (chosen by the pair's AR)",
                         xlabel="N (samples, log scale)", ylabel="fve_nrm of the chosen sample",
                         reference_lines=_greedy_lines(frame, has_ver))
            figs = [(_save(plot, ns, fig_dir / f"{spec.name}_fve_vs_n.png"),
                     f"mean fve_nrm of the AR-chosen sample vs N, {m.level * 100:g}% clustered CIs; 'verifier' "
                     "scores the same chosen texts with the independent AR; dashed: greedy decode.")]
            gains = table.filter(table["quantity"] == "gain")
            if gains.height:
                plot = curve(gains, x="N", group="scorer", logx=True, reference_lines={"no gain": 0.0},
                             title=f"{spec.name}: gain over N = 1 (paired)", xlabel="N (samples, log scale)",
                             ylabel="Δ fve_nrm vs N = 1")
                figs.append((_save(plot, ns, fig_dir / f"{spec.name}_gain_vs_n.png"),
                             "paired gain over a single sample; the gap between the selector's and the verifier's "
                             "gain is the selection bias."))
        text = ("Conditions selected by the pair's AR, per N: `fve` = mean fve_nrm of the chosen sample; `gain` = "
                "paired difference to N = 1 on the same activations; `bias` = gain under the selecting AR − gain "
                "under the verifier (the part of the selector's gain the independent verifier does not confirm). "
                "Each scorer uses its own denominator.")
        if not has_ver:
            text += " No verifier was given (params.verifier_ar), so the selection bias is not measured."
        return [ReportSection(title=f"{spec.name}: FVE vs N and selection bias", text=text,
                              table=table.drop("scorer_order"), figures=figs, metric="fve_nrm")]

    def caveats(self, spec: Any) -> list[str]:
        from nla_probe.ablate.markdown import CAVEATS

        out = [CAVEATS["self_selection"]]
        if spec.params["verifier_data"] or spec.params["verifier_base_model"]:
            out.append("The verifier belongs to another model family and reads its own gold vectors: its FVE has "
                       "another denominator and scale, so compare gains, not levels.")
        return out


def _save(plot: Any, breaks: list[int], path: Path) -> Path:
    import warnings

    from plotnine import scale_x_log10

    from nla_probe.ablate.plots import save_png

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Scale for 'x' is already present.*")
        return save_png(plot + scale_x_log10(breaks=breaks), path, width=7.0, height=4.0)


def _greedy_lines(frame: Any, has_ver: bool) -> dict[str, float]:
    import polars as pl

    g = frame.filter(pl.col("n_candidates") == 0)
    if g.height == 0:
        return {}
    out = {"greedy (pair's AR)": float(g["fve_nrm"].mean())}
    if has_ver:
        out["greedy (verifier)"] = float(g["verifier_fve"].mean())
    return out


def selection_table(frame: Any, spec: Any) -> Any:
    """Per ``n`` (AR-selected conditions): mean FVE with CI under the selecting AR and the verifier,
    the gain over ``n = 1`` (paired, clustered CI) and, with a verifier, the selection bias
    ``gain_AR − gain_verifier`` (paired, clustered CI).  None when there is no ``n = 1`` condition.

    Columns: ``quantity`` ("fve", "gain", "bias"), ``scorer``, ``scorer_order``, ``N`` (candidates),
    ``estimate, ci_low, ci_high, n, n_clusters`` (n = activations, n_clusters = documents).
    """
    import polars as pl

    from nla_probe.analysis.stats import cluster_bootstrap_ci

    m = spec.metrics
    f = frame.filter(pl.col("select_by") == "ar")
    if f.height == 0 or f.filter(pl.col("n_candidates") == 1).height == 0:
        return None
    has_ver = bool(f["verifier_fve"].fill_nan(None).is_not_null().any())
    one = f.filter(pl.col("n_candidates") == 1).select("sample_id", pl.col("fve_nrm").alias("f1"),
                                                        pl.col("verifier_fve").alias("v1"))
    rows = []

    def add(quantity: str, scorer: str, order: int, n: int, values: Any, docs: Any) -> None:
        ok = np.isfinite(values)
        if not ok.any():
            return
        ci = cluster_bootstrap_ci(values[ok], docs[ok], n_boot=m.n_boot, level=m.level, seed=spec.seed)
        rows.append({"quantity": quantity, "scorer": scorer, "scorer_order": order, "N": n,
                     "estimate": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "n": ci.n,
                     "n_clusters": ci.n_clusters})

    for n in sorted(set(f["n_candidates"].to_list())):
        g = f.filter(pl.col("n_candidates") == n).join(one, on="sample_id", how="inner")
        docs = g["doc_id"].to_numpy()
        fv, vv = g["fve_nrm"].to_numpy().astype(float), g["verifier_fve"].to_numpy().astype(float)
        add("fve", "pair's AR (selector)", 0, n, fv, docs)
        if has_ver:
            add("fve", "verifier", 1, n, vv, docs)
        if n > 1:
            ga, gv = fv - g["f1"].to_numpy(), vv - g["v1"].to_numpy()
            add("gain", "pair's AR (selector)", 0, n, ga, docs)
            if has_ver:
                add("gain", "verifier", 1, n, gv, docs)
                add("bias", "AR − verifier", 2, n, ga - gv, docs)
    order = {"fve": 0, "gain": 1, "bias": 2}
    out = pl.DataFrame(rows).with_columns(pl.col("quantity").replace_strict(order, return_dtype=pl.Int64).alias("_q"))
    return out.sort(["_q", "scorer_order", "N"]).drop("_q")
