"""Best-of-N self-distillation: a cheap stand-in for the RL stage of the released pairs.

For ``distill_vectors`` training vectors (drawn with ``default_rng(seed)``), the trained AV
samples ``distill_n`` explanations at temperature 1; together with its greedy decode and the
gold explanation they form the candidates, and the AR (as trained so far) keeps the one with
the lowest ``mse_nrm`` against the vector. The AV is then fine-tuned on the kept
explanations (mixed 1:1 with gold pairs of other training rows) and the AR on the same
pairs, so its reward does not go stale. Results go to
``av_distill_state.pt`` / ``ar_distill_state.pt``; the export uses them when present.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from nla_probe.toy.nla_train import explanation_payload, train_ar, train_av
from nla_probe.toy.train import FamilySpec, Schedule

logger = logging.getLogger("nla_probe.toy.build")


def _nanmean(x: np.ndarray) -> float:
    """Mean of the non-NaN entries of ``x``; NaN (without numpy's empty-slice warning) when there are none."""
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def best_of_n(candidates: list[list[str]], mse: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Per row, the candidate with the lowest ``mse`` (``mse[i, j]`` for candidate j of row i)."""
    pick = np.nanargmin(mse, axis=1)
    return [candidates[i][j] for i, j in enumerate(pick)], pick


def stage_distill(ctx: Any, spec: FamilySpec) -> None:
    """Run one best-of-N round (skipped when the build size has ``distill_n == 0``)."""
    from nla_probe.analysis.metrics import mse_nrm
    from nla_probe.nla.checkpoint import load_av
    from nla_probe.nla.export import save_av_checkpoint
    from nla_probe.nla.reconstructor import Reconstructor
    from nla_probe.toy.stages import family_contract, read_frame, trained_model
    from nla_probe.toy.tokenizer import load_tokenizer

    size = ctx.size
    if not size.distill_n:
        logger.info("%s: distillation skipped (distill_n = 0)", spec.name)
        return
    fam = ctx.fam_dir(spec.name)
    tok = load_tokenizer(ctx, spec)
    contract = family_contract(ctx, spec, tok)
    frame, vec = read_frame(fam / "acts_train.parquet")
    rng = np.random.default_rng(7)
    idx = np.sort(rng.choice(len(vec), size=min(size.distill_vectors, len(vec)), replace=False))
    v = vec[idx]
    gold = [frame["explanation"][int(i)] for i in idx]

    av_model = trained_model(ctx, spec, "av", distilled=False)
    tmp = fam / "distill_av"
    save_av_checkpoint(av_model, tok, tmp, contract)
    verb = load_av(tmp).verbalizer()
    ar = trained_model(ctx, spec, "ar", distilled=False)
    rec = Reconstructor(ar, tok, contract.with_role("ar"))

    cands: list[list[str]] = [[g] for g in gold]
    for k in range(size.distill_n + 1):
        dec = verb.verbalize(v, max_new_tokens=size.max_new_tokens, do_sample=k > 0,
                             temperature=1.0, seed=1000 * k, batch_size=64)
        for i, d in enumerate(dec):
            ok = d.tag_status == "ok" and d.explanation
            cands[i].append(f"<explanation>\n{d.explanation}\n</explanation>" if ok else "")
        logger.info("%s distill: sampled round %d/%d", spec.name, k, size.distill_n)
    n_c = len(cands[0])
    mse = np.full((len(v), n_c), np.nan)
    for j in range(n_c):
        texts = [explanation_payload(c[j]) if c[j] else "" for c in cands]
        pred = rec.reconstruct(texts, batch_size=64, on_overflow="truncate")
        m = mse_nrm(pred, v, contract.mse_scale)
        m[[i for i, c in enumerate(cands) if not c[j]]] = np.nan
        mse[:, j] = m
    chosen, pick = best_of_n(cands, mse)
    stats = {"n_vectors": int(len(v)), "n_candidates": n_c,
             "share_gold": float(np.mean(pick == 0)), "share_greedy": float(np.mean(pick == 1)),
             "mse_gold": _nanmean(mse[:, 0]), "mse_greedy": _nanmean(mse[:, 1]),
             "mse_chosen": float(np.fmin.reduce(mse, axis=1).mean())}
    logger.info("%s distill: %s", spec.name, stats)
    (fam / "distill.json").write_text(json.dumps({"stats": stats, "rows": idx.tolist(),
                                                  "explanations": chosen}, indent=1))

    # Fine-tune on the kept explanations mixed 1:1 with gold pairs of other training rows,
    # so the small distilled set does not pull the AV away from the rest of the data.
    rest = np.setdiff1d(np.arange(len(vec)), idx)
    extra = np.random.default_rng(8).choice(rest, size=min(len(idx), len(rest)), replace=False)
    texts = chosen + [frame["explanation"][int(i)] for i in extra]
    vecs = np.concatenate([v, vec[extra]])
    sched = Schedule(budget_s=size.distill_s, lr=3e-4, warmup_s=min(20.0, size.distill_s / 10),
                     max_steps=size.max_steps)
    train_av(av_model.train(), tok, contract, texts, vecs, sched, fam / "av_distill_state.pt")
    ar_sched = Schedule(budget_s=size.distill_s / 3, lr=3e-4,
                        warmup_s=min(20.0, size.distill_s / 30), max_steps=size.max_steps)
    train_ar(ar.train(), tok, contract, [explanation_payload(c) for c in texts], vecs, ar_sched,
             fam / "ar_distill_state.pt")
