"""The released NLA checkpoint contract: the ``nla_meta.yaml`` sidecar, parsed and written.

A :class:`Contract` is the validated, normalised content of one sidecar.  :func:`read_sidecar`
accepts every variant the release tooling produced:

* schema v1 and v2;
* pre-release roles ``actor``/``critic`` (mapped to ``av``/``ar``) and template keys
  ``prompt_templates.actor``/``critic``;
* YAML with escaped unicode (``"\\u320E"``) or literal characters; folded or block templates;
* the extraction layer index K in any of its places, first found wins: top-level
  ``extraction_layer_index``, ``critic.extraction_layer_index``, ``critic.num_hidden_layers`` (v1),
  ``ar.num_hidden_layers`` (as shown in the upstream inference docs).

Layer K always means *the output of block K*, which is Hugging Face ``hidden_states[K + 1]``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from nla_probe.errors import ContractError

SIDECAR_NAME = "nla_meta.yaml"

#: The released AV user-message template (520 characters, no trailing newline).
AV_TEMPLATE = (
    "You are a meticulous AI researcher conducting an important investigation into activation "
    "vectors from a language model. Your overall task is to describe the semantic content of that "
    "activation vector.\n\nWe will pass the vector enclosed in <concept> tags into your context. You "
    "must then produce an explanation for the vector, enclosed within <explanation> tags. The "
    "explanation consists of 2-3 text snippets describing that vector.\n\nHere is the vector:\n\n"
    "<concept>{injection_char}</concept>\n\nPlease provide an explanation."
)
#: The released AR template (67 characters).
AR_TEMPLATE = "Summary of the following text: <text>{explanation}</text> <summary>"

_ROLE_ALIASES = {"av": "av", "actor": "av", "ar": "ar", "critic": "ar"}
_RAW_SCALES = {None, "raw", "none", "null"}


@dataclass(frozen=True)
class Contract:
    """Validated content of an ``nla_meta.yaml`` sidecar.

    Attributes:
        role: ``"av"`` (verbalizer) or ``"ar"`` (reconstructor).
        d_model: residual-stream width d.
        layer: extraction layer index K (output of block K = ``hidden_states[K + 1]``).
        injection_scale: L2 norm the vector is rescaled to before injection (AV); None on an AR.
        mse_scale: the norm both vectors are scaled to for ``mse_nrm`` (√d on released pairs).
        injection_char: the marker character (one token).
        injection_token_id: its token id.
        left_neighbor_id / right_neighbor_id: ids at marker position −1/+1 in the canonical AV prompt.
        critic_suffix_ids: stable tail of the AR template suffix (AR only), else None.
        av_template / ar_template: the exact prompt templates (``str.format`` placeholders
            ``{injection_char}`` and ``{explanation}``).
        schema_version: sidecar schema version (1 or 2).
        base_checkpoint, stage: informational fields, '' when absent.
        source: path of the sidecar this was read from ('' when built in memory).
    """

    role: str
    d_model: int
    layer: int
    injection_scale: float | None
    mse_scale: float
    injection_char: str
    injection_token_id: int
    left_neighbor_id: int
    right_neighbor_id: int
    critic_suffix_ids: tuple[int, ...] | None
    av_template: str = AV_TEMPLATE
    ar_template: str = AR_TEMPLATE
    schema_version: int = 2
    base_checkpoint: str = ""
    stage: str = ""
    source: str = ""

    def with_role(self, role: str) -> Contract:
        return replace(self, role=role)

    def av_prompt_text(self) -> str:
        """The AV user message with the marker character filled in."""
        return self.av_template.format(injection_char=self.injection_char)

    def ar_prompt_text(self, explanation: str) -> str:
        """The AR input text for one explanation (``str.format`` of the AR template)."""
        return self.ar_template.format(explanation=explanation)

    def fingerprint(self) -> str:
        """sha256 of the fields that define behaviour (not ``source``), for cache keys."""
        d = asdict(self)
        d.pop("source")
        return hashlib.sha256(repr(sorted(d.items())).encode()).hexdigest()[:16]


def _get(d: dict, dotted: str) -> Any:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _resolve_scale(value: Any, d_model: int, path: Path, field: str, default: Any) -> float | None:
    """Resolve a scale field: number, number-string, ``sqrt_d_model``, or raw (null/'raw'/'none')."""
    if value is None:
        value = default
    if isinstance(value, str) and value.strip().lower() in _RAW_SCALES:
        return None
    if value is None:
        return None
    if isinstance(value, str) and value.strip() == "sqrt_d_model":
        return math.sqrt(d_model)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ContractError(path, field, "a number, 'sqrt_d_model' or null", value) from None
    if not math.isfinite(out) or out <= 0:
        raise ContractError(path, field, "a positive finite number", value)
    return out


def _int_field(raw: dict, dotted: str, path: Path, required: bool = True) -> int | None:
    value = _get(raw, dotted)
    if value is None:
        if required:
            raise ContractError(path, dotted, "an integer", None, "the field is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(path, dotted, "an integer", value)
    return value


def parse_sidecar(raw: Any, path: str | Path = "<memory>") -> Contract:
    """Build a :class:`Contract` from an already-loaded sidecar mapping (see module doc)."""
    path = Path(path)
    if not isinstance(raw, dict):
        raise ContractError(path, "<document>", "a YAML mapping", type(raw).__name__)
    kind = raw.get("kind")
    if kind != "nla_model":
        raise ContractError(path, "kind", "'nla_model'", kind,
                            "dataset sidecars (kind: nla_dataset) describe parquets, not checkpoints")
    schema = raw.get("schema_version", 1)
    if schema not in (1, 2):
        raise ContractError(path, "schema_version", "1 or 2", schema)
    role_raw = raw.get("role")
    if role_raw not in _ROLE_ALIASES:
        raise ContractError(path, "role", "one of av, ar, actor, critic", role_raw)
    d_model = _int_field(raw, "d_model", path)
    if d_model <= 0:
        raise ContractError(path, "d_model", "a positive integer", d_model)

    layer = None
    for key in ("extraction_layer_index", "critic.extraction_layer_index",
                "critic.num_hidden_layers", "ar.num_hidden_layers"):
        layer = _int_field(raw, key, path, required=False)
        if layer is not None:
            break
    if layer is None:
        raise ContractError(path, "extraction_layer_index", "an integer layer index K", None,
                            "looked in extraction_layer_index, critic.extraction_layer_index, "
                            "critic.num_hidden_layers and ar.num_hidden_layers")
    if layer < 0:
        raise ContractError(path, "extraction_layer_index", "a non-negative integer", layer)

    role = _ROLE_ALIASES[role_raw]
    inj = _resolve_scale(_get(raw, "extraction.injection_scale"), d_model, path,
                         "extraction.injection_scale", None)
    if role == "av" and inj is None:
        raise ContractError(path, "extraction.injection_scale", "a positive number on an AV", None)
    extraction = raw.get("extraction") or {}
    mse_raw = extraction.get("mse_scale", "sqrt_d_model") if isinstance(extraction, dict) else "sqrt_d_model"
    mse = _resolve_scale(mse_raw, d_model, path, "extraction.mse_scale", None)  # absent: √d; null: raw
    if mse is None:
        raise ContractError(path, "extraction.mse_scale", "a number or 'sqrt_d_model'", None,
                            "a raw-MSE sidecar (mse_scale: null) has no normalised metric")

    char = _get(raw, "tokens.injection_char")
    if not isinstance(char, str) or len(char) != 1:
        raise ContractError(path, "tokens.injection_char", "a single character", char)
    suffix = _get(raw, "tokens.critic_suffix_ids")
    if suffix is not None:
        if not isinstance(suffix, list) or not all(isinstance(i, int) for i in suffix):
            raise ContractError(path, "tokens.critic_suffix_ids", "a list of integers or null", suffix)
        suffix = tuple(suffix)

    templates = raw.get("prompt_templates") or {}
    if not isinstance(templates, dict):
        raise ContractError(path, "prompt_templates", "a mapping", templates)
    av_t = templates.get("av", templates.get("actor"))
    ar_t = templates.get("ar", templates.get("critic"))
    if not isinstance(av_t, str) or "{injection_char}" not in av_t:
        raise ContractError(path, "prompt_templates.av", "a template containing '{injection_char}'", av_t)
    if not isinstance(ar_t, str) or "{explanation}" not in ar_t:
        raise ContractError(path, "prompt_templates.ar", "a template containing '{explanation}'", ar_t)

    return Contract(
        role=role, d_model=d_model, layer=layer, injection_scale=inj, mse_scale=mse,
        injection_char=char,
        injection_token_id=_int_field(raw, "tokens.injection_token_id", path),
        left_neighbor_id=_int_field(raw, "tokens.injection_left_neighbor_id", path),
        right_neighbor_id=_int_field(raw, "tokens.injection_right_neighbor_id", path),
        critic_suffix_ids=suffix, av_template=av_t, ar_template=ar_t, schema_version=schema,
        base_checkpoint=str(raw.get("base_checkpoint") or ""), stage=str(raw.get("stage") or ""),
        source=str(path),
    )


def template_drift(contract: Contract) -> list[str]:
    """One message per template of ``contract`` that differs from the released text
    (:data:`AV_TEMPLATE`, :data:`AR_TEMPLATE`), naming the field and the first difference."""
    out = []
    for field, found, released, who in (("prompt_templates.av", contract.av_template, AV_TEMPLATE, "AV"),
                                        ("prompt_templates.ar", contract.ar_template, AR_TEMPLATE, "AR")):
        if found == released:
            continue
        k = next((i for i, (a, b) in enumerate(zip(found, released)) if a != b), min(len(found), len(released)))
        out.append(f"{contract.source or '<sidecar>'}: field '{field}' differs from the released {who} template "
                   f"at character {k}: released {released[k:k + 40]!r}, found {found[k:k + 40]!r} (the released "
                   f"pairs were trained on the released text; `nla-probe inspect` shows the rendered prompt)")
    return out


def read_sidecar(path: str | Path) -> Contract:
    """Read and validate ``path`` (a sidecar file or a checkpoint directory holding one)."""
    import yaml

    path = Path(path)
    if path.is_dir():
        path = path / SIDECAR_NAME
    if not path.is_file():
        raise ContractError(path, SIDECAR_NAME, "an existing sidecar file", "no such file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ContractError(path, "<document>", "valid YAML", str(e).splitlines()[0]) from None
    return parse_sidecar(raw, path)


def sidecar_dict(contract: Contract, **extra: Any) -> dict:
    """The sidecar mapping as the release tooling writes it (schema v2, scrubbed layout)."""
    is_ar = contract.role == "ar"
    d: dict[str, Any] = {
        "kind": "nla_model",
        "schema_version": 2,
        "role": contract.role,
        "stage": contract.stage or "sl",
        "base_checkpoint": contract.base_checkpoint,
        "d_model": contract.d_model,
        "extraction": {
            "injection_scale": None if is_ar else contract.injection_scale,
            "mse_scale": contract.mse_scale,
        },
        "tokens": {
            "injection_char": contract.injection_char,
            "injection_token_id": contract.injection_token_id,
            "injection_left_neighbor_id": contract.left_neighbor_id,
            "injection_right_neighbor_id": contract.right_neighbor_id,
            "critic_suffix_ids": list(contract.critic_suffix_ids) if (is_ar and contract.critic_suffix_ids) else None,
        },
        "prompt_templates": {"av": contract.av_template, "ar": contract.ar_template},
    }
    if is_ar:
        d["critic"] = {"extraction_layer_index": contract.layer}
    d["extraction_layer_index"] = contract.layer
    d.update(extra)
    return d


def write_sidecar(directory: str | Path, contract: Contract, **extra: Any) -> Path:
    """Write ``nla_meta.yaml`` into ``directory`` exactly as the release tooling serialises it
    (``yaml.dump(sort_keys=False)``, escaped unicode, folded templates)."""
    import yaml

    path = Path(directory) / SIDECAR_NAME
    path.write_text(yaml.dump(sidecar_dict(contract, **extra), sort_keys=False), encoding="utf-8")
    return path
