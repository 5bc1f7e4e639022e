"""nla-probe: explanation surgery on Natural Language Autoencoders (NLAs).

Top-level names are imported lazily so that ``import nla_probe`` (and the CLI's ``--help``) stay
fast; ``torch`` and ``transformers`` load only when a model is loaded.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_pair": "checkpoint", "load_av": "checkpoint", "load_ar": "checkpoint", "NLAPair": "checkpoint",
    "Contract": "contract", "read_sidecar": "contract",
    "Verbalizer": "verbalizer", "Decode": "generation", "parse_explanation": "generation",
    "Reconstructor": "reconstructor",
    "extract_activations": "extraction", "read_activations": "extraction", "write_activations": "extraction",
    "metrics": None,
    "list_families": "delimiters",
    "list_transforms": "transforms", "get_transform": "transforms", "Compose": "transforms",
    "find_spans": "spans", "score_variants": "surgery",
    "list_hooks": "hooks", "BanChars": "hooks",
    "copy_detection": "copying",
    "ablate": "ablation", "AblationResult": "ablation_result", "Spec": "spec", "load_spec": "spec",
    "list_experiments": "experiments",
    "span_attribution": "surgery", "redaction_grid": "surgery", "register_transform": "transforms",
    "LengthPenalty": "hooks", "MinNewTokens": "hooks", "MaxNewTokens": "hooks",
    "extract_layers": "layers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nla_probe' has no attribute {name!r}")
    mod = _EXPORTS[name]
    if mod is None:
        return importlib.import_module(f".{name}", __name__)
    return getattr(importlib.import_module(f".{mod}", __name__), name)


def __dir__() -> list[str]:
    return __all__
