"""AV generation backends behind one interface.

A backend takes prompt embeddings ``[B, T, d]`` (injection already applied), a
:class:`~nla_probe.nla.generation.Sampling` and hooks, and returns per row the generated ids (stop token
excluded) and a finish reason.  ``"hf"`` uses transformers ``generate(inputs_embeds=...)``;
``"vllm"`` uses vLLM prompt embeddings (``vllm>=0.11``, the ``vllm`` extra).
"""

from __future__ import annotations

from typing import Any

from nla_probe.errors import UnknownNameError

BACKENDS = {"hf": "nla_probe.nla.backends.hf:HFBackend", "vllm": "nla_probe.nla.backends.vllm:VLLMBackend"}


def list_backends() -> list[str]:
    return list(BACKENDS)


def make_backend(name: str, av: Any, **kwargs: Any) -> Any:
    """Instantiate the backend registered under ``name`` for the loaded AV ``av``."""
    import importlib

    if name not in BACKENDS:
        raise UnknownNameError("backend", name, BACKENDS)
    mod, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(mod), cls)(av, **kwargs)
