"""Where the embedded defaults live: the toy NLA pair, its evaluation set, the default ablation
suite and the default output directory.

Every command that runs "on the embedded default" resolves its paths here, in one place
(:func:`nla_probe.toy.fixtures.default_pair_dirs` adds the fallback to a fixture pair).
"""

from __future__ import annotations

from pathlib import Path

#: Repository root (the directory holding data/ and ablations/).
REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
ABLATIONS_DIR = REPO_ROOT / "ablations"
TOY_DIR = DATA_DIR / "toy"
#: Main toy family (Qwen2 architecture) and the second family (different tokenizer and d_model).
TOY_FAMILY = "qwen_small"
TOY_SECOND_FAMILY = "qwen_tiny"
#: Specs run by ``nla-probe ablate`` without SPEC arguments (file stems under ``ablations/``).
DEFAULT_SUITE: tuple[str, ...] = ("quote_ban", "quote_surgery")
#: Activations used by ``nla-probe ablate`` without SPEC arguments and without ``--limit`` (the
#: first rows of the toy evaluation set); keeps the default run within minutes on 2 CPU cores.
DEFAULT_SUITE_LIMIT = 200
#: Output directory of ``nla-probe ablate`` without ``--out`` (relative to the working directory).
DEFAULT_ABLATE_OUT = Path("runs") / "ablate"


def toy_pair_dirs(family: str = TOY_FAMILY) -> tuple[Path, Path]:
    """``(av_dir, ar_dir)`` of a toy family (they may not exist on a partial checkout)."""
    return TOY_DIR / family / "av", TOY_DIR / family / "ar"


def toy_eval_path(family: str = TOY_FAMILY) -> Path:
    """The held-out evaluation activations of a toy family."""
    return TOY_DIR / family / "eval.parquet"


def default_eval_path() -> Path | None:
    p = toy_eval_path()
    return p if p.is_file() else None


def toy_pair_present(family: str = TOY_FAMILY) -> bool:
    """Whether the toy pair and its evaluation set are on disk."""
    av, ar = toy_pair_dirs(family)
    return (av / "nla_meta.yaml").is_file() and (ar / "nla_meta.yaml").is_file() and toy_eval_path(family).is_file()


def toy_denominator(family: str = TOY_FAMILY) -> tuple[float, str] | None:
    """``(Var(v_nrm), source)`` of the toy family's TRAINING activations, from its ``metrics.json``."""
    import json

    path = TOY_DIR / family / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        value = float(metrics["denominator"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    source = metrics.get("denominator_source") or "training activations"
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    return value, f"toy {family}: {source} ({shown})"


def toy_family_of(checkpoint_dir: Path) -> str | None:
    """The toy family whose AV or AR directory ``checkpoint_dir`` is (same resolved path), else None."""
    target = Path(checkpoint_dir).resolve()
    for family in (TOY_FAMILY, TOY_SECOND_FAMILY):
        if target in {d.resolve() for d in toy_pair_dirs(family)}:
            return family
    return None


def toy_denominator_for(checkpoint_dir: Path) -> tuple[float, str] | None:
    """:func:`toy_denominator` of the toy family ``checkpoint_dir`` belongs to; None for any other
    checkpoint.  The CLI's default denominator on the toy pair, however its paths were given."""
    family = toy_family_of(checkpoint_dir)
    return None if family is None else toy_denominator(family)


def default_suite_paths() -> list[Path]:
    """The spec files of :data:`DEFAULT_SUITE`."""
    return [ABLATIONS_DIR / f"{name}.toml" for name in DEFAULT_SUITE]
