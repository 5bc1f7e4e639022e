"""Loading released NLA checkpoints (AV and AR) from local directories, with contract validation.

``load_av`` / ``load_ar`` / ``load_pair`` read a directory laid out as released (Hugging Face files
plus ``nla_meta.yaml``; the AR also ``value_head.safetensors``) and check it against the live
tokenizer and config before any weight is used:

* the marker character encodes to exactly ``[injection_token_id]`` and is not the unk token;
* the canonical AV prompt holds exactly one marker, between the sidecar's neighbour ids;
* ``d_model`` equals the (text) config's ``hidden_size`` and the embedding width;
* AR: ``config.num_hidden_layers == K + 1``; ``value_head.safetensors`` holds one tensor
  ``weight`` of shape ``[d, d]``; the BOS token is prepended when the tokenizer has one; the AR
  template's tail tokenizes to ``critic_suffix_ids``.

Weights are read from safetensors only (:mod:`nla_probe.nla.weights`): every weight file must exist
and be whole before loading starts; the AR value head must hold finite values.  ``config.json``
must be consistent (per-layer lists such as ``layer_types`` as long as ``num_hidden_layers``).
A sidecar template that differs from the released text loads with a
:class:`~nla_probe.errors.TemplateDriftWarning` naming the field.

Every failure raises :class:`~nla_probe.errors.ContractError` naming the file, field, expected and
found values.  ``trust_remote_code`` stays off unless asked.

Dtype: ``dtype=None`` means bfloat16 on CUDA (the reference default) and float32 on CPU (bf16
matmuls are slow on CPUs); a checkpoint stored in fp32 is never loaded as fp32 on a GPU unless you
pass ``dtype="float32"``.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nla_probe.errors import ContractError, InputError, TemplateDriftWarning
from nla_probe.nla.arch import embed_scale, stop_token_ids, text_config
from nla_probe.nla.contract import SIDECAR_NAME, Contract, read_sidecar, template_drift
from nla_probe.nla.embeddings import EmbeddingTensor, find_embedding_tensor, prompt_table
from nla_probe.nla.identity import checkpoint_identity
from nla_probe.nla.injection import av_prompt_ids, find_injection_site
from nla_probe.nla.placement import Placement, checked_placement, execution_device, resolve_placement
from nla_probe.nla.weights import check_finite_parameters, safetensors_header, verify_weight_files

VALUE_HEAD_NAME = "value_head.safetensors"


def check_device(device: Any) -> str:
    """``device`` as a string, after checking torch can use it (CUDA present, index in range).
    ``"auto"`` (accelerate's device map, :mod:`nla_probe.nla.placement`) passes as it is."""
    import torch

    d = str(device)
    if d == "auto":
        return d
    try:
        dev = torch.device(d)
    except (RuntimeError, ValueError):
        raise InputError(f"device: expected e.g. 'cpu', 'cuda' or 'cuda:1' (--device), found {d!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
            raise InputError(f"device {d!r}: CUDA is not available ({why}, torch {torch.__version__}); "
                             "pass --device cpu (device='cpu')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {d!r}: expected a CUDA index below {torch.cuda.device_count()} (--device)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {d!r}: MPS is not available; pass --device cpu (device='cpu')")
    return d


def resolve_dtype(dtype: Any, device: str) -> Any:
    import torch

    if str(device) == "auto":  # a device map: bfloat16 when GPUs take part
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
             "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}
    if dtype not in table:
        raise InputError(f"dtype: expected one of {sorted(table)}, found {dtype!r}")
    return table[dtype]


def _check_dir(path: str | Path, role: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise ContractError(p, "<directory>", f"an existing {role.upper()} checkpoint directory", "no such directory")
    if not (p / SIDECAR_NAME).is_file():
        raise ContractError(p / SIDECAR_NAME, "<file>", "the nla_meta.yaml sidecar", "no such file")
    return p


@contextmanager
def _quiet_loading():
    """Silence transformers' weight-loading chatter (progress bars, expected missing keys) for one
    load, restoring the previous verbosity and progress-bar setting afterwards."""
    from transformers.utils import logging as tf_logging

    verbosity = tf_logging.get_verbosity()
    bars = tf_logging.is_progress_bar_enabled()
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        tf_logging.set_verbosity(verbosity)
        if bars:
            tf_logging.enable_progress_bar()


def _load_tokenizer(path: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)


def _normalizer_hint(tokenizer: Any, char: str) -> str:
    """Names a normalizer that rewrites the marker before tokenization (NFKC turns ``㈎`` into ``(가)``)."""
    norm = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    try:
        out = norm.normalize_str(char) if norm is not None else char
    except Exception:  # a normalizer that cannot run on its own: no hint
        return ""
    if out == char:
        return ""
    return (f"the tokenizer's normalizer ({type(norm).__name__}) rewrites the marker {char!r} (U+{ord(char):04X}) "
            f"to {out!r} before tokenization; the released tokenizers keep it (NFC or no normalizer): use the "
            "checkpoint's own tokenizer files")


def validate_tokenizer(contract: Contract, tokenizer: Any, path: Path) -> list[int]:
    """Marker and neighbour checks against the live tokenizer; returns the canonical AV prompt ids.

    A marker that is not one token raises a ContractError; when the tokenizer's normalizer rewrites
    the marker (e.g. NFKC: ``㈎`` → ``(가)``, ``㎡`` → ``m2``) the message names that normalizer.
    """
    sc = path / SIDECAR_NAME
    enc = tokenizer.encode(contract.injection_char, add_special_tokens=False)
    if enc != [contract.injection_token_id]:
        raise ContractError(sc, "tokens.injection_token_id",
                            f"the marker {contract.injection_char!r} to encode as [{contract.injection_token_id}]",
                            enc, _normalizer_hint(tokenizer, contract.injection_char)
                            or "the marker must be a single token of this tokenizer")
    if tokenizer.unk_token_id is not None and contract.injection_token_id == tokenizer.unk_token_id:
        raise ContractError(sc, "tokens.injection_token_id", "a real token (not unk)", contract.injection_token_id)
    ids = av_prompt_ids(tokenizer, contract)
    find_injection_site(ids, contract, where=f"canonical AV prompt of {path}")
    return ids


def _check_d_model(contract: Contract, config: Any, path: Path) -> None:
    hidden = getattr(text_config(config), "hidden_size", None)
    if hidden != contract.d_model:
        raise ContractError(path / SIDECAR_NAME, "d_model", f"the config's hidden_size ({hidden})", contract.d_model,
                            f"{path / 'config.json'} says hidden_size={hidden}")


_ROLE_NAMES = {"av": "'av' (or 'actor')", "ar": "'ar' (or 'critic')"}
#: Per-layer config lists that must have one entry per layer.
_PER_LAYER_KEYS = ("layer_types",)


def _check_config_file(p: Path) -> None:
    """``config.json`` exists, parses, and its per-layer lists match ``num_hidden_layers``."""
    cfg = p / "config.json"
    if not cfg.is_file():
        raise ContractError(cfg, "<file>", "the model's config.json", "no such file")
    try:
        raw = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ContractError(cfg, "<document>", "valid JSON", str(e).splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise ContractError(cfg, "<document>", "a JSON object", type(raw).__name__)
    for prefix, sub in (("", raw), ("text_config.", raw.get("text_config"))):
        if not isinstance(sub, dict):
            continue
        n = sub.get("num_hidden_layers")
        for key in _PER_LAYER_KEYS:
            val = sub.get(key)
            if isinstance(val, list) and isinstance(n, int) and len(val) != n:
                raise ContractError(cfg, prefix + key, f"{n} entries (one per layer: {prefix}num_hidden_layers = {n})",
                                    f"{len(val)} entries", "per-layer lists are cut together with the layers")


def _validated_config(path: str | Path, role: str | None, trust_remote_code: bool) -> tuple[Path, Contract, Any]:
    """Sidecar + config checks shared by every loader (role, d_model, layer count).

    ``role=None`` accepts either role (as ``inspect`` does).  AV: ``K < num_hidden_layers``;
    AR: ``num_hidden_layers == K + 1``.
    """
    from transformers import AutoConfig

    p = Path(path)
    if role is None and p.is_dir() and (p / SIDECAR_NAME).is_file():
        role = read_sidecar(p).role
    p = _check_dir(p, role or "")
    contract = read_sidecar(p)
    if contract.role != role:
        other = "AR" if contract.role == "ar" else "AV"
        raise ContractError(p / SIDECAR_NAME, "role", _ROLE_NAMES[role], contract.role, f"this is an {other} checkpoint")
    _check_config_file(p)
    try:
        config = AutoConfig.from_pretrained(str(p), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ContractError(p / "config.json", "<config>", "a config transformers can read",
                            f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}") from None
    for message in template_drift(contract):
        warnings.warn(message, TemplateDriftWarning, stacklevel=3)
    _check_d_model(contract, config, p)
    n_layers = getattr(text_config(config), "num_hidden_layers", None)
    if role == "ar" and n_layers != contract.layer + 1:
        raise ContractError(p / "config.json", "num_hidden_layers", f"K+1 = {contract.layer + 1}", n_layers,
                            f"the sidecar's extraction layer index is K={contract.layer}")
    if role == "av" and n_layers is not None and contract.layer >= n_layers:
        raise ContractError(p / SIDECAR_NAME, "extraction_layer_index", f"< num_hidden_layers ({n_layers})",
                            contract.layer)
    return p, contract, config


@dataclass
class AV:
    """A loaded activation verbalizer: model, tokenizer, contract and derived facts.

    Attributes:
        model: the causal LM (eval mode); loaded on first access when :func:`load_av` was asked for
            ``backend="vllm"`` (vLLM loads the weights itself and the prompt embeddings need only
            the embedding rows, read from the file: :meth:`prompt_table`).
        tokenizer: its tokenizer.
        contract: the validated sidecar.
        path: checkpoint directory.
        prompt_ids: canonical AV prompt ids; ``site`` is the marker position in it.
        embed_scale: multiplier of looked-up embedding rows (√d for Gemma, 1 otherwise).
        stop_ids: token ids that end a decode (generation_config eos + chat end-of-turn tokens).
        identity: :func:`~nla_probe.nla.identity.checkpoint_identity` of the directory.
        embedding: where the input-embedding table is stored (safetensors file, key, shape).
        placement: the resolved device placement (:mod:`nla_probe.nla.placement`).
    """

    tokenizer: Any
    contract: Contract
    path: Path
    prompt_ids: list[int]
    site: int
    embed_scale: float
    stop_ids: list[int]
    dtype: Any
    device: str
    identity: dict = field(default_factory=dict)
    embedding: EmbeddingTensor | None = None
    placement: Placement | None = None
    trust_remote_code: bool = False
    _model: Any = field(default=None, repr=False)
    _rows: dict = field(default_factory=dict, repr=False)

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = _load_av_model(self.path, self.contract, self.dtype,
                                         self.placement or resolve_placement(self.device), self.trust_remote_code)
        return self._model

    @property
    def model_loaded(self) -> bool:
        """Whether the transformers model has been built (never, on the vLLM path)."""
        return self._model is not None

    @property
    def logits_width(self) -> int:
        """Rows of the output embedding (the logits' width)."""
        if self._model is not None and self._model.get_output_embeddings() is not None:
            return int(self._model.get_output_embeddings().weight.shape[0])
        return self.embedding.logits_width if self.embedding is not None else len(self.tokenizer)

    def prompt_table(self, ids: list[int]) -> tuple[Any, list[int]]:
        """``(table, local_ids)`` with ``table[local_ids] == E[ids]`` in the AV dtype (see
        :func:`nla_probe.nla.embeddings.prompt_table`; the model is not built for it)."""
        return prompt_table(self._model, self.embedding, self.dtype, ids, self._rows)

    def verbalizer(self, backend: str = "hf", **backend_kwargs: Any):
        from nla_probe.nla.verbalizer import Verbalizer

        return Verbalizer(self, backend=backend, **backend_kwargs)


def _load_av_model(p: Path, contract: Contract, torch_dtype: Any, placement: Placement,
                   trust_remote_code: bool) -> Any:
    """The transformers causal LM of an AV directory, placed as ``placement`` says."""
    from transformers import AutoModelForCausalLM

    try:
        with _quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(str(p), dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                                         **placement.from_pretrained_kwargs())
    except (OSError, ValueError, RuntimeError) as e:
        raise _load_failed(p, e) from None
    if not placement.sharded:
        model.to(placement.device)
    model.eval()
    check_finite_parameters(model, p)
    width = model.get_input_embeddings().weight.shape[1]
    if width != contract.d_model:
        raise ContractError(p / "model.safetensors", "embed_tokens.weight", f"width d_model={contract.d_model}", width)
    return model


def load_av(path: str | Path, *, dtype: Any = None, device: str = "cpu", trust_remote_code: bool = False,
            backend: str = "hf", device_map: Any = None, max_memory: Any = None,
            offload_folder: str | Path | None = None) -> AV:
    """Load and validate an AV checkpoint directory (see module doc).

    ``backend="vllm"``: the transformers model is not built (``AV.model`` builds it on first
    access); the prompt embeddings come from the embedding rows in the safetensors file.
    ``device`` / ``device_map`` / ``max_memory`` / ``offload_folder``: see :mod:`nla_probe.nla.placement`.
    """
    from transformers import AutoModelForCausalLM, GenerationConfig

    from nla_probe.errors import UnknownNameError
    from nla_probe.nla.backends import BACKENDS

    if backend not in BACKENDS:
        raise UnknownNameError("backend", backend, BACKENDS)
    p, contract, config = _validated_config(path, "av", trust_remote_code)
    placement = checked_placement(device, device_map, max_memory, offload_folder, AutoModelForCausalLM, config, p,
                                  trust_remote_code, check_device)
    tok = _load_tokenizer(p, trust_remote_code)
    ids = validate_tokenizer(contract, tok, p)
    site = find_injection_site(ids, contract)
    torch_dtype = resolve_dtype(dtype, placement.dtype_device)
    emb = find_embedding_tensor(p, verify_weight_files(p), contract.d_model,
                                bool(getattr(text_config(config), "tie_word_embeddings", False)
                                     or getattr(config, "tie_word_embeddings", False)))
    model = None if backend == "vllm" else _load_av_model(p, contract, torch_dtype, placement, trust_remote_code)
    try:
        gen = GenerationConfig.from_pretrained(str(p))
    except OSError:
        gen = None
    return AV(tokenizer=tok, contract=contract, path=p, prompt_ids=ids, site=site,
              embed_scale=embed_scale(config), stop_ids=stop_token_ids(tok, gen), dtype=torch_dtype,
              device=placement.device, identity=checkpoint_identity(p), embedding=emb, placement=placement,
              trust_remote_code=trust_remote_code, _model=model)


def _load_value_head(p: Path, d: int) -> Any:
    import torch
    from safetensors.torch import load_file

    vh = p / VALUE_HEAD_NAME
    if not vh.is_file():
        raise ContractError(vh, "<file>", "value_head.safetensors with key 'weight'", "no such file")
    safetensors_header(vh)
    tensors = load_file(str(vh))
    if set(tensors) != {"weight"}:
        raise ContractError(vh, "<keys>", "exactly one tensor named 'weight'", sorted(tensors))
    w = tensors["weight"]
    if tuple(w.shape) != (d, d):
        raise ContractError(vh, "weight", f"shape [{d}, {d}] (d_model from the sidecar)", list(w.shape))
    bad = int((~torch.isfinite(w)).sum())
    if bad:
        raise ContractError(vh, "weight", "finite values", f"{bad} NaN/inf of {w.numel()} entries",
                            "the value head is corrupt; every reconstruction would be NaN")
    return w


def _load_failed(p: Path, e: Exception) -> ContractError:
    first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return ContractError(p, "<weights>", "weights transformers can load for this config", f"{type(e).__name__}: {first}")


def _check_ar_tokenizer(contract: Contract, tok: Any, p: Path) -> None:
    if tok.bos_token_id is not None:
        first = tok("x", add_special_tokens=True)["input_ids"][:1]
        if first != [tok.bos_token_id]:
            raise ContractError(p / "tokenizer_config.json", "bos_token", f"BOS {tok.bos_token_id} prepended", first)
    suffix = contract.critic_suffix_ids
    if suffix:
        ids = tok(contract.ar_prompt_text("x"), add_special_tokens=False)["input_ids"]
        if list(ids[-len(suffix):]) != list(suffix):
            raise ContractError(p / SIDECAR_NAME, "tokens.critic_suffix_ids", list(suffix), ids[-len(suffix):],
                                "the AR template's tail tokenizes differently (template or tokenizer drift)")


def load_ar(path: str | Path, *, dtype: Any = None, device: str = "cpu",
            trust_remote_code: bool = False, max_tokens: int | None = None, device_map: Any = None,
            max_memory: Any = None, offload_folder: str | Path | None = None):
    """Load and validate an AR checkpoint directory; returns a :class:`~nla_probe.nla.reconstructor.Reconstructor`.

    ``device`` / ``device_map`` / ``max_memory`` / ``offload_folder``: see :mod:`nla_probe.nla.placement`
    (the value head goes to the execution device of the last kept block).
    """
    import torch
    from transformers import AutoModel

    from nla_probe.nla.arch import text_model
    from nla_probe.nla.reconstructor import ARModel, Reconstructor

    p, contract, config = _validated_config(path, "ar", trust_remote_code)
    placement = checked_placement(device, device_map, max_memory, offload_folder, AutoModel, text_config(config), p,
                                  trust_remote_code, check_device)
    tok = _load_tokenizer(p, trust_remote_code)
    validate_tokenizer(contract, tok, p)
    _check_ar_tokenizer(contract, tok, p)
    torch_dtype = resolve_dtype(dtype, placement.dtype_device)
    verify_weight_files(p)
    head_w = _load_value_head(p, contract.d_model)
    try:
        with _quiet_loading():  # the final norm is absent by design (replaced by Identity)
            backbone = AutoModel.from_pretrained(str(p), config=text_config(config), dtype=torch_dtype,
                                                 trust_remote_code=trust_remote_code,
                                                 **placement.from_pretrained_kwargs())
    except (OSError, ValueError, RuntimeError) as e:
        raise _load_failed(p, e) from None
    head = torch.nn.Linear(contract.d_model, contract.d_model, bias=False, dtype=torch_dtype)
    head.load_state_dict({"weight": head_w.to(torch_dtype)}, strict=True)
    if placement.sharded:
        head.to(execution_device(text_model(backbone).layers[-1]))
        model = ARModel(backbone, head).eval()
    else:
        model = ARModel(backbone, head).to(placement.device).eval()
    check_finite_parameters(backbone, p)
    return Reconstructor(model, tok, contract, path=p, max_tokens=max_tokens, identity=checkpoint_identity(p))


@dataclass
class NLAPair:
    """An AV and an AR that belong together (same d_model, layer and marker)."""

    av: AV
    ar: Any

    def verbalizer(self, backend: str = "hf", **backend_kwargs: Any):
        return self.av.verbalizer(backend=backend, **backend_kwargs)

    def reconstructor(self):
        return self.ar

    @property
    def contract(self) -> Contract:
        return self.av.contract

    def identity(self) -> dict:
        return {"av": self.av.identity, "ar": self.ar.identity}


def load_pair(av_dir: str | Path, ar_dir: str | Path, *, dtype: Any = None, device: str = "cpu",
              trust_remote_code: bool = False, backend: str = "hf", max_memory: Any = None,
              offload_folder: str | Path | None = None) -> NLAPair:
    """Load an AV and an AR and check that their contracts agree on d_model, layer and marker.

    ``backend="vllm"`` skips the transformers AV (see :func:`load_av`).  ``device="auto"`` shards
    each side with accelerate; ``max_memory`` caps each device for each side separately (the AV and
    the AR are loaded one after the other, so the second sees what the first left free).
    """
    av = load_av(av_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code, backend=backend,
                 max_memory=max_memory, offload_folder=offload_folder)
    ar = load_ar(ar_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code, max_memory=max_memory,
                 offload_folder=offload_folder)
    for f in ("d_model", "layer", "injection_char", "injection_token_id"):
        a, b = getattr(av.contract, f), getattr(ar.contract, f)
        if a != b:
            raise ContractError(Path(ar_dir) / SIDECAR_NAME, f, f"{a!r} (as in the AV sidecar)", b,
                                "the AV and AR do not belong to the same pair")
    return NLAPair(av, ar)


def _embedding_shape(headers: dict[str, dict]) -> tuple[str, list[int]] | None:
    """(key, shape) of the input embedding table, from the safetensors headers of the weight files."""
    from nla_probe.nla.arch import EMBED_KEY_SUFFIXES

    keys = [(k, h[k]) for h in headers.values() for k in h if k != "__metadata__" and k.endswith(EMBED_KEY_SUFFIXES)]
    if len(keys) != 1:
        return None
    return keys[0][0], list(keys[0][1].get("shape", []))


def inspect_checkpoint(path: str | Path, *, trust_remote_code: bool = False) -> dict:
    """Validate a checkpoint directory WITHOUT loading its weights; returns its contract as a dict.

    Runs every check of :func:`load_av` / :func:`load_ar` that does not need the weights in memory
    (the embedding width and the value head are read from safetensors headers / the small head file).
    """
    from dataclasses import asdict

    p = Path(path)
    if not p.is_dir():
        raise ContractError(p, "<directory>", "an existing checkpoint directory", "no such directory")
    p, contract, config = _validated_config(p, None, trust_remote_code)
    n_layers = getattr(text_config(config), "num_hidden_layers", None)
    tok = _load_tokenizer(p, trust_remote_code)
    ids = validate_tokenizer(contract, tok, p)
    if contract.role == "ar":
        _check_ar_tokenizer(contract, tok, p)
        _load_value_head(p, contract.d_model)
    headers = verify_weight_files(p)
    emb = _embedding_shape(headers)
    if emb is not None and (len(emb[1]) != 2 or emb[1][1] != contract.d_model):
        raise ContractError(p, emb[0], f"shape [vocab, d_model={contract.d_model}]", emb[1])
    info = asdict(contract)
    info.update(path=str(p), model_type=getattr(text_config(config), "model_type", ""), num_hidden_layers=n_layers,
                embed_scale=embed_scale(config), prompt_tokens=len(ids), marker_position=ids.index(contract.injection_token_id),
                bos_token=tok.bos_token, embedding=list(emb[1]) if emb else None,
                fingerprint=checkpoint_identity(p)["fingerprint"], weight_files=sorted(headers),
                canonical_prompt=tok.decode(ids), warnings=template_drift(contract))
    return info
