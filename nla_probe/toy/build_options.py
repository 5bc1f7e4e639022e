"""Names and help texts of the toy build's options, importable without torch.

Shared by ``nla-probe toy build`` (typer) and ``python -m nla_probe.toy.build`` (argparse), so the
two spellings of the command document the same options in the same words.
"""

from __future__ import annotations

#: Build stages, in the order they run (each resumable; see :mod:`nla_probe.toy.build`).
STAGES: tuple[str, ...] = ("tokenizer", "base", "data", "ar", "av", "distill", "export")
#: Toy families built by default (their sizes are :data:`nla_probe.toy.build.FAMILIES`).
FAMILY_NAMES: tuple[str, ...] = ("qwen_small", "qwen_tiny")

OPTION_HELP: dict[str, str] = {
    "work_dir": "Logs, checkpoints and intermediate files (a rerun resumes from them).",
    "out_dir": "Where data/toy/... is written (default: the source tree's data/).",
    "corpus": "corpus.jsonl (default: the committed one).",
    "smoke": "Tiny sizes and budgets; the whole build finishes in under 2 minutes.",
    "families": "Comma list of families to build (default: all: " + ",".join(FAMILY_NAMES) + ").",
    "stages": "Comma list of stages to run (default: all, in this order: " + ",".join(STAGES) + ").",
    "threads": "torch CPU threads (default: torch's own setting, left unchanged).",
    "no_distilled": "Export the SFT weights even after a best-of-N round.",
    "budget_scale": "Multiply every training budget (wall-clock seconds) by this.",
    "best_of_n": "Samples per vector in the optional best-of-N round (stage 'distill'; "
                 "default: off in the full build, 1 with --smoke).",
}
