"""The ablation engine behind ``nla-probe ablate`` and :func:`ablate`.

``ablate(specs, pair, data, out=...)`` runs each spec's experiment kind over the selected
activations and returns an :class:`~nla_probe.ablate.result.AblationResult`.  Layout of ``out``::

    store/                 append-only record store (nla_probe.ablate.store): every decode and AR score
    results/<name>.parquet tidy results, one row per activation x condition (rebuilt from store/)
    results/info.json      provenance: specs, checkpoint identities, data, seeds, versions, settings
    specs/<name>.toml      the specs as run
    report.md, figures/, tables/

Caching and resumption.  Activations are cut into chunks of ``batch_size`` consecutive rows (after
``n``/``limit`` and ``shard`` selection).  A chunk's decode is stored under the sha256 of
(AV fingerprint, backend, dtype, device type, the chunk's vectors, hook specs, sampling parameters
and seed), its AR scores under the sha256 of (AR fingerprint, dtype, device type, gold vectors,
the scored texts, overflow policy).  Work whose key is stored is read back, not redone: a run
killed at any moment resumes where it stopped, and identical work shared by conditions or
experiments (e.g. the baseline decode) is done once.  Greedy keys leave out temperature, top_p
and seed, which greedy decoding does not use.  A sampled chunk is decoded with the seed
``sha256(seed, chunk vectors)``, so its samples depend on the chunk's content and composition
(change ``batch_size`` or ``shard`` and you get other, equally valid samples).  Backend options
(tensor/data parallel sizes) are not part of the key.

FVE: ``fve_nrm = 1 − mse_nrm / B`` with ``B`` resolved once per spec: an explicit ``denominator``
argument, else the spec's ``metrics.denominator`` (a number or a registered name), else
(``"auto"``) ``Var(v_nrm)`` of every activation in the data file (before ``n``/``limit``/``shard``,
so shards agree) — stated as such in the report, since it is not the training-set constant.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nla_probe.ablate.inputs import (
    ActivationData,
    PairHandle,
    load_activations,
    parse_shard,
    prepare_out,
    resolve_denominator,
    vectors_hash,
)
from nla_probe.ablate.store import write_json_atomic
from nla_probe.errors import InputError, NLAProbeError

logger = logging.getLogger("nla_probe.ablate.engine")

KEY_VERSION = 1


# ------------------------------------------------------------------------------------------ context


@dataclass(frozen=True, eq=False)
class Chunk:
    """``batch_size`` consecutive selected activations.

    Attributes:
        index: chunk number within the selection.
        sample_ids: row numbers in the data file.
        doc_ids, positions: metadata per row (position None when the file has none).
        vectors: ``[rows, d]`` raw activations.
        vec_hash: :func:`vectors_hash` of ``vectors``.
    """

    index: int
    sample_ids: tuple[int, ...]
    doc_ids: tuple[str, ...]
    positions: tuple[int | None, ...]
    vectors: np.ndarray
    vec_hash: str

    def __len__(self) -> int:
        return len(self.sample_ids)


def _canonical_sampling(sampling: Mapping[str, Any]) -> dict:
    s = {"max_new_tokens": int(sampling["max_new_tokens"]), "do_sample": bool(sampling["do_sample"])}
    if s["do_sample"]:
        s.update(temperature=float(sampling["temperature"]), top_p=float(sampling["top_p"]),
                 seed=int(sampling["seed"]))
    return s


class RunContext:
    """What an experiment kind computes with: chunks of activations and cached decode/score calls.

    Attributes:
        spec: the spec being run.
        handle: the :class:`PairHandle`.
        store: the :class:`~nla_probe.ablate.store.Store`.
        data: the selected :class:`ActivationData`.
        batch_size: rows per chunk (= generation and AR batch size).
        denominator: ``(value, source)`` of the FVE denominator.
        counts: ``{"decode"|"score"|...: {"computed": rows, "reused": rows}}`` of this run.
    """

    def __init__(self, spec: Any, handle: PairHandle, store: Any, data: ActivationData, batch_size: int,
                 denominator: tuple[float, str], progress: bool = False):
        self.spec, self.handle, self.store, self.data = spec, handle, store, data
        self.batch_size, self.denominator, self.progress = batch_size, denominator, progress
        self.counts: dict[str, dict[str, int]] = {}
        self._hooks: dict[str, Any] = {}
        self.chunks_drawn = 0  # chunks handed out by chunks() so far (progress reporting)
        self.lines: Any = None  # a ProgressLines, set by the engine when output goes to a log

    def _count(self, type_: str, what: str, rows: int) -> None:
        self.counts.setdefault(type_, {"computed": 0, "reused": 0})[what] += rows

    def n_chunks(self) -> int:
        return -(-self.data.vectors.shape[0] // self.batch_size)

    def chunks(self) -> Iterator[Chunk]:
        """The selected activations in file order, ``batch_size`` rows at a time."""
        f = self.data.frame
        ids = f["sample_id"].to_list()
        docs = f["doc_id"].to_list()
        pos = f["position"].to_list() if "position" in f.columns else [None] * f.height
        starts = range(0, len(ids), self.batch_size)
        if self.progress:
            from nla_probe.progress import track

            starts = track(list(starts), description=f"{self.spec.name}")
        for k, s in enumerate(starts):
            self.chunks_drawn = k + 1
            if self.lines is not None and k:
                self.lines.chunk_done(k)
            e = s + self.batch_size
            v = self.data.vectors[s:e].copy()  # writable (parquet-backed arrays may be read-only)
            yield Chunk(k, tuple(ids[s:e]), tuple(docs[s:e]), tuple(pos[s:e]), v, vectors_hash(v))

    def cached(self, type_: str, key_payload: Mapping[str, Any], compute: Callable[[], Any], rows: int = 1) -> Any:
        """``compute()`` stored under ``sha256(key_payload)`` (read back if stored); JSON-safe results only."""
        from nla_probe.ablate.store import content_key

        key = content_key({"type": type_, "key_version": KEY_VERSION, **key_payload})
        if key in self.store:
            self._count(type_, "reused", rows)
            return self.store.get(key)
        value = compute()
        self.store.put(key, type_, value)
        self._count(type_, "computed", rows)
        return value

    def hook_objects(self, hooks: Sequence[Mapping[str, Any]]) -> list:
        """Generation hook objects for hook specs (built once per distinct spec)."""
        if not hooks:
            return []
        from nla_probe.hooks import hook_from_spec

        out = []
        for h in hooks:
            k = json.dumps(h, sort_keys=True)
            if k not in self._hooks:
                self._hooks[k] = hook_from_spec(dict(h))
            out.append(self._hooks[k])
        return out

    def decode(self, chunk: Chunk, hooks: Sequence[Mapping[str, Any]], sampling: Mapping[str, Any]) -> list[dict]:
        """One decode dict per row (``explanation, raw_text, tag_status, n_tokens, finish_reason,
        token_ids``) for the chunk under ``hooks`` and ``sampling`` (see module doc for the key)."""
        samp = _canonical_sampling(sampling)
        h = self.handle
        payload = {"av": h.identity["av"]["fingerprint"], "backend": h.backend, "dtype": h.dtype,
                   "device_type": str(h.device).split(":")[0], "vectors": chunk.vec_hash,
                   "hooks": [dict(x) for x in hooks], "sampling": samp}

        def compute() -> dict:
            seed = 0
            if samp["do_sample"]:
                seed = int(hashlib.sha256(f"{samp['seed']}|{chunk.vec_hash}".encode()).hexdigest()[:8], 16) % 2**31
            decs = h.verbalizer.verbalize(chunk.vectors, max_new_tokens=samp["max_new_tokens"],
                                          do_sample=samp["do_sample"], temperature=samp.get("temperature", 1.0),
                                          top_p=samp.get("top_p", 1.0), seed=seed,
                                          hooks=self.hook_objects(hooks), batch_size=max(len(chunk), 1))
            return {"decodes": [{"explanation": d.explanation, "raw_text": d.raw_text, "tag_status": d.tag_status,
                                 "n_tokens": d.n_tokens, "finish_reason": d.finish_reason,
                                 "token_ids": list(d.token_ids)} for d in decs]}

        return self.cached("decode", payload, compute, rows=len(chunk))["decodes"]

    def score(self, chunk: Chunk, texts: Sequence[str], on_overflow: str | None = None) -> dict[str, list]:
        """AR scores of ``texts`` against the chunk's vectors: ``mse_nrm, cos, ar_tokens, overflow``."""
        if len(texts) != len(chunk):
            raise InputError(f"score: expected {len(chunk)} texts for the chunk, found {len(texts)}")
        policy = on_overflow or self.spec.metrics.on_overflow
        h = self.handle
        texts = [str(t) for t in texts]
        payload = {"ar": h.identity["ar"]["fingerprint"], "dtype": h.dtype,
                   "device_type": str(h.device).split(":")[0], "gold": chunk.vec_hash,
                   "texts": hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest(),
                   "on_overflow": policy}

        def compute() -> dict:
            from nla_probe.analysis.metrics import cosine, mse_nrm

            ar = h.pair.ar
            rec = ar.reconstruct_detailed(texts, batch_size=max(len(texts), 1), on_overflow=policy)
            return {"mse_nrm": [float(x) for x in mse_nrm(rec.vectors, chunk.vectors, ar.contract.mse_scale)],
                    "cos": [float(x) for x in cosine(rec.vectors, chunk.vectors)],
                    "ar_tokens": list(rec.n_tokens), "overflow": list(rec.overflow)}

        return self.cached("score", payload, compute, rows=len(chunk))

    def bind(self, transform: Any) -> Any:
        """``transform`` with run-time resources (the AR tokenizer) bound."""
        from nla_probe.surgery import Compose, KeepFirstTokens, ReplaceSpans

        def needs(t: Any) -> bool:
            if isinstance(t, Compose):
                return any(needs(s) for s in t.steps)
            return (isinstance(t, ReplaceSpans) and t.with_ == "tokens" and t.vocab is None) or \
                (isinstance(t, KeepFirstTokens) and t.unit == "tokens" and t.tokenizer is None)

        return transform.bind(tokenizer=self.handle.ar_tokenizer) if needs(transform) else transform

    def transform(self, specs: Sequence[Mapping[str, Any]]) -> Callable[[str], str]:
        """The composition of transform specs (identity when empty), bound to the AR tokenizer."""
        from nla_probe.surgery import Compose, from_spec

        if not specs:
            return lambda text: text
        steps = [from_spec(dict(s)) for s in specs]
        return self.bind(steps[0] if len(steps) == 1 else Compose(tuple(steps)))

    def base_rows(self, chunk: Chunk, condition: str, decodes: Sequence[Mapping[str, Any]], texts: Sequence[str],
                  scores: Mapping[str, Sequence[Any]]) -> dict[str, list]:
        """The :data:`~nla_probe.ablate.result.BASE_COLUMNS` of one chunk under one condition."""
        b = self.denominator[0]
        n = len(chunk)
        return {
            "experiment": [self.spec.name] * n, "condition": [condition] * n,
            "sample_id": list(chunk.sample_ids), "doc_id": list(chunk.doc_ids), "position": list(chunk.positions),
            "explanation": [d["explanation"] for d in decodes], "text": list(texts),
            "tag_status": [d["tag_status"] for d in decodes], "n_tokens": [d["n_tokens"] for d in decodes],
            "finish_reason": [d["finish_reason"] for d in decodes], "ar_tokens": list(scores["ar_tokens"]),
            "overflow": list(scores["overflow"]), "mse_nrm": list(scores["mse_nrm"]), "cos": list(scores["cos"]),
            "fve_nrm": [1.0 - m / b for m in scores["mse_nrm"]],
        }


# ------------------------------------------------------------------------------------------ results writer


class ResultWriter:
    """Streams result batches to ``path`` (parquet, written to ``path.tmp`` then renamed).

    Batches are buffered into row groups of at least ``row_group`` rows, so memory is bounded by
    one row group whatever the number of activations.
    """

    def __init__(self, path: Path, columns: Mapping[str, str], row_group: int = 8192):
        import polars as pl

        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        self.schema = {k: getattr(pl, v) for k, v in columns.items()}
        self.row_group = row_group
        self._writer = None
        self._buffer: list = []
        self._buffered = 0
        self.rows = 0
        self.finite = 0  # rows with a finite fve_nrm

    def write(self, batch: Mapping[str, list]) -> None:
        import polars as pl

        missing, extra = set(self.schema) - set(batch), set(batch) - set(self.schema)
        if missing or extra:
            raise NLAProbeError(f"result batch: missing columns {sorted(missing)}, undeclared columns "
                                f"{sorted(extra)} (declare them in the kind's `columns`)")
        frame = pl.DataFrame({k: batch[k] for k in self.schema}, schema=self.schema)
        self._buffer.append(frame)
        self._buffered += frame.height
        self.rows += frame.height
        if "fve_nrm" in frame.columns:
            self.finite += int(frame["fve_nrm"].is_finite().sum())
        if self._buffered >= self.row_group:
            self._flush()

    def _flush(self) -> None:
        import polars as pl
        import pyarrow.parquet as pq

        if not self._buffer:
            return
        table = pl.concat(self._buffer).to_arrow()
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(str(self.tmp), table.schema)
        self._writer.write_table(table.cast(self._writer.schema))
        self._buffer, self._buffered = [], 0

    def close(self) -> Path:
        import polars as pl

        self._flush()
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            pl.DataFrame(schema=self.schema).write_parquet(self.tmp)
        else:
            self._writer.close()
        self.tmp.replace(self.path)
        return self.path


# ------------------------------------------------------------------------------------------ entry point


def _as_specs(specs: Any) -> list:
    from nla_probe.ablate.spec import Spec, load_spec

    items = specs if isinstance(specs, (list, tuple)) else [specs]
    out = []
    for s in items:
        if isinstance(s, Spec):
            out.append(s)
        elif isinstance(s, Mapping):
            out.append(Spec.from_dict(s))
        elif isinstance(s, (str, Path)):
            out.append(load_spec(s))
        else:
            raise InputError(f"spec: expected a Spec, a dict, a path or a spec name, found {type(s).__name__}")
    if not out:
        raise InputError("specs: expected at least one spec, found none")
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"specs: experiment names must be unique in one run, found duplicates {dup}")
    return out


def _preflight(pair: Any, specs: list, **kwargs: Any) -> None:
    """The memory-plan check (:func:`~nla_probe.nla.preflight.check_before_loading`) for a pair given as
    checkpoint directories, before anything loads; the largest ``max_new_tokens`` of the specs counts."""
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        return
    from nla_probe.nla.preflight import check_before_loading

    new = max((s.sampling_for(c)["max_new_tokens"] for s in specs for c in s.conditions), default=200)
    check_before_loading(pair[0], pair[1], max_new_tokens=int(new), **kwargs)


def _handle(pair: Any, **kwargs: Any) -> PairHandle:
    from nla_probe.nla.checkpoint import NLAPair

    if isinstance(pair, PairHandle):
        return pair
    if isinstance(pair, NLAPair):
        return PairHandle(pair, **kwargs)
    if pair is None:
        from nla_probe.toy.fixtures import default_pair_dirs

        pair = default_pair_dirs()
    if isinstance(pair, (tuple, list)) and len(pair) == 2:
        return PairHandle(None, pair[0], pair[1], **kwargs)
    raise InputError(f"pair: expected an NLAPair or (av_dir, ar_dir), found {type(pair).__name__}")


def ablate(specs: Any, pair: Any = None, data: Any = None, *, out: str | Path | None = None, backend: str = "hf",
           device: str | None = None, dtype: Any = None, backend_options: Mapping[str, Any] | None = None,
           limit: int | None = None, shard: str | tuple[int, int] | None = None, batch_size: int = 32,
           denominator: Any = None, progress: bool = False,
           on_chunk: Callable[[str, int, int], None] | None = None, report: bool = True,
           attribution_rows: int | None = None) -> Any:
    """Run ablation specs on an NLA pair and activations; returns an :class:`AblationResult`.

    Args:
        specs: a :class:`~nla_probe.ablate.spec.Spec`, a spec dict, a TOML path or spec name, or a list of them.
        pair: an :class:`~nla_probe.nla.checkpoint.NLAPair`, ``(av_dir, ar_dir)`` (weights load only when
            work is not cached), or None for the embedded toy pair (:mod:`nla_probe.defaults`).
        data: activation parquet path, ``(frame, vectors)`` or a frame with ``activation_vector``;
            None = the toy evaluation set.
        out: output directory (store, results, report); None = a new temporary directory.
        backend, backend_options: AV generation backend and its options (e.g.
            ``{"tensor_parallel_size": 2}`` for vLLM).
        device, dtype: where and in which precision to load the pair (None: cpu, and bf16 on CUDA /
            fp32 on CPU); only with directories, since an NLAPair is already loaded.
        limit: cap on activations per spec (first rows of the file), on top of the spec's ``n``.
        shard: ``"i/n"``: keep only documents of shard i (see :func:`shard_of`).
        batch_size: rows per chunk = generation/AR batch (part of the decode cache key).
        denominator: overrides every spec's ``metrics.denominator`` (number, name or (value, source)).
        progress: show progress bars on a terminal.
        on_chunk: called as ``on_chunk(experiment, chunk_index, n_chunks)`` after each stored chunk.
        report: write ``report.md``, figures and ``report.html``.
        attribution_rows: activations per experiment whose spans and sentences get a leave-one-out
            ΔFVE (:mod:`nla_probe.ablate.attribution`; None = its ``DEFAULT_ROWS``, 0 = none).
    """
    import tempfile

    from nla_probe.ablate.kinds import get_experiment
    from nla_probe.ablate.result import AblationResult, result_columns
    from nla_probe.ablate.store import Store

    t0 = time.monotonic()
    specs = _as_specs(specs)
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InputError(f"batch_size: expected an integer >= 1, found {batch_size!r}")
    if limit is not None and not (isinstance(limit, int) and limit >= 1):
        raise InputError(f"limit: expected an integer >= 1, found {limit!r}")
    shard_t = parse_shard(shard)
    _preflight(pair, specs, device=device, backend=backend, batch_size=batch_size, dtype=dtype,
               backend_options=backend_options)
    handle = _handle(pair, backend=backend, device=device, dtype=dtype, backend_options=backend_options)
    if data is None:
        from nla_probe.defaults import default_eval_path

        data = default_eval_path()
        if data is None:
            raise InputError("data: no activation parquet given and the toy evaluation set is missing "
                             "(build it with `nla-probe toy build` or pass --data)")
    full = load_activations(data, handle.contract.d_model)
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="nla-probe-ablate-"))
    prepare_out(out, handle)
    store = Store(out / "store")
    info: dict[str, Any] = {"format": "nla-probe-ablation", "format_version": 1, "experiments": [],
                            "specs": {}, "spec_hashes": {}, "pair": handle.describe(), "data": full.info,
                            "selection": {}, "denominators": {}, "batch_size": batch_size, "limit": limit,
                            "shard": None if shard_t is None else f"{shard_t[0]}/{shard_t[1]}", "counts": {}}
    denominators: dict[str, tuple[float, str]] = {}
    from nla_probe.progress import ProgressLines

    lines = ProgressLines.for_stdout() if progress else None  # plain lines when stdout is a log or a pipe
    try:
        for spec in specs:
            n = spec.n if limit is None else min(spec.n or limit, limit)
            sel = full.select(n, shard_t)
            key = json.dumps([spec.metrics.denominator, denominator], default=str)
            if key not in denominators:
                denominators[key] = resolve_denominator(spec.metrics.denominator, denominator, full)
            kind = get_experiment(spec.kind)()
            ctx = RunContext(spec, handle, store, sel, batch_size, denominators[key], progress=progress)
            writer = ResultWriter(out / "results" / f"{spec.name}.parquet", result_columns(kind))
            if lines is not None:
                ctx.lines = lines
                lines.start(spec.name, sel.vectors.shape[0] * len(spec.conditions), ctx.n_chunks())
            for k, batch in enumerate(kind.run(spec, ctx)):
                writer.write(batch)
                if lines is not None:
                    lines.update(ctx.chunks_drawn, writer.rows, batch.get("condition") or ())
                if on_chunk is not None:
                    on_chunk(spec.name, k, ctx.n_chunks())
            writer.close()
            if lines is not None:
                lines.finish(writer.rows)
            if writer.rows and not writer.finite:
                raise NLAProbeError(f"experiment {spec.name!r}: none of its {writer.rows} result rows has a finite "
                                    f"fve_nrm (all NaN, e.g. on_overflow='nan' for every text); a report would have "
                                    f"an empty statistics table — see {writer.path}")
            spec.save(out / "specs" / f"{spec.name}.toml")
            info["experiments"].append(spec.name)
            info["specs"][spec.name] = spec.to_dict()
            info["spec_hashes"][spec.name] = spec.content_hash()
            info["selection"][spec.name] = {k: sel.info[k] for k in ("n_limit", "n_selected", "shard")} | {
                "n_docs": int(sel.frame["doc_id"].n_unique()) if sel.frame.height else 0}
            info["denominators"][spec.name] = {"value": ctx.denominator[0], "source": ctx.denominator[1],
                                               "auto": denominator is None and spec.metrics.denominator == "auto"}
            info["counts"][spec.name] = ctx.counts
            info["store"] = store.stats()
            info["elapsed_s"] = round(time.monotonic() - t0, 2)
            info["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            # info.json always describes exactly the result files finished so far
            write_json_atomic(out / "results" / "info.json", info)
    finally:
        store.close()
    result = AblationResult.load(out)
    from nla_probe.ablate.attribution import DEFAULT_ROWS, attribute_run

    rows = DEFAULT_ROWS if attribution_rows is None else attribution_rows
    if lines is not None and rows:
        lines.note(f"span attribution: leave-one-out ΔFVE for up to {rows} activations per experiment")
    attribute_run(result, lambda: handle.pair.ar, lambda ids: full.vectors[np.asarray(ids, dtype=np.int64)],
                  max_rows=rows, batch_size=batch_size, progress=progress)
    if report:
        if lines is not None:
            lines.note("writing report.md, report.html and figures")
        result.write_report()
    return result
