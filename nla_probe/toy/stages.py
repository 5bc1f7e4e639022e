"""Build stages after the base LM: activations + labels, AR, AV, export and evaluation.

Activations are the output of block K (Hugging Face ``hidden_states[K + 1]``) of the base LM
on each document, extracted with :func:`nla_probe.nla.extraction.extract_activations` at
``positions_per_doc`` token positions per document (position >= 1, drawn with
``random.Random(sha256(f"{seed}|{doc_id}"))``), documents truncated to the base LM's
``seq_len`` tokens. Character offsets (``char_start``/``char_end``) index ``source_text``.
``injection_scale`` is the mean L2 norm of the training activations.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from nla_probe.toy.labeler import label
from nla_probe.toy.nla_train import explanation_payload, train_ar, train_av
from nla_probe.toy.train import FamilySpec, Schedule

logger = logging.getLogger("nla_probe.toy.build")

SEED = 42


def _load_base(ctx: Any, spec: FamilySpec) -> Any:
    from transformers import Qwen2ForCausalLM

    return Qwen2ForCausalLM.from_pretrained(str(ctx.fam_dir(spec.name) / "base"),
                                            dtype="float32").eval()


def extract_frame(model: Any, tokenizer: Any, docs: list, spec: FamilySpec,
                  positions_per_doc: int, seed: int = SEED) -> Any:
    """Activation frame (:mod:`nla_probe.nla.extraction` schema) plus ``genre``, ``split`` and the
    gold ``explanation`` of each row (labeled from the row's token prefix)."""
    import polars as pl

    from nla_probe.nla.extraction import extract_activations

    frame = extract_activations(model, tokenizer, [d.text for d in docs], [d.doc_id for d in docs],
                                spec.layer, n_per_doc=positions_per_doc, min_position=1, seed=seed,
                                max_length=spec.seq_len, batch_size=32)
    meta = {d.doc_id: d for d in docs}
    prefix_tokens: dict[str, list[str]] = {}
    expl = []
    for doc_id, pos in zip(frame["doc_id"].to_list(), frame["position"].to_list()):
        if doc_id not in prefix_tokens:
            ids = tokenizer(meta[doc_id].text, add_special_tokens=True, truncation=True,
                            max_length=spec.seq_len)["input_ids"]
            prefix_tokens[doc_id] = [tokenizer.decode([t]) for t in ids]
        expl.append(label(prefix_tokens[doc_id][:pos + 1]))
    return frame.with_columns(
        pl.Series("genre", [meta[i].genre for i in frame["doc_id"].to_list()]),
        pl.Series("split", [meta[i].split for i in frame["doc_id"].to_list()]),
        pl.Series("explanation", expl),
    )


def aligned_frame(model: Any, tokenizer: Any, spec: FamilySpec, main: Any) -> Any:
    """Activations of another family at the same characters as the rows of ``main``.

    For each row of the main family's evaluation frame, the token of this family's
    tokenization that covers the row's last character (``char_end - 1``) is the read
    position. Rows whose character falls beyond this family's ``seq_len`` tokens are
    dropped; ``main_row`` keeps the index of the matching main row.
    """
    import numpy as np
    import polars as pl
    import torch

    special = set(tokenizer.all_special_ids)
    cache: dict[str, tuple[list[int], list, Any]] = {}
    rows: dict[str, list] = {k: [] for k in (
        "doc_id", "position", "token_id", "token", "char_start", "char_end", "source_text",
        "n_raw_tokens", "activation_layer", "genre", "split", "explanation", "main_row")}
    vecs = []
    for i, r in enumerate(main.iter_rows(named=True)):
        doc = r["doc_id"]
        if doc not in cache:
            enc = tokenizer(r["source_text"], add_special_tokens=True, truncation=True,
                            max_length=spec.seq_len, return_offsets_mapping=True)
            with torch.no_grad():
                hs = model(input_ids=torch.tensor([enc["input_ids"]]),
                           output_hidden_states=True).hidden_states[spec.layer + 1][0]
            cache[doc] = (enc["input_ids"], enc["offset_mapping"], hs)
        ids, offs, hs = cache[doc]
        c = r["char_end"] - 1
        hit = [j for j, (a, b) in enumerate(offs) if a <= c < b and ids[j] not in special]
        if not hit:
            continue
        j = hit[0]
        toks = [tokenizer.decode([t]) for t in ids[:j + 1]]
        for k, v in (("doc_id", doc), ("position", j), ("token_id", ids[j]), ("token", toks[-1]),
                     ("char_start", int(offs[j][0])), ("char_end", int(offs[j][1])),
                     ("source_text", r["source_text"]), ("n_raw_tokens", j + 1),
                     ("activation_layer", spec.layer), ("genre", r["genre"]),
                     ("split", r["split"]), ("explanation", label(toks)), ("main_row", i)):
            rows[k].append(v)
        vecs.append(hs[j].numpy().astype(np.float32))
    frame = pl.DataFrame(rows)
    arr = np.stack(vecs).astype(np.float32)
    return frame.with_columns(pl.Series("activation_vector", arr,
                                        dtype=pl.Array(pl.Float32, arr.shape[1])))


def read_frame(path: Path) -> tuple[Any, Any]:
    """(frame with its vector column, vectors float32 [n, d]) of an activation parquet."""
    import numpy as np
    import polars as pl

    frame = pl.read_parquet(path)
    vec = np.asarray(frame["activation_vector"].to_numpy(), dtype=np.float32)
    return frame, vec


def stage_data(ctx: Any, spec: FamilySpec) -> None:
    import numpy as np

    from nla_probe.analysis.metrics import variance_baseline
    from nla_probe.nla.extraction import write_activations
    from nla_probe.toy.tokenizer import load_tokenizer

    tok = load_tokenizer(ctx, spec)
    model = _load_base(ctx, spec)
    fam = ctx.fam_dir(spec.name)
    for split in ("train", "heldout"):
        frame = extract_frame(model, tok, ctx.docs(split), spec, ctx.size.positions_per_doc)
        write_activations(frame, fam / f"acts_{split}.parquet")
        logger.info("%s: %d %s activations", spec.name, frame.height, split)
    _, vec = read_frame(fam / "acts_train.parquet")
    norms = np.linalg.norm(vec, axis=1)
    info = {"injection_scale": float(norms.mean()), "norm_std": float(norms.std()),
            "denominator": variance_baseline(vec[:50_000]), "n_train": int(len(vec))}
    (fam / "data.json").write_text(json.dumps(info, indent=2))
    logger.info("%s data: %s", spec.name, info)


def family_contract(ctx: Any, spec: FamilySpec, tok: Any) -> Any:
    """The pair's contract: marker, neighbours, and ``injection_scale`` = the mean training norm
    rounded to 3 decimals."""
    from nla_probe.nla.export import make_contract

    info = json.loads((ctx.fam_dir(spec.name) / "data.json").read_text())
    return make_contract(tok, spec.hidden_size, spec.layer, round(info["injection_scale"], 3),
                         spec.marker_char, base_checkpoint=f"nla-probe-toy/{spec.name}-base")


def _train_pairs(ctx: Any, spec: FamilySpec) -> tuple[list[str], Any]:
    fam = ctx.fam_dir(spec.name)
    frame, vec = read_frame(fam / "acts_train.parquet")
    return frame["explanation"].to_list(), vec


def make_ar(ctx: Any, spec: FamilySpec) -> Any:
    from nla_probe.nla.reconstructor import build_ar_from_causal_lm

    return build_ar_from_causal_lm(_load_base(ctx, spec), spec.layer)


def stage_ar(ctx: Any, spec: FamilySpec) -> None:
    from nla_probe.toy.tokenizer import load_tokenizer

    tok = load_tokenizer(ctx, spec)
    contract = family_contract(ctx, spec, tok)
    expl, vec = _train_pairs(ctx, spec)
    ar = make_ar(ctx, spec)
    train_ar(ar, tok, contract, [explanation_payload(e) for e in expl], vec,
             Schedule(budget_s=ctx.budget(spec, "ar_s"), lr=1e-3, max_steps=ctx.size.max_steps,
                      warmup_s=min(30.0, ctx.budget(spec, "ar_s") / 10)),
             ctx.fam_dir(spec.name) / "ar_state.pt")


def stage_av(ctx: Any, spec: FamilySpec) -> None:
    from nla_probe.toy.tokenizer import load_tokenizer

    tok = load_tokenizer(ctx, spec)
    contract = family_contract(ctx, spec, tok)
    expl, vec = _train_pairs(ctx, spec)
    model = _load_base(ctx, spec)
    train_av(model, tok, contract, expl, vec,
             Schedule(budget_s=ctx.budget(spec, "av_s"), lr=1e-3, max_steps=ctx.size.max_steps,
                      warmup_s=min(30.0, ctx.budget(spec, "av_s") / 10)),
             ctx.fam_dir(spec.name) / "av_state.pt")


def trained_model(ctx: Any, spec: FamilySpec, kind: str, *, distilled: bool = True) -> Any:
    """The trained AV (``kind="av"``) or AR model; the distilled weights when present and asked."""
    import torch

    model = make_ar(ctx, spec) if kind == "ar" else _load_base(ctx, spec)
    fam = ctx.fam_dir(spec.name)
    path = fam / f"{kind}_distill_state.pt"
    if not (distilled and path.exists()):
        path = fam / f"{kind}_state.pt"
    st = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(st["model"])
    logger.info("%s: %s weights from %s (step %d)", spec.name, kind, path.name, st["step"])
    return model.eval()


def stage_export(ctx: Any, spec: FamilySpec) -> None:
    import torch

    from nla_probe.nla.export import save_ar_checkpoint, save_av_checkpoint
    from nla_probe.nla.extraction import write_activations
    from nla_probe.toy.tokenizer import load_tokenizer

    tok = load_tokenizer(ctx, spec)
    contract = family_contract(ctx, spec, tok)
    out = ctx.out_dir / "toy" / spec.name
    for kind, save in (("av", save_av_checkpoint), ("ar", save_ar_checkpoint)):
        model = trained_model(ctx, spec, kind, distilled=ctx.use_distilled)
        save(model, tok, out / kind, contract, dtype=torch.float16)
    # The base LM too: layer sweeps, adjacent layers and cross-family studies extract from it.
    base = _load_base(ctx, spec).to(torch.float16)
    base.save_pretrained(str(out / "base"))
    tok.save_pretrained(str(out / "base"))
    main = ctx.out_dir / "toy" / next(iter(ctx.all_families)) / "eval.parquet"
    if spec.name != next(iter(ctx.all_families)) and main.exists():
        frame = aligned_frame(_load_base(ctx, spec), tok, spec, read_frame(main)[0])
    else:
        frame, _ = read_frame(ctx.fam_dir(spec.name) / "acts_heldout.parquet")
        frame = frame.sample(n=min(ctx.size.n_eval, frame.height), seed=SEED, shuffle=True)
    write_activations(frame, out / "eval.parquet")
    write_dataset_sidecar(out / "eval.parquet", spec, frame.height, ctx.size.positions_per_doc)
    from nla_probe.toy.evaluate import evaluate_pair

    info = json.loads((ctx.fam_dir(spec.name) / "data.json").read_text())
    metrics = evaluate_pair(out / "av", out / "ar", out / "eval.parquet",
                            denominator=info["denominator"],
                            max_new_tokens=ctx.size.max_new_tokens)
    metrics["denominator_source"] = f"Var(v_nrm) of {info['n_train']} training activations"
    metrics["injection_scale"] = contract.injection_scale
    metrics["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    logger.info("%s metrics: %s", spec.name, json.dumps(metrics))


def write_dataset_sidecar(parquet: Path, spec: FamilySpec, row_count: int,
                          positions_per_doc: int) -> Path:
    """``{parquet}.nla_meta.yaml`` (``kind: nla_dataset``) describing an activation parquet."""
    import yaml

    meta = {
        "kind": "nla_dataset", "schema_version": 1,
        "dataset_id": f"nla-probe-toy/{spec.name}/{parquet.stem}", "stage": "base",
        "row_count": int(row_count),
        "extraction": {"base_model": f"nla-probe-toy/{spec.name}-base", "d_model": spec.hidden_size,
                       "layer_index": spec.layer, "norm": "none",
                       "corpus": "nla-probe toy corpus (WordNet 3.0 examples, The Devil's "
                                 "Dictionary, The Jargon File 4.4.7), held-out documents",
                       "positions_per_doc": positions_per_doc},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "created_by": "nla_probe.toy.build",
    }
    path = parquet.with_name(parquet.name + ".nla_meta.yaml")
    path.write_text(yaml.dump(meta, sort_keys=False), encoding="utf-8")
    return path
