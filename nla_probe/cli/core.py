"""Core sub-commands: inspect, verbalize, reconstruct, extract, bench, fixtures, toy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from nla_probe.toy import build_options as toy_options


def _check_out(out: Path) -> None:
    """Refuse an --out file that cannot be written, before any work: wrong suffix, a directory, or a
    parent that cannot be created."""
    from nla_probe.errors import InputError

    if out.suffix not in (".parquet", ".jsonl", ".ndjson"):
        raise InputError(f"--out {out}: expected a name ending in .parquet or .jsonl, found {out.name!r}")
    if out.is_dir():
        raise InputError(f"--out {out}: is a directory; expected a file name")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {out}: cannot create its directory {out.parent} ({e.strerror or e})") from None


def _write_frame(frame, out: Path) -> None:
    from nla_probe.errors import InputError

    _check_out(out)
    try:
        if out.suffix == ".parquet":
            frame.write_parquet(out)
        else:
            frame.write_ndjson(out)
    except OSError as e:
        raise InputError(f"--out {out}: cannot write ({e.strerror or e})") from None


def _read_texts(path: Path, column: str, hint: str = "--column to choose another"
                ) -> tuple[list[str], list[dict] | None, object]:
    """Texts of ``column`` from a .parquet or a JSON-lines file: ``(texts, jsonl rows or None, frame or None)``.

    JSON lines are parsed with the json module, so a ``\\ud800`` escape stays a lone surrogate and
    is refused by the AR naming its row (polars would turn it into another character).
    """
    from nla_probe.errors import InputError

    if not path.is_file():
        raise InputError(f"--texts {path}: no such file")
    if path.suffix == ".parquet":
        import polars as pl

        try:
            frame = pl.read_parquet(path)
        except Exception as e:  # noqa: BLE001 - polars raises several types for corrupt files
            raise InputError(f"--texts {path}: not a readable parquet file ({type(e).__name__}: {e})") from None
        if column not in frame.columns:
            raise InputError(f"--texts {path}: column {column!r} missing; found {frame.columns}")
        if frame.height == 0:
            raise InputError(f"--texts {path}: the file is empty (expected one row per text)")
        return frame[column].to_list(), None, frame
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"--texts {path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    rows = []
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise InputError(f"--texts {path}: line {k}: not valid JSON ({e.msg} at column {getattr(e, 'colno', '?')})"
                             ) from None
        if not isinstance(obj, dict):
            raise InputError(f"--texts {path}: line {k}: expected a JSON object, found {type(obj).__name__}")
        rows.append(obj)
    if not rows:
        raise InputError(f"--texts {path}: the file is empty (expected one JSON object per line with a {column!r} "
                         "field)")
    missing = [i for i, r in enumerate(rows) if column not in r]
    if missing:
        raise InputError(f"--texts {path}: rows {missing[:20]} have no {column!r} field ({hint})")
    return [r[column] for r in rows], rows, None


def inspect(
    directory: Annotated[Path, typer.Argument(help="AV or AR checkpoint directory (with nla_meta.yaml).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the contract as JSON.")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow custom model code from the checkpoint.")] = False,
) -> None:
    """Validate a checkpoint against the NLA contract (without loading weights) and print it, with the
    rendered canonical AV prompt; a template that differs from the released text is warned about."""
    from nla_probe.nla.checkpoint import inspect_checkpoint

    info = inspect_checkpoint(directory, trust_remote_code=trust_remote_code)
    if as_json:
        typer.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{info['role'].upper()} checkpoint OK: {info['path']}", show_header=False)
    for k in ("role", "model_type", "d_model", "layer", "num_hidden_layers", "injection_scale", "mse_scale",
              "embed_scale", "injection_char", "injection_token_id", "left_neighbor_id", "right_neighbor_id",
              "critic_suffix_ids", "prompt_tokens", "marker_position", "bos_token", "schema_version", "fingerprint"):
        v = info[k]
        if k == "injection_char":
            v = f"{v!r} (U+{ord(v):04X})"
        t.add_row(k, str(v))
    t.add_row("weight_files", ", ".join(info["weight_files"]))
    console = Console()
    console.print(t)
    console.print("canonical AV prompt (the marker's embedding is replaced by the injected vector):", style="bold")
    typer.echo(info["canonical_prompt"])  # as is: no wrapping, no markup


def grammar_hooks(grammar: str | None, scaffold: str | None = None, prefix: str | None = None,
                  scope: str = "body") -> list:
    """The hooks of ``--grammar`` / ``--scaffold`` / ``--prefix`` (see ``nla-probe verbalize --help``).

    ``--grammar`` is a built-in name, or ``regex:PATTERN``, or ``ebnf:PATH`` / ``lark:PATH`` /
    ``json:PATH`` (the file's text); ``--scaffold`` is a registered scaffold name or a text file;
    ``--prefix`` is the prefix text, or ``scaffold`` for the scaffold's fixed opening.
    """
    from nla_probe.errors import InputError
    from nla_probe.hooks import Grammar, Prefix

    def read(path: str, what: str) -> str:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{what}: expected a readable file, found {path!r}")
        return p.read_text(encoding="utf-8")

    scaffold_text = ""
    if scaffold:
        from nla_probe.hooks.grammar_text import SCAFFOLDS

        scaffold_text = scaffold if scaffold in SCAFFOLDS else read(scaffold, "--scaffold")
    hooks: list = []
    if grammar:
        kind, sep, rest = grammar.partition(":")
        if not sep:
            hooks.append(Grammar(builtin=grammar, scaffold=scaffold_text))
        elif kind == "regex":
            hooks.append(Grammar(regex=rest, scope=scope))
        elif kind in ("ebnf", "lark", "json"):
            key = "json_schema" if kind == "json" else kind
            hooks.append(Grammar(**{key: read(rest, f"--grammar {kind}:"), "scope": scope}))
        else:
            raise InputError(f"--grammar: expected a built-in name or one of regex:, ebnf:, lark:, json:, found "
                             f"{grammar!r}")
    elif scaffold and not prefix:
        raise InputError("--scaffold: expected --grammar scaffold_spans or --prefix scaffold with it, found neither")
    if prefix:
        if prefix == "scaffold":
            if not scaffold_text:
                raise InputError("--prefix scaffold: expected --scaffold NAME|FILE, found none")
            hooks.append(Prefix(scaffold=scaffold_text))
        else:
            hooks.append(Prefix(text=prefix.replace("\\n", "\n")))
    return hooks


def verbalize(
    av: Annotated[Path, typer.Option(help="AV checkpoint directory.")],
    data: Annotated[Path, typer.Option(help="Activation parquet (column activation_vector).")],
    out: Annotated[Path, typer.Option(help="Output .parquet or .jsonl, one row per vector.")],
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N activations.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Hard cap on generated tokens.")] = 200,
    sample: Annotated[bool, typer.Option("--sample/--greedy", help="Sample (temperature) or greedy decode.")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (with --sample).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed (recorded).")] = 0,
    ban: Annotated[Optional[list[str]], typer.Option(help="Ban a delimiter family (repeatable), e.g. --ban quotes.")] = None,
    grammar: Annotated[Optional[str], typer.Option(
        help="Constrain decoding to a grammar: spans_only | scaffold_spans | no_delimiters, or regex:PATTERN, "
             "ebnf:FILE, lark:FILE, json:FILE (docs/hooks.md).")] = None,
    scaffold: Annotated[Optional[str], typer.Option(
        help="Scaffold of --grammar scaffold_spans or --prefix scaffold: released | toy, or a text file.")] = None,
    prefix: Annotated[Optional[str], typer.Option(
        help="Assistant prefix written before decoding ('\\n' for newlines), or 'scaffold' for the scaffold's "
             "fixed opening (the unforced condition).")] = None,
    grammar_scope: Annotated[str, typer.Option(
        help="body: a regex/ebnf/lark/json grammar describes the text between the tags; output: all generated "
             "text.")] = "body",
    backend: Annotated[str, typer.Option(help="Generation backend: hf or vllm.")] = "hf",
    device: Annotated[str, typer.Option(help="torch device (cpu, cuda, cuda:N), or auto: accelerate device map over the visible GPUs.")] = "cpu",
    dtype: Annotated[Optional[str], typer.Option(help="bfloat16|float16|float32 (default: bf16 on CUDA, fp32 on CPU).")] = None,
    batch_size: Annotated[int, typer.Option(help="Vectors per generation batch.")] = 32,
    backend_opt: Annotated[Optional[list[str]], typer.Option(
        help="Backend option KEY=VALUE (repeatable), e.g. tensor_parallel_size=2 for vllm.")] = None,
) -> None:
    """Decode explanations for activation vectors with an AV.

    Before loading, the memory plan of the AV (``nla-probe plan``) is checked against the device."""
    import polars as pl

    from nla_probe.nla.checkpoint import check_device, load_av
    from nla_probe.nla.extraction import read_activations
    from nla_probe.nla.generation import decodes_to_frame

    check_device(device)
    _check_out(out)
    from nla_probe.cli.ablate import _backend_options
    from nla_probe.nla.preflight import check_before_loading

    options = _backend_options(backend_opt)
    check_before_loading(av, None, device=device, backend=backend, batch_size=batch_size,
                         max_new_tokens=max_new_tokens, dtype=dtype, backend_options=options)
    a = load_av(av, dtype=dtype, device=device, backend=backend)
    frame, vecs = read_activations(data, d_model=a.contract.d_model)
    if limit is not None:
        frame, vecs = frame.head(limit), vecs[:limit]
    hooks = []
    if ban:
        from nla_probe.hooks import BanChars

        hooks.append(BanChars(families=tuple(ban)))
    hooks += grammar_hooks(grammar, scaffold, prefix, grammar_scope)
    verbalizer = a.verbalizer(backend=backend, **options)
    decodes = verbalizer.verbalize(vecs, max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature,
                                   seed=seed, hooks=hooks, batch_size=batch_size, progress=True)
    ids = frame.select([c for c in ("doc_id", "position") if c in frame.columns])
    result = pl.concat([ids, decodes_to_frame(decodes)], how="horizontal")
    _write_frame(result, out)
    ok = sum(d.tag_status == "ok" for d in decodes)
    typer.echo(f"wrote {len(decodes)} decodes to {out} ({ok}/{len(decodes)} with well-formed tags)")


def reconstruct(
    ar: Annotated[Path, typer.Option(help="AR checkpoint directory.")],
    texts: Annotated[Path, typer.Option(help=".parquet/.jsonl with an 'explanation' (or --column) column.")],
    out: Annotated[Path, typer.Option(help="Output .parquet or .jsonl.")],
    data: Annotated[Optional[Path], typer.Option(help="Activation parquet with the gold vectors, one per text in the same order, to score against.")] = None,
    column: Annotated[str, typer.Option(help="Text column to read.")] = "explanation",
    keep_tags: Annotated[bool, typer.Option("--keep-tags", help="Score texts as given. By default a text holding a complete <explanation>...</explanation> pair is scored as the text inside the first pair (what the AR was trained on; raw AV decodes hold the tags), and a text with a tag but no complete pair is refused.")] = False,
    denominator: Annotated[Optional[str], typer.Option(help="FVE denominator: a number or a registered name. Default: for an embedded toy AR, the toy's training constant (as `ablate` on the toy pair); otherwise Var(v_nrm) of the rows of --data (a subset gives its own variance; pass the training constant to compare with reported numbers).")] = None,
    on_overflow: Annotated[str, typer.Option(
        help="Texts longer than the AR context: truncate (cut the text's tail; the same default as ablation "
             "specs, so rescoring a run's texts reproduces its numbers), error (refuse the file) or nan "
             "(NaN row). Every affected row is marked in the output column 'overflow'.")] = "truncate",
    device: Annotated[str, typer.Option(help="torch device (cpu, cuda, cuda:N), or auto: accelerate device map over the visible GPUs.")] = "cpu",
    dtype: Annotated[Optional[str], typer.Option(help="bfloat16|float16|float32.")] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per AR batch (length-bucketed).")] = 32,
    batching: Annotated[str, typer.Option(
        help="exact: each row equals the text scored alone (equal-length batches); fast: right-padded batches, "
             "per-row noise in bf16 (docs/metrics.md, 'Batching noise').")] = "exact",
) -> None:
    """Reconstruct vectors from explanation texts with an AR; with --data, score them (mse_nrm, cos, fve_nrm).

    Explanation tags are stripped unless --keep-tags (see that option)."""
    import numpy as np
    import polars as pl

    from nla_probe.analysis.metrics import cosine, fve_nrm, mse_nrm, variance_baseline
    from nla_probe.cli.ablate import parse_denominator
    from nla_probe.defaults import toy_denominator_for
    from nla_probe.errors import InputError
    from nla_probe.nla.checkpoint import check_device, load_ar
    from nla_probe.nla.extraction import read_activations
    from nla_probe.nla.generation import CLOSE_TAG, OPEN_TAG, parse_explanation
    from nla_probe.nla.reconstructor import check_texts

    check_device(device)
    _check_out(out)
    items, rows, frame = _read_texts(texts, column)
    check_texts(items)
    gold = None
    if data is not None:
        _, gold = read_activations(data, d_model=None)
        if len(gold) != len(items):
            raise InputError(f"--texts {texts} holds {len(items)} text{'s' * (len(items) != 1)} but --data {data} "
                             f"holds {len(gold)} vector{'s' * (len(gold) != 1)}; "
                             "expected one vector per text, in the same order")
    scored, stripped, unpaired = list(items), [], []
    if not keep_tags:
        for i, t in enumerate(items):
            if OPEN_TAG in t or CLOSE_TAG in t:
                inner, status = parse_explanation(t)
                if status == "ok":
                    scored[i] = inner
                    stripped.append(i)
                else:
                    unpaired.append(i)
        if unpaired:
            raise InputError(f"--texts {texts}: rows {unpaired[:20]} hold an {OPEN_TAG} or {CLOSE_TAG} tag without "
                             "a complete pair; fix them, or pass --keep-tags to score the texts as given")
    from nla_probe.nla.preflight import check_before_loading

    check_before_loading(None, ar, device=device, batch_size=batch_size, dtype=dtype)
    r = load_ar(ar, dtype=dtype, device=device)
    if gold is not None and gold.shape[1] != r.d_model:
        raise InputError(f"--data {data}: 'activation_vector' width: expected d_model={r.d_model} (from the AR "
                         f"sidecar), found {gold.shape[1]}")
    rec = r.reconstruct_detailed(scored, batch_size=batch_size, on_overflow=on_overflow, progress=True,
                                 batching=batching)
    if frame is None:
        try:
            frame = pl.from_dicts(rows, infer_schema_length=None)
        except Exception:  # noqa: BLE001 - heterogeneous extra fields: keep only the texts
            frame = pl.DataFrame({column: items})
    result = frame.with_columns(pl.Series("tags_stripped", [False] * len(items)).scatter(stripped, True)
                                if stripped else pl.Series("tags_stripped", [False] * len(items)),
                                pl.Series("ar_tokens", rec.n_tokens), pl.Series("overflow", rec.overflow),
                                pl.Series("reconstruction", rec.vectors, dtype=pl.Array(pl.Float32, r.d_model)))
    if not keep_tags:
        typer.echo(f"stripped {OPEN_TAG} tags from {len(stripped)} of {len(items)} texts (the AR reads the text "
                   "inside them; --keep-tags to score texts as given)")
    if gold is not None:
        toy = None if denominator is not None else toy_denominator_for(ar)
        if denominator is not None:
            denom, denom_source = parse_denominator(denominator), "--denominator"
        elif toy is not None:
            denom, denom_source = toy
        else:
            denom, denom_source = variance_baseline(gold), f"Var(v_nrm) of the {len(gold)} rows of --data"
        mse = mse_nrm(rec.vectors, gold, r.contract.mse_scale)
        result = result.with_columns(pl.Series("mse_nrm", mse), pl.Series("cos", cosine(rec.vectors, gold)),
                                     pl.Series("fve_nrm", fve_nrm(mse, denom)))
        typer.echo(f"mean fve_nrm {np.nanmean(result['fve_nrm'].to_numpy()):.4f} (denominator {denom}: {denom_source}), "
                   f"mean cos {np.nanmean(result['cos'].to_numpy()):.4f}, n={len(items)}")
    n_over = sum(1 for o in rec.overflow if o)
    if n_over:
        typer.echo(f"{n_over} of {len(rec.overflow)} texts were longer than the AR context: "
                   f"on_overflow={on_overflow} (column 'overflow')")
    _write_frame(result, out)
    typer.echo(f"wrote {len(items)} rows to {out}")


def extract(
    model: Annotated[Path, typer.Option(help="Base model directory (Hugging Face causal LM).")],
    texts: Annotated[Path, typer.Option(help=".jsonl with 'text' (and optional 'doc_id') or a .txt file (one document per blank-line-separated block).")],
    layer: Annotated[int, typer.Option(help="Layer K: the output of block K = hidden_states[K+1].")],
    out: Annotated[Path, typer.Option(help="Output activation parquet.")],
    n_per_doc: Annotated[int, typer.Option(help="Positions sampled per document.")] = 10,
    min_position: Annotated[int, typer.Option(help="Smallest token position sampled.")] = 50,
    seed: Annotated[int, typer.Option(help="Position-sampling seed (per document: sha256(seed|doc_id)).")] = 42,
    max_length: Annotated[int, typer.Option(help="Tokens per document (right truncation).")] = 4096,
    device: Annotated[str, typer.Option(help="torch device (cpu, cuda, cuda:N), or auto: accelerate device map over the visible GPUs.")] = "cpu",
    dtype: Annotated[Optional[str], typer.Option(help="bfloat16|float16|float32.")] = None,
) -> None:
    """Extract residual-stream activations (official parquet schema + source text and offsets)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nla_probe.errors import InputError
    from nla_probe.nla.checkpoint import check_device, resolve_dtype
    from nla_probe.nla.extraction import extract_activations, write_activations
    from nla_probe.nla.reconstructor import check_texts

    check_device(device)
    if out.suffix != ".parquet":
        raise InputError(f"--out {out}: expected a name ending in .parquet, found {out.name!r}")
    _check_out(out)
    if texts.suffix in (".jsonl", ".ndjson"):
        docs, rows, _ = _read_texts(texts, "text", hint="one JSON object per line with a 'text' field")
        check_texts(docs)
        ids = [str(r["doc_id"]) if r.get("doc_id") is not None else f"{texts.stem}:{i}" for i, r in enumerate(rows)]
    else:
        try:
            raw = texts.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"--texts {texts}: no such file") from None
        except UnicodeDecodeError as e:
            raise InputError(f"--texts {texts}: not UTF-8 text (byte {e.start}: {e.reason})") from None
        docs = [b.strip() for b in raw.split("\n\n") if b.strip()]
        if not docs:
            raise InputError(f"--texts {texts}: the file is empty (expected documents separated by blank lines)")
        ids = [f"{texts.stem}:{i}" for i in range(len(docs))]
    tok = AutoTokenizer.from_pretrained(str(model))
    placed = {"device_map": "auto"} if device == "auto" else {}
    m = AutoModelForCausalLM.from_pretrained(str(model), dtype=resolve_dtype(dtype, device), **placed)
    m = (m if placed else m.to(device)).eval()
    frame = extract_activations(m, tok, docs, ids, layer, n_per_doc=n_per_doc, min_position=min_position, seed=seed,
                                max_length=max_length, progress=True)
    write_activations(frame, out)
    typer.echo(f"wrote {frame.height} activations from {len(docs)} documents to {out}")


def bench(
    av: Annotated[Optional[Path], typer.Option(help="AV directory (default: the embedded toy pair).")] = None,
    ar: Annotated[Optional[Path], typer.Option(help="AR directory (default: the embedded toy pair).")] = None,
    n: Annotated[int, typer.Option(help="Items per measurement.")] = 64,
    only: Annotated[Optional[list[str]], typer.Option(help="Run only these benchmarks (repeatable).")] = None,
    backend: Annotated[Optional[list[str]], typer.Option(help="Generation backends to measure (repeatable): hf, vllm.")] = None,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
    out: Annotated[Optional[Path], typer.Option(help="Also write the results as JSON here.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch intra-op threads.",
                                                   show_default="torch's own: one per physical CPU core")] = None,
    scaling: Annotated[bool, typer.Option("--scaling", help="Instead: the default ablation suite at each "
                                          "--scaling-n activations and copy detection at each --scaling-pairs "
                                          "pairs, seconds per unit and peak RSS (each size in its own process).")] = False,
    scaling_n: Annotated[Optional[list[int]], typer.Option(help="Activations per --scaling run (repeatable).",
                                                           show_default="100, 400, 1600")] = None,
    scaling_pairs: Annotated[Optional[list[int]], typer.Option(help="Copy-detection pairs per --scaling run "
                                                               "(repeatable).", show_default="10000, 100000")] = None,
) -> None:
    """Measure throughput side by side in one run and print the ratios against their targets."""
    if scaling:
        import json as _json

        from nla_probe.bench.runner import machine_line
        from nla_probe.bench.scaling import ABLATE_NS, COPY_PAIRS, run_scaling

        typer.echo(machine_line(threads))
        res = run_scaling(scaling_n or ABLATE_NS, scaling_pairs or COPY_PAIRS, threads=threads, echo=typer.echo)
        typer.echo(machine_line(threads))
        if out is not None:
            out.write_text(_json.dumps(res, indent=2))
        return
    from nla_probe.bench.runner import run_benchmarks

    run_benchmarks(av=av, ar=ar, n=n, only=only, backends=tuple(backend or ("hf",)), device=device, out=out,
                   threads=threads)


def fixtures(
    out: Annotated[Path, typer.Argument(help="Directory to write av/ and ar/ into (new or empty, unless --force).")],
    arch: Annotated[str, typer.Option(help="qwen2 or gemma3.")] = "qwen2",
    seed: Annotated[int, typer.Option(help="Weight seed.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty directory, replacing its av/ and ar/.")] = False,
) -> None:
    """Write a tiny random-weight NLA pair in the released layout (for trying the tools)."""
    from nla_probe.toy.fixtures import make_fixture_pair

    av_dir, ar_dir = make_fixture_pair(out, arch, seed=seed, force=force)
    typer.echo(f"AV: {av_dir}\nAR: {ar_dir}")


toy_app = typer.Typer(help="The embedded toy NLA pair.", no_args_is_help=True)


_TOY_HELP = toy_options.OPTION_HELP


@toy_app.command("build")
def toy_build(
    work_dir: Annotated[Path, typer.Option(help=_TOY_HELP["work_dir"])] = Path("toy_build"),
    out_dir: Annotated[Optional[Path], typer.Option(help=_TOY_HELP["out_dir"])] = None,
    corpus: Annotated[Optional[Path], typer.Option(help=_TOY_HELP["corpus"])] = None,
    smoke: Annotated[bool, typer.Option("--smoke", help=_TOY_HELP["smoke"])] = False,
    families: Annotated[Optional[str], typer.Option(help=_TOY_HELP["families"])] = None,
    stages: Annotated[str, typer.Option(help=_TOY_HELP["stages"], show_default=False)] = ",".join(toy_options.STAGES),
    threads: Annotated[Optional[int], typer.Option(min=1, help=_TOY_HELP["threads"])] = None,
    no_distilled: Annotated[bool, typer.Option("--no-distilled", help=_TOY_HELP["no_distilled"])] = False,
    budget_scale: Annotated[float, typer.Option(help=_TOY_HELP["budget_scale"])] = 1.0,
    best_of_n: Annotated[Optional[int], typer.Option(help=_TOY_HELP["best_of_n"])] = None,
) -> None:
    """Rebuild the toy pairs from the committed corpus (resumable; --smoke for a 2-minute build)."""
    from nla_probe.toy.build import build

    raise typer.Exit(build(work_dir=work_dir, out_dir=out_dir, corpus=corpus, smoke=smoke, families=families,
                           stages=stages, threads=threads, no_distilled=no_distilled, budget_scale=budget_scale,
                           best_of_n=best_of_n))


def register(app: typer.Typer) -> None:
    for fn in (inspect, verbalize, reconstruct, extract, bench, fixtures):
        app.command()(fn)
    app.add_typer(toy_app, name="toy")
