"""Architecture adapters on configs and modules shaped like the released families."""

import math
from types import SimpleNamespace

import pytest
import torch

from nla_probe.nla.arch import embed_scale, final_norm_name, stop_token_ids, text_config, text_model


def test_nested_text_config_is_unwrapped():
    gemma_mm = SimpleNamespace(model_type="gemma3", text_config=SimpleNamespace(model_type="gemma3_text", hidden_size=3840))
    assert text_config(gemma_mm).hidden_size == 3840
    assert embed_scale(gemma_mm) == pytest.approx(math.sqrt(3840))
    assert embed_scale(SimpleNamespace(model_type="qwen2", hidden_size=3584)) == 1.0
    assert embed_scale(SimpleNamespace(model_type="llama", hidden_size=8192)) == 1.0


def test_language_model_wrapper_is_unwrapped():
    decoder = torch.nn.Module()
    decoder.layers = torch.nn.ModuleList()
    decoder.embed_tokens = torch.nn.Embedding(3, 2)
    decoder.norm = torch.nn.Identity()
    inner = torch.nn.Module()
    inner.language_model = decoder
    outer = torch.nn.Module()
    outer.model = inner
    assert text_model(outer) is decoder
    assert final_norm_name(decoder) == "norm"
    with pytest.raises(ValueError, match="decoder stack"):
        text_model(torch.nn.Linear(2, 2))


def test_stop_ids_take_generation_config_and_end_of_turn():
    class Tok:
        eos_token_id = 1

        def get_vocab(self):
            return {"<eos>": 1, "<end_of_turn>": 106, "hello": 7}

    ids = stop_token_ids(Tok(), SimpleNamespace(eos_token_id=[1, 106]))
    assert ids == [1, 106]
    assert stop_token_ids(Tok(), None) == [1, 106]  # <end_of_turn> found in the vocabulary
