"""The AV's embedding table read from safetensors (the vLLM path): which tensor, which rows, which errors."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from nla_probe.errors import ContractError
from nla_probe.nla.checkpoint import load_av
from nla_probe.nla.embeddings import EmbeddingTensor, find_embedding_tensor, read_embedding_rows

KEY = "model.embed_tokens.weight"


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst, load_file(str(dst / "model.safetensors"))


def _shard(dst, tensors, embed_key=KEY):
    """Rewrite ``dst`` as two shards and an index; the embedding (under ``embed_key``) in the second."""
    (dst / "model.safetensors").unlink()
    first = {k: v for k, v in tensors.items() if k != KEY}
    second = {embed_key: tensors[KEY]} if embed_key else {}
    names = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    save_file(first, str(dst / names[0]))
    save_file(second or {"model.unused": torch.zeros(1)}, str(dst / names[1]))
    wmap = {**{k: names[0] for k in first}, **({embed_key: names[1]} if embed_key else {"model.unused": names[1]})}
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))


def test_sharded_checkpoint_rows_come_from_the_shard_named_by_the_index(fixture_pairs, tmp_path):
    av_dir = fixture_pairs["gemma3"][0]
    dst, tensors = _copy(av_dir, tmp_path / "av")
    _shard(dst, tensors)
    av = load_av(dst, backend="vllm")
    assert av.embedding.file.name == "model-00002-of-00002.safetensors" and av.embedding.key == KEY
    assert not av.model_loaded
    table, local = av.prompt_table(av.prompt_ids)
    assert torch.equal(table[local], tensors[KEY][av.prompt_ids])  # the rows, nothing else
    assert table.shape[0] == len(set(av.prompt_ids)) < av.embedding.shape[0]
    ref = load_av(av_dir)  # unsharded, transformers model built: same prompt embeddings (Gemma's √d scale)
    v = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(av.verbalizer().prompt_embeds(v), ref.verbalizer().prompt_embeds(v))


def test_missing_embedding_tensor_is_named_with_the_index(fixture_pairs, tmp_path):
    dst, tensors = _copy(fixture_pairs["qwen2"][0], tmp_path / "av")
    _shard(dst, tensors, embed_key=None)
    with pytest.raises(ContractError, match=r"model\.safetensors\.index\.json: field '<embedding tensor>': expected "
                                            r"one of \['model\.embed_tokens\.weight', .*found 'none among \d+ tensors'"):
        load_av(dst, backend="vllm")


def test_wrong_embedding_width_is_named(fixture_pairs, tmp_path):
    dst, tensors = _copy(fixture_pairs["qwen2"][0], tmp_path / "av")
    tensors[KEY] = torch.zeros(tensors[KEY].shape[0], 65)
    save_file(tensors, str(dst / "model.safetensors"))
    vocab = tensors[KEY].shape[0]
    with pytest.raises(ContractError, match=rf"model\.safetensors: field 'model\.embed_tokens\.weight': expected shape "
                                            rf"\[vocab, d_model=64\] \(d_model from the sidecar\), found \[{vocab}, 65\]"):
        load_av(dst, backend="vllm")


def _headers(**shapes):
    return {"a.safetensors": {k: {"dtype": "BF16", "shape": s, "data_offsets": [0, 0]} for k, s in shapes.items()}}


def test_tensor_names_per_architecture(tmp_path):
    gemma_mm = _headers(**{"language_model.model.embed_tokens.weight": [262208, 8],
                           "vision_tower.vision_model.embeddings.patch_embedding.weight": [8, 3]})
    t = find_embedding_tensor(tmp_path, gemma_mm, 8)
    assert (t.key, t.shape, t.logits_width) == ("language_model.model.embed_tokens.weight", (262208, 8), 262208)
    untied = _headers(**{KEY: [128256, 8], "lm_head.weight": [128257, 8]})
    assert find_embedding_tensor(tmp_path, untied, 8).logits_width == 128257
    tied_only = _headers(**{"lm_head.weight": [100, 8], "model.norm.weight": [8]})
    assert find_embedding_tensor(tmp_path, tied_only, 8, tied=True).key == "lm_head.weight"
    with pytest.raises(ContractError, match="none among 2 tensors"):
        find_embedding_tensor(tmp_path, tied_only, 8, tied=False)
    two = _headers(**{"encoder.embed_tokens.weight": [10, 8], "decoder.embed_tokens.weight": [10, 8]})
    with pytest.raises(ContractError, match="several tensors look like embedding tables"):
        find_embedding_tensor(tmp_path, two, 8)


def test_rows_outside_the_vocabulary_are_refused(tmp_path):
    save_file({KEY: torch.arange(12.0).reshape(4, 3)}, str(tmp_path / "m.safetensors"))
    t = EmbeddingTensor(tmp_path / "m.safetensors", KEY, (4, 3), 4)
    assert read_embedding_rows(t, [3, 0, 3], torch.float32).tolist() == [[9, 10, 11], [0, 1, 2], [9, 10, 11]]
    with pytest.raises(ContractError, match=r"expected rows for token ids below vocab=4, found \[4\]"):
        read_embedding_rows(t, [1, 4], torch.float32)
