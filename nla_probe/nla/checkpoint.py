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

Every failure raises :class:`~nla_probe.errors.ContractError` naming the file, field, expected and
found values.  ``trust_remote_code`` stays off unless asked.

Dtype: ``dtype=None`` means bfloat16 on CUDA (the reference default) and float32 on CPU (bf16
matmuls are slow on CPUs); a checkpoint stored in fp32 is never loaded as fp32 on a GPU unless you
pass ``dtype="float32"``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nla_probe.errors import ContractError, InputError
from nla_probe.nla.arch import embed_scale, stop_token_ids, text_config
from nla_probe.nla.contract import SIDECAR_NAME, Contract, read_sidecar
from nla_probe.nla.identity import checkpoint_identity
from nla_probe.nla.injection import av_prompt_ids, find_injection_site

VALUE_HEAD_NAME = "value_head.safetensors"


def resolve_dtype(dtype: Any, device: str) -> Any:
    import torch

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
    config = AutoConfig.from_pretrained(str(p), trust_remote_code=trust_remote_code)
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
        model: the causal LM (eval mode).
        tokenizer: its tokenizer.
        contract: the validated sidecar.
        path: checkpoint directory.
        prompt_ids: canonical AV prompt ids; ``site`` is the marker position in it.
        embed_scale: multiplier of looked-up embedding rows (√d for Gemma, 1 otherwise).
        stop_ids: token ids that end a decode (generation_config eos + chat end-of-turn tokens).
        identity: :func:`~nla_probe.nla.identity.checkpoint_identity` of the directory.
    """

    model: Any
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

    def verbalizer(self, backend: str = "hf", **backend_kwargs: Any):
        from nla_probe.nla.verbalizer import Verbalizer

        return Verbalizer(self, backend=backend, **backend_kwargs)


def load_av(path: str | Path, *, dtype: Any = None, device: str = "cpu",
            trust_remote_code: bool = False) -> AV:
    """Load and validate an AV checkpoint directory (see module doc)."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    p, contract, config = _validated_config(path, "av", trust_remote_code)
    tok = _load_tokenizer(p, trust_remote_code)
    ids = validate_tokenizer(contract, tok, p)
    site = find_injection_site(ids, contract)
    torch_dtype = resolve_dtype(dtype, device)
    with _quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(str(p), dtype=torch_dtype, trust_remote_code=trust_remote_code)
    model.to(device).eval()
    width = model.get_input_embeddings().weight.shape[1]
    if width != contract.d_model:
        raise ContractError(p / "model.safetensors", "embed_tokens.weight", f"width d_model={contract.d_model}", width)
    try:
        gen = GenerationConfig.from_pretrained(str(p))
    except OSError:
        gen = None
    return AV(model=model, tokenizer=tok, contract=contract, path=p, prompt_ids=ids, site=site,
              embed_scale=embed_scale(config), stop_ids=stop_token_ids(tok, gen), dtype=torch_dtype,
              device=device, identity=checkpoint_identity(p))


def _load_value_head(p: Path, d: int) -> Any:
    from safetensors.torch import load_file

    vh = p / VALUE_HEAD_NAME
    if not vh.is_file():
        raise ContractError(vh, "<file>", "value_head.safetensors with key 'weight'", "no such file")
    tensors = load_file(str(vh))
    if set(tensors) != {"weight"}:
        raise ContractError(vh, "<keys>", "exactly one tensor named 'weight'", sorted(tensors))
    w = tensors["weight"]
    if tuple(w.shape) != (d, d):
        raise ContractError(vh, "weight", f"shape [{d}, {d}] (d_model from the sidecar)", list(w.shape))
    return w


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
            trust_remote_code: bool = False, max_tokens: int | None = None):
    """Load and validate an AR checkpoint directory; returns a :class:`~nla_probe.nla.reconstructor.Reconstructor`."""
    import torch
    from transformers import AutoModel

    from nla_probe.nla.reconstructor import ARModel, Reconstructor

    p, contract, config = _validated_config(path, "ar", trust_remote_code)
    tok = _load_tokenizer(p, trust_remote_code)
    validate_tokenizer(contract, tok, p)
    _check_ar_tokenizer(contract, tok, p)
    head_w = _load_value_head(p, contract.d_model)
    torch_dtype = resolve_dtype(dtype, device)
    with _quiet_loading():  # the final norm is absent by design (replaced by Identity)
        backbone = AutoModel.from_pretrained(str(p), config=text_config(config), dtype=torch_dtype,
                                             trust_remote_code=trust_remote_code)
    head = torch.nn.Linear(contract.d_model, contract.d_model, bias=False, dtype=torch_dtype)
    head.load_state_dict({"weight": head_w.to(torch_dtype)}, strict=True)
    model = ARModel(backbone, head).to(device).eval()
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
              trust_remote_code: bool = False) -> NLAPair:
    """Load an AV and an AR and check that their contracts agree on d_model, layer and marker."""
    av = load_av(av_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    ar = load_ar(ar_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    for f in ("d_model", "layer", "injection_char", "injection_token_id"):
        a, b = getattr(av.contract, f), getattr(ar.contract, f)
        if a != b:
            raise ContractError(Path(ar_dir) / SIDECAR_NAME, f, f"{a!r} (as in the AV sidecar)", b,
                                "the AV and AR do not belong to the same pair")
    return NLAPair(av, ar)


def _embedding_shape(p: Path) -> tuple[str, list[int]] | None:
    """(key, shape) of the input embedding table, read from safetensors headers only."""
    import json

    from safetensors import safe_open

    from nla_probe.nla.arch import EMBED_KEY_SUFFIXES

    index = p / "model.safetensors.index.json"
    files: dict[str, str] = {}
    if index.is_file():
        files = json.loads(index.read_text())["weight_map"]
    elif (p / "model.safetensors").is_file():
        with safe_open(str(p / "model.safetensors"), "pt") as f:
            files = {k: "model.safetensors" for k in f.keys()}
    keys = [k for k in files if k.endswith(EMBED_KEY_SUFFIXES)]
    if len(keys) != 1:
        return None
    with safe_open(str(p / files[keys[0]]), "pt") as f:
        return keys[0], list(f.get_slice(keys[0]).get_shape())


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
    emb = _embedding_shape(p)
    if emb is not None and emb[1][1] != contract.d_model:
        raise ContractError(p, emb[0], f"width d_model={contract.d_model}", emb[1][1])
    info = asdict(contract)
    info.update(path=str(p), model_type=getattr(text_config(config), "model_type", ""), num_hidden_layers=n_layers,
                embed_scale=embed_scale(config), prompt_tokens=len(ids), marker_position=ids.index(contract.injection_token_id),
                bos_token=tok.bos_token, embedding=list(emb[1]) if emb else None,
                fingerprint=checkpoint_identity(p)["fingerprint"])
    return info
