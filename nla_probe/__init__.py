"""nla-probe: explanation surgery on Natural Language Autoencoders (NLAs).

Top-level names are imported lazily so that ``import nla_probe`` (and the CLI's ``--help``) stay
fast; ``torch`` and ``transformers`` load only when a model is loaded.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module (under nla_probe) that defines it; ``metrics`` is the module itself.
_EXPORTS = {
    "load_pair": "nla.checkpoint", "load_av": "nla.checkpoint", "load_ar": "nla.checkpoint",
    "NLAPair": "nla.checkpoint", "Contract": "nla.contract", "read_sidecar": "nla.contract",
    "Verbalizer": "nla.verbalizer", "Decode": "nla.generation", "parse_explanation": "nla.generation",
    "Reconstructor": "nla.reconstructor",
    "extract_activations": "nla.extraction", "read_activations": "nla.extraction",
    "write_activations": "nla.extraction", "extract_layers": "nla.layers",
    "metrics": "analysis.metrics",
    "list_families": "text.delimiters", "find_spans": "text.spans",
    "list_transforms": "surgery.base", "get_transform": "surgery.base", "Compose": "surgery.base",
    "register_transform": "surgery.base",
    "score_variants": "surgery.scoring", "span_attribution": "surgery.scoring", "redaction_grid": "surgery.scoring",
    "show_attribution": "surgery.view",
    "list_hooks": "hooks", "BanChars": "hooks", "LengthPenalty": "hooks", "MinNewTokens": "hooks",
    "MaxNewTokens": "hooks",
    "copy_detection": "copying",
    "ablate": "ablate.engine", "AblationResult": "ablate.result", "Spec": "ablate.spec", "load_spec": "ablate.spec",
    "list_experiments": "ablate.kinds",
}
_MODULE_EXPORTS = {"metrics"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nla_probe' has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return module if name in _MODULE_EXPORTS else getattr(module, name)


def __dir__() -> list[str]:
    return __all__
