"""Where the embedded defaults live: the toy NLA pair and its evaluation set.

Every command that runs "on the embedded default" resolves its paths here, in one place.
``default_pair_dirs()`` falls back to a freshly written fixture pair (random weights) when the toy
pair is not present, so tools keep working on a partial checkout.
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


def toy_pair_dirs(family: str = TOY_FAMILY) -> tuple[Path, Path]:
    """``(av_dir, ar_dir)`` of a toy family (they may not exist on a partial checkout)."""
    return TOY_DIR / family / "av", TOY_DIR / family / "ar"


def toy_eval_path(family: str = TOY_FAMILY) -> Path:
    """The held-out evaluation activations of a toy family."""
    return TOY_DIR / family / "eval.parquet"


def default_eval_path() -> Path | None:
    p = toy_eval_path()
    return p if p.is_file() else None


def default_pair_dirs() -> tuple[Path, Path]:
    """The toy pair if present, else a fixture pair written to a temporary directory."""
    av, ar = toy_pair_dirs()
    if (av / "nla_meta.yaml").is_file() and (ar / "nla_meta.yaml").is_file():
        return av, ar
    import tempfile

    from .fixtures import make_fixture_pair

    return make_fixture_pair(Path(tempfile.mkdtemp(prefix="nla-probe-fixture-")), "qwen2")
