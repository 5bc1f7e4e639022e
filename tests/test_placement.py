"""Placement of the AV and the AR across devices (accelerate device maps), tested on CPU and disk.

A device map that splits the decoder layers between the CPU and disk offload must give the same
outputs, bit for bit, as the model on one device: the decodes, the prompt embeddings (built from the
file's rows when the embedding module itself is offloaded) and the AR reconstructions.  Bad
placements are refused before anything loads, naming the module or value at fault.
"""

import numpy as np
import pytest
import torch

from nla_probe.defaults import toy_pair_dirs, toy_pair_present
from nla_probe.errors import InputError
from nla_probe.nla.checkpoint import load_ar, load_av, load_pair
from nla_probe.nla.placement import execution_device, resolve_placement

AV_MAP = {"model.embed_tokens": "disk", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "cpu",
          "model.layers.3": "disk", "model.norm": "cpu", "lm_head": "disk"}
AR_MAP = {"embed_tokens": "cpu", "layers.0": "disk", "layers.1": "cpu", "layers.2": "disk", "norm": "cpu"}
TEXTS = ["The committee met on Tuesday.",
         ("A hacker enjoys exploring the details of programmable systems, and the explanation quotes "
          "\"budget\"."), "x"]


@pytest.fixture(scope="module")
def pair_dirs(fixture_pairs):
    """The trained toy pair (decodes depend on the vector) when present, else the qwen2 fixture."""
    if toy_pair_present():
        return toy_pair_dirs()
    return fixture_pairs["qwen2"]


def _vectors(n, d):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(3)) * 5


def test_av_split_over_cpu_and_disk_decodes_like_one_device(pair_dirs, tmp_path):
    av_dir, _ = pair_dirs
    one = load_av(av_dir)
    split = load_av(av_dir, device_map=AV_MAP, offload_folder=tmp_path / "offload")
    assert split.device == "map" and split.model.hf_device_map["model.layers.1"] == "disk"
    assert split.model.model.embed_tokens.weight.device.type == "meta"  # offloaded: rows come from the file
    v = _vectors(8, one.contract.d_model)
    a, b = one.verbalizer().prompt_embeds(v), split.verbalizer().prompt_embeds(v)
    assert torch.equal(a, b) and b.device == execution_device(split.model.model.embed_tokens)
    ref = one.verbalizer().verbalize(v, max_new_tokens=16, batch_size=8)
    got = split.verbalizer().verbalize(v, max_new_tokens=16, batch_size=8)
    assert [d.token_ids for d in got] == [d.token_ids for d in ref]
    if toy_pair_present():
        assert len({d.token_ids for d in ref}) >= 3, "decodes must depend on the vector for this to mean anything"


def test_ar_split_over_cpu_and_disk_reconstructs_like_one_device(pair_dirs, tmp_path):
    _, ar_dir = pair_dirs
    one = load_ar(ar_dir)
    split = load_ar(ar_dir, device_map=AR_MAP, offload_folder=tmp_path / "offload")
    assert split.model.backbone.hf_device_map["layers.2"] == "disk"
    assert split.model.value_head.weight.device == execution_device(split.model.backbone.layers[-1])
    for batching in ("exact", "fast"):
        assert np.array_equal(one.reconstruct(TEXTS, batching=batching), split.reconstruct(TEXTS, batching=batching))


def test_auto_with_max_memory_offloads_and_matches(pair_dirs, tmp_path):
    av_dir, ar_dir = pair_dirs
    one = load_ar(ar_dir)
    ref = one.reconstruct(TEXTS)
    cfg = one.model.backbone.config
    layer = sum(p.numel() for p in one.model.backbone.layers[0].parameters()) * 4
    budget = cfg.vocab_size * cfg.hidden_size * 4 + 2 * layer  # the fp32 embedding and about one block
    pair = load_pair(av_dir, ar_dir, device="auto", max_memory={"cpu": budget}, offload_folder=tmp_path / "off")
    placed = set(pair.ar.model.backbone.hf_device_map.values())
    assert placed == {"cpu", "disk"}, placed  # the RAM cap holds part of the AR: the rest goes to disk
    assert pair.av.device == "auto" and np.array_equal(pair.ar.reconstruct(TEXTS), ref)


def test_a_layer_left_out_of_the_map_is_named(pair_dirs, tmp_path):
    av_dir, ar_dir = pair_dirs
    gap = {k: v for k, v in AV_MAP.items() if k != "model.layers.2"}
    with pytest.raises(InputError, match=r"no entry for 'model\.layers\.2' \(\d+ parameter\(s\), e\.g\. model\.layers\.2\."):
        load_av(av_dir, device_map=gap, offload_folder=tmp_path)
    with pytest.raises(InputError, match=r"no entry for 'layers\.0'"):
        load_ar(ar_dir, device_map={k: v for k, v in AR_MAP.items() if k != "layers.0"}, offload_folder=tmp_path)
    with pytest.raises(InputError, match=r"expected module names of this model \(e\.g\. 'model\.layers\.0'\), "
                                         r"found 'model\.layer\.9'"):
        load_av(av_dir, device_map={**AV_MAP, "model.layer.9": "cpu"}, offload_folder=tmp_path)


def test_bad_devices_are_refused_before_loading(pair_dirs, tmp_path):
    av_dir, _ = pair_dirs
    with pytest.raises(InputError, match=r"device_map\['model\.layers\.2'\]: expected 'cpu', 'disk'.*found 'meta'"):
        load_av(av_dir, device_map={**AV_MAP, "model.layers.2": "meta"}, offload_folder=tmp_path)
    with pytest.raises(InputError, match=r"offload_folder: expected a directory .*\['model\.embed_tokens'"):
        load_av(av_dir, device_map=AV_MAP)
    with pytest.raises(InputError, match=r"max_memory: only used with device='auto' or a device_map"):
        load_av(av_dir, max_memory={"cpu": "1GB"})
    with pytest.raises(InputError, match=r"pass one of them"):
        load_av(av_dir, device="cuda:0", device_map=AV_MAP)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only torch")
def test_gpu_requests_on_a_cpu_only_torch(pair_dirs):
    av_dir, ar_dir = pair_dirs
    with pytest.raises(InputError, match=r"device 'cuda': CUDA is not available"):
        load_av(av_dir, device="cuda")
    with pytest.raises(InputError, match=r"device_map\['model\.layers\.1'\]: GPU 1 requested but CUDA is not "
                                         r"available \(this torch build .* has no CUDA support\)"):
        load_av(av_dir, device_map={**AV_MAP, "model.layers.1": 1})
    with pytest.raises(InputError, match=r"max_memory\[0\]: GPU 0 requested but CUDA is not available"):
        resolve_placement("auto", max_memory={0: "70GiB", "cpu": "10GiB"})
    with pytest.raises(InputError, match=r"device_map\[''\]: GPU 'cuda:3' requested"):
        load_ar(ar_dir, device_map={"": "cuda:3"})
    assert resolve_placement("auto").gpu is False  # "auto" without a GPU: CPU, then disk


def test_extraction_from_a_split_base_model_and_the_auto_cli(fixture_pairs, tmp_path):
    import json

    import polars as pl
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from typer.testing import CliRunner

    from nla_probe.cli import app
    from nla_probe.nla.extraction import extract_activations
    from nla_probe.toy.fixtures import FIXTURE_TEXTS

    av_dir, ar_dir = fixture_pairs["qwen2"]
    tok = AutoTokenizer.from_pretrained(str(av_dir))
    docs, ids = list(FIXTURE_TEXTS[:4]), [f"d{i}" for i in range(4)]
    one = AutoModelForCausalLM.from_pretrained(str(av_dir)).eval()
    split = AutoModelForCausalLM.from_pretrained(str(av_dir), device_map=AV_MAP, offload_folder=str(tmp_path / "o"))
    a = extract_activations(one, tok, docs, ids, 2, n_per_doc=3, min_position=1)
    b = extract_activations(split.eval(), tok, docs, ids, 2, n_per_doc=3, min_position=1)
    assert a.height == 12 and a["activation_vector"].to_list() == b["activation_vector"].to_list()

    texts = tmp_path / "t.jsonl"
    texts.write_text("\n".join(json.dumps({"explanation": t}) for t in docs))
    outs = {}
    for device, batching in (("cpu", "exact"), ("auto", "exact"), ("auto", "fast")):
        out = tmp_path / f"{device}_{batching}.parquet"
        r = CliRunner().invoke(app, ["reconstruct", "--ar", str(ar_dir), "--texts", str(texts), "--out", str(out),
                                     "--device", device, "--batching", batching], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        outs[(device, batching)] = np.array(pl.read_parquet(out)["reconstruction"].to_list())
    assert np.array_equal(outs[("cpu", "exact")], outs[("auto", "exact")])  # auto without a GPU: the CPU
    np.testing.assert_allclose(outs[("auto", "fast")], outs[("cpu", "exact")], atol=1e-4)  # fp32: tiny noise
