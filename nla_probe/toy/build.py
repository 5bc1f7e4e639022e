"""``nla-probe toy build``: rebuild the toy NLA pairs from the committed corpus.

Stages, per family, each resumable (a stage that finished leaves ``<stage>.done`` in the
family's work directory and is skipped on the next run; the training stages checkpoint
``state.pt`` and resume mid-stage):

``tokenizer`` -> ``base`` (base LM) -> ``data`` (activations + gold explanations) ->
``ar`` -> ``av`` -> ``distill`` (optional best-of-N round, off unless ``--best-of-n N``; it
did not help the shipped pair, see docs/toy.md) -> ``export`` (checkpoints in the released
layout, evaluation parquet, metrics). Budgets are wall-clock seconds per family
(:data:`FAMILY_BUDGETS`), so the number of steps reached depends on the machine's load.

Usage (``nla-probe toy build`` takes the same options)::

    python -m nla_probe.toy.build --work-dir /tmp/toy --out-dir data --smoke
    python -m nla_probe.toy.build --work-dir /work/toybuild --stages base --families qwen_small

``--smoke`` uses tiny sizes and budgets (the whole build takes under two minutes); the full
size is what ``data/toy/`` ships.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nla_probe.toy.build_options import OPTION_HELP, STAGES
from nla_probe.toy.corpus import Document, default_corpus_path, load_corpus
from nla_probe.toy.tokenizer import load_tokenizer
from nla_probe.toy.train import FamilySpec, Schedule

logger = logging.getLogger("nla_probe.toy.build")


FAMILIES: dict[str, FamilySpec] = {
    "qwen_small": FamilySpec(name="qwen_small", vocab_size=4096, hidden_size=128,
                             intermediate_size=512, num_layers=4, num_heads=4, num_kv_heads=2,
                             layer=2, marker_char="\u320e"),
    "qwen_tiny": FamilySpec(name="qwen_tiny", vocab_size=3000, hidden_size=96,
                            intermediate_size=384, num_layers=4, num_heads=4, num_kv_heads=2,
                            layer=2, marker_char="\u321c"),
}

SMOKE_FAMILIES: dict[str, FamilySpec] = {
    name: dataclasses.replace(spec, vocab_size=600, hidden_size=spec.hidden_size // 4,
                              intermediate_size=spec.intermediate_size // 4, num_heads=2,
                              num_kv_heads=1, seq_len=64)
    for name, spec in FAMILIES.items()
}


@dataclasses.dataclass(frozen=True)
class BuildSize:
    """Budgets and data sizes of one build.

    Attributes:
        base_s / ar_s / av_s / distill_s: Wall-clock training budgets (seconds).
        max_steps: Optional step cap for every training loop (smoke builds).
        positions_per_doc: Activations sampled per document.
        max_train_docs / max_heldout_docs: Document caps (None = all).
        n_eval: Held-out activations evaluated and written to the evaluation parquet.
        distill_n: Samples per vector in the best-of-N round (0 = skip the round).
        distill_vectors: Training vectors used in the best-of-N round.
        max_new_tokens: Decode cap for evaluation and sampling.
    """

    base_s: float
    ar_s: float
    av_s: float
    distill_s: float
    max_steps: int | None
    positions_per_doc: int
    max_train_docs: int | None
    max_heldout_docs: int | None
    n_eval: int
    distill_n: int
    distill_vectors: int
    max_new_tokens: int = 64


FULL = BuildSize(base_s=1500, ar_s=1200, av_s=3000, distill_s=600, max_steps=None,
                 positions_per_doc=6, max_train_docs=None, max_heldout_docs=None, n_eval=1000,
                 distill_n=0, distill_vectors=3000)
#: Per-family wall-clock budgets of the full build (seconds), as used for the shipped weights.
FAMILY_BUDGETS: dict[str, dict[str, float]] = {
    "qwen_small": {"base_s": 1500, "ar_s": 1200, "av_s": 3000},
    "qwen_tiny": {"base_s": 1200, "ar_s": 480, "av_s": 1200},
}
SMOKE = BuildSize(base_s=8, ar_s=6, av_s=10, distill_s=4, max_steps=30, positions_per_doc=2,
                  max_train_docs=120, max_heldout_docs=40, n_eval=24, distill_n=1,
                  distill_vectors=16, max_new_tokens=24)


@dataclasses.dataclass
class BuildContext:
    """Paths and settings shared by the stages of one build."""

    work_dir: Path
    out_dir: Path
    corpus_path: Path
    size: BuildSize
    families: dict[str, FamilySpec]
    smoke: bool
    use_distilled: bool = False
    budget_scale: float = 1.0
    all_families: tuple[str, ...] = tuple(FAMILIES)
    _docs: list[Document] | None = None

    def budget(self, spec: FamilySpec, key: str) -> float:
        """Training budget ``key`` (``base_s``, ``ar_s``, ``av_s``) for a family, in seconds."""
        base = getattr(self.size, key)
        if self.smoke or spec.name not in FAMILY_BUDGETS:
            return base
        return FAMILY_BUDGETS[spec.name].get(key, base) * self.budget_scale

    def fam_dir(self, family: str) -> Path:
        d = self.work_dir / family
        d.mkdir(parents=True, exist_ok=True)
        return d

    def docs(self, split: str) -> list[Document]:
        if self._docs is None:
            self._docs = load_corpus(self.corpus_path)
        docs = [d for d in self._docs if d.split == split]
        cap = self.size.max_train_docs if split == "train" else self.size.max_heldout_docs
        if cap is not None:
            # Keep every genre represented in a capped (smoke) build.
            by_genre: dict[str, list[Document]] = {}
            for d in docs:
                by_genre.setdefault(d.genre, []).append(d)
            per = max(1, cap // max(len(by_genre), 1))
            docs = [d for g in sorted(by_genre) for d in by_genre[g][:per]]
        return docs


def _tokenizer_texts(ctx: BuildContext, spec: FamilySpec) -> list[str]:
    from nla_probe.nla.contract import AR_TEMPLATE, AV_TEMPLATE
    from nla_probe.toy.labeler import scaffold_texts

    reps = 20 if ctx.smoke else 200
    fixed = scaffold_texts() + [AV_TEMPLATE.format(injection_char=spec.marker_char),
                                AR_TEMPLATE.format(explanation="x")]
    return [d.text for d in ctx.docs("train")] + fixed * reps


def stage_tokenizer(ctx: BuildContext, spec: FamilySpec) -> None:
    from nla_probe.toy.tokenizer import train_tokenizer

    train_tokenizer(_tokenizer_texts(ctx, spec), spec.vocab_size,
                    ctx.fam_dir(spec.name) / "tokenizer", marker_chars=[spec.marker_char])


def stage_base(ctx: BuildContext, spec: FamilySpec) -> None:
    from nla_probe.toy.train import sample_text, train_base_lm

    tok = load_tokenizer(ctx, spec)
    work = ctx.fam_dir(spec.name) / "base_work"
    model = train_base_lm(spec, tok, [d.text for d in ctx.docs("train")],
                          [d.text for d in ctx.docs("heldout")],
                          Schedule(budget_s=ctx.budget(spec, "base_s"), lr=3e-3 if not ctx.smoke else 5e-3,
                                   max_steps=ctx.size.max_steps),
                          work)
    out = ctx.fam_dir(spec.name) / "base"
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    for s in sample_text(model, tok, ["The ", "DOG, n. ", "hack: "], max_new_tokens=30):
        logger.info("%s sample: %r", spec.name, s)


def _stage_fn(name: str) -> Any:
    if name in ("tokenizer", "base"):
        return globals()[f"stage_{name}"]
    if name == "distill":
        from nla_probe.toy.distill import stage_distill

        return stage_distill
    from nla_probe.toy import stages

    return getattr(stages, f"stage_{name}")


def run(ctx: BuildContext, stages: Sequence[str]) -> None:
    """Run ``stages`` for every family in ``ctx``, skipping stages already marked done."""
    for family, spec in ctx.families.items():
        for stage in STAGES:
            if stage not in stages:
                continue
            marker = ctx.fam_dir(family) / f"{stage}.done"
            if marker.exists():
                logger.info("%s/%s: done already, skipped", family, stage)
                continue
            t = time.monotonic()
            logger.info("%s/%s: start", family, stage)
            _stage_fn(stage)(ctx, spec)
            marker.write_text(json.dumps({"seconds": time.monotonic() - t}))
            logger.info("%s/%s: finished in %.0f s", family, stage, time.monotonic() - t)


def build(work_dir: str | Path = "toy_build", out_dir: str | Path | None = None, corpus: str | Path | None = None,
          smoke: bool = False, families: str | None = None, stages: str = ",".join(STAGES),
          threads: int | None = None, no_distilled: bool = False, budget_scale: float = 1.0,
          best_of_n: int | None = None) -> int:
    """Run the build stages (arguments as in :data:`OPTION_HELP`); returns the process exit code."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                            handlers=[logging.StreamHandler(sys.stderr),
                                      logging.FileHandler(work / "build.log")])
    fams = SMOKE_FAMILIES if smoke else FAMILIES
    if families:
        fams = {k: fams[k] for k in families.split(",")}
    size = SMOKE if smoke else FULL
    if budget_scale != 1.0:
        size = dataclasses.replace(size, **{k: getattr(size, k) * budget_scale
                                            for k in ("base_s", "ar_s", "av_s", "distill_s")})
    if best_of_n is not None:
        size = dataclasses.replace(size, distill_n=best_of_n)
    out = Path(out_dir) if out_dir else default_corpus_path().parents[1]
    ctx = BuildContext(work_dir=work, out_dir=out,
                       corpus_path=Path(corpus) if corpus else default_corpus_path(),
                       size=size, families=fams, smoke=smoke,
                       use_distilled=bool(size.distill_n) and not no_distilled,
                       budget_scale=budget_scale)
    run(ctx, [s for s in stages.split(",") if s])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``python -m nla_probe.toy.build``; returns the process exit code."""
    h = OPTION_HELP
    p = argparse.ArgumentParser(prog="python -m nla_probe.toy.build", description=__doc__.split("\n")[0])
    p.add_argument("--work-dir", default="toy_build", help=h["work_dir"])
    p.add_argument("--out-dir", default=None, help=h["out_dir"])
    p.add_argument("--corpus", default=None, help=h["corpus"])
    p.add_argument("--smoke", action="store_true", help=h["smoke"])
    p.add_argument("--families", default=None, help=h["families"])
    p.add_argument("--stages", default=",".join(STAGES), help=h["stages"])
    p.add_argument("--threads", type=int, default=None, help=h["threads"])
    p.add_argument("--no-distilled", action="store_true", help=h["no_distilled"])
    p.add_argument("--budget-scale", type=float, default=1.0, help=h["budget_scale"])
    p.add_argument("--best-of-n", type=int, default=None, help=h["best_of_n"])
    return build(**vars(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
