"""Memory plan: parameter counts, KV cache and fit decisions for the four released pairs.

The base-model shapes below are the published ``config.json`` facts of the released pairs' base
models (Qwen/Qwen2.5-7B-Instruct, google/gemma-3-12b-it, google/gemma-3-27b-it,
meta-llama/Llama-3.3-70B-Instruct).  Expected sizes are computed by hand in the comments.
"""

import json
import math
import subprocess
import sys

import pytest

from nla_probe.errors import ContractError, InputError
from nla_probe.nla import plan as P
from nla_probe.nla import preflight

GiB = 2 ** 30

QWEN25_7B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
             "intermediate_size": 18944, "num_attention_heads": 28, "num_hidden_layers": 28,
             "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
# Text-only form (Gemma3ForCausalLM) with every field spelled out.
GEMMA3_12B = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 3840,
              "intermediate_size": 15360, "num_attention_heads": 16, "num_hidden_layers": 48,
              "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 262208, "tie_word_embeddings": True,
              "sliding_window": 1024, "torch_dtype": "bfloat16"}
GEMMA3_27B = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 5376,
              "intermediate_size": 21504, "num_attention_heads": 32, "num_hidden_layers": 62,
              "num_key_value_heads": 16, "head_dim": 128, "vocab_size": 262208, "tie_word_embeddings": True,
              "query_pre_attn_scalar": 168, "sliding_window": 1024, "torch_dtype": "bfloat16"}
LLAMA33_70B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
               "intermediate_size": 28672, "num_attention_heads": 64, "num_hidden_layers": 80,
               "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
               "torch_dtype": "bfloat16"}
# The multimodal wrapper as google/gemma-3-12b-it publishes it: text_config omits vocab_size, head_dim
# and the tie flag (transformers' Gemma3TextConfig defaults: 262208, 256, tied).
GEMMA3_12B_MM = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
                 "mm_tokens_per_image": 256,
                 "text_config": {"hidden_size": 3840, "intermediate_size": 15360, "model_type": "gemma3_text",
                                 "num_attention_heads": 16, "num_hidden_layers": 48, "num_key_value_heads": 8,
                                 "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
                 "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                                   "model_type": "siglip_vision_model", "num_attention_heads": 16,
                                   "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": False}}

# name: (config, K, AV params, AR params, KV bytes per token in bf16)
RELEASED = {
    # embed 152064*3584 = 544,997,376, untied -> x2 = 1,089,994,752
    # block: q 3584*3584+3584 = 12,848,640; k,v 3584*512+512 = 1,835,520 each; o 3584*3584 = 12,845,056
    #        mlp 3*3584*18944 = 203,685,888; norms 2*3584 = 7,168 -> 233,057,792
    # AV = 1,089,994,752 + 28*233,057,792 (6,525,618,176) + final norm 3,584 = 7,615,616,512
    # AR = 544,997,376 + 21*233,057,792 (4,894,213,632) + value head 3584^2 (12,845,056) = 5,452,056,064
    # KV = 2 * 28 layers * 4 heads * 128 * 2 bytes = 57,344
    "qwen2.5-7b": (QWEN25_7B, 20, 7_615_616_512, 5_452_056_064, 57_344),
    # embed 262208*3840 = 1,006,878,720 (tied)
    # block: q 3840*4096 = 15,728,640; k,v 3840*2048 = 7,864,320 each; o 15,728,640; mlp 3*3840*15360 =
    #        176,947,200; norms 4*3840 + q/k norms 2*256 = 15,872 -> 224,148,992
    # AV = 1,006,878,720 + 48*224,148,992 (10,759,151,616) + 3,840 = 11,766,034,176
    # AR = 1,006,878,720 + 33*224,148,992 (7,396,916,736) + 3840^2 (14,745,600) = 8,418,541,056
    # KV = 2 * 48 * 8 * 256 * 2 = 393,216
    "gemma3-12b": (GEMMA3_12B, 32, 11_766_034_176, 8_418_541_056, 393_216),
    # embed 262208*5376 = 1,409,630,208 (tied)
    # block: q 5376*4096 = 22,020,096; k,v 5376*2048 = 11,010,048 each; o 22,020,096; mlp 3*5376*21504 =
    #        346,816,512; norms 4*5376 + 2*128 = 21,760 -> 412,898,560
    # AV = 1,409,630,208 + 62*412,898,560 (25,599,710,720) + 5,376 = 27,009,346,304  (x4 bytes = 108.0 GB,
    #      the size quoted for the fp32 Gemma-27B AV)
    # AR = 1,409,630,208 + 42*412,898,560 (17,341,739,520) + 5376^2 (28,901,376) = 18,780,271,104
    # KV = 2 * 62 * 16 * 128 * 2 = 507,904
    "gemma3-27b": (GEMMA3_27B, 41, 27_009_346_304, 18_780_271_104, 507_904),
    # embed 128256*8192 = 1,050,673,152, untied -> x2 = 2,101,346,304
    # block: q 8192^2 = 67,108,864; k,v 8192*1024 = 8,388,608 each; o 67,108,864; mlp 3*8192*28672 =
    #        704,643,072; norms 2*8192 = 16,384 -> 855,654,400
    # AV = 2,101,346,304 + 80*855,654,400 (68,452,352,000) + 8,192 = 70,553,706,496 (bf16: 141.1 GB)
    # AR = 1,050,673,152 + 54*855,654,400 (46,205,337,600) + 8192^2 (67,108,864) = 47,323,119,616 (94.6 GB)
    # KV = 2 * 80 * 8 * 128 * 2 = 327,680
    "llama3.3-70b": (LLAMA33_70B, 53, 70_553_706_496, 47_323_119_616, 327_680),
}


def _write_pair(root, cfg, k, nested_av=None):
    from nla_probe.nla.contract import Contract, write_sidecar

    d = cfg.get("hidden_size") or cfg["text_config"]["hidden_size"]
    dirs = []
    for role in ("av", "ar"):
        out = root / role
        out.mkdir(parents=True)
        c = dict(nested_av or cfg) if role == "av" else dict(cfg, num_hidden_layers=k + 1)
        (out / "config.json").write_text(json.dumps(c))
        write_sidecar(out, Contract(role=role, d_model=d, layer=k, injection_scale=30.0 if role == "av" else None,
                                    mse_scale=math.sqrt(d), injection_char="\u320e", injection_token_id=149705,
                                    left_neighbor_id=29, right_neighbor_id=522,
                                    critic_suffix_ids=(1318, 29, 366, 1708, 29) if role == "ar" else None))
        dirs.append(out)
    return dirs


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("released_configs")
    return {name: _write_pair(root / name, cfg, k) for name, (cfg, k, *_) in RELEASED.items()}


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_sizes_match_hand_computation(released, name):
    _, k, av_params, ar_params, kv_per_token = RELEASED[name]
    plan = P.plan_pair(*released[name], P.Workload(batch_size=32, max_new_tokens=200, prompt_tokens=192))
    assert plan.layer == k and plan.ar.layers == k + 1
    assert plan.av_mem.params == av_params and plan.ar_mem.params == ar_params
    assert plan.av_mem.weights == 2 * av_params and plan.ar_mem.weights == 2 * ar_params  # bf16
    assert P.kv_bytes_per_token(plan.av, 2) == kv_per_token
    assert plan.av_mem.kv_cache == kv_per_token * 32 * (192 + 200)
    assert plan.ar_mem.kv_cache == 0


def test_qwen_is_7_62e9_and_llama_pair_is_about_235_gb():
    q = P.shape_from_config(QWEN25_7B)
    assert round(P.av_params(q) / 1e9, 2) == 7.62
    ll = P.shape_from_config(LLAMA33_70B)
    ar = P.shape_from_config(dict(LLAMA33_70B, num_hidden_layers=54))
    assert round(2 * P.av_params(ll) / 1e9) == 141 and round(2 * P.ar_params(ar) / 1e9) == 95


def test_nested_gemma_config_counts_text_and_vision():
    s = P.shape_from_config(GEMMA3_12B_MM)
    assert (s.model_type, s.vocab, s.head_dim, s.tied, s.layers) == ("gemma3_text", 262208, 256, True, 48)
    # SigLIP layer: q,k,v,o 4*(1152^2+1152) = 5,313,024; 2 LayerNorms 4*1152 = 4,608;
    # fc1 1152*4304+4304 = 4,962,512; fc2 4304*1152+1152 = 4,959,360 -> 15,239,504; x27 = 411,466,608
    # patch conv 3*14*14*1152+1152 = 678,528; positions (896/14)^2*1152 = 4,718,592; post LN 2,304
    # projector 1152*3840 + norm 1152 = 4,424,832  -> vision total 421,290,864
    assert s.vision_params == 421_290_864
    assert P.av_params(s) == 11_766_034_176 + 421_290_864


@pytest.mark.parametrize("case", ["qwen2", "llama", "gemma3_text", "gemma3"])
def test_formulas_equal_instantiated_model_parameter_counts(case):
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    text = dict(model_type=case if case != "gemma3" else "gemma3_text", hidden_size=64, intermediate_size=96,
                num_attention_heads=4, num_hidden_layers=3, num_key_value_heads=2, vocab_size=300,
                tie_word_embeddings=case.startswith("gemma"))
    if case.startswith("gemma"):
        text["head_dim"] = 24
    cfg = text
    if case == "gemma3":
        cfg = {"model_type": "gemma3", "text_config": text, "mm_tokens_per_image": 4,
               "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 48,
                                 "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 56,
                                 "patch_size": 14, "vision_use_head": False}}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
    assert sum(p.numel() for p in model.parameters()) == P.av_params(P.shape_from_config(cfg))
    if case != "gemma3":  # the AR: base model (no LM head) minus its final norm, plus the d x d value head
        base = AutoModel.from_config(AutoConfig.for_model(**text))
        n = sum(p.numel() for p in base.parameters()) - 64 + 64 * 64
        assert n == P.ar_params(P.shape_from_config(text))


def test_vllm_need_for_qwen_by_hand(released):
    plan = P.plan_pair(*released["qwen2.5-7b"])
    need, per_seq, act = P.vllm_need(plan.av, plan.av_mem, plan.workload, 1, 512)
    # activations: 8192 tokens * (2*3584 + (28+2*4)*128 + 3*18944) * 2 bytes = 8192*68,608*2 = 1,124,073,472
    #              + sampler logits 256 * 152064 * 4 = 155,713,536  -> 1,279,787,008
    assert act == 1_279_787_008
    assert per_seq == 2 * 28 * 4 * 128 * 2 * 512 == 29_360_128
    assert need == 15_231_233_024 + 1_279_787_008 + 29_360_128 + int(1.5 * GiB) == 18_150_992_896


def test_fit_decisions_for_the_released_pairs(released):
    llama = P.plan_pair(*released["llama3.3-70b"])
    one = llama.options(1, 80)
    assert not any(o.fits for o in one)
    assert "227.0 GiB > 72.0 GiB usable on one GPU" in next(o for o in one if o.name == "hf, one GPU").reason
    assert P.best(llama.options(2, 80)) is None
    assert P.best(llama.options(2, 80, stage="av")).name == "vllm tp=2"        # 65.7 GiB weights per GPU
    assert P.best(llama.options(2, 80, stage="ar")).name == 'hf, device="auto"'  # 90.1 GiB over two GPUs
    eight = P.best(llama.options(8, 80))
    assert (eight.name, eight.args[3]) == ("vllm tp=4", "auto")
    qwen = P.best(P.plan_pair(*released["qwen2.5-7b"]).options(1, 80))
    # AR (11.3 GiB) and one batch of prompt embeddings (32*192*3584*2 B = 0.04 GiB) beside vLLM on one GPU:
    # vLLM's share = floor((72.0 - 11.34) GiB / 80 GiB, 2 places) = 0.75
    assert qwen.name == "vllm tp=1" and "gpu_memory_utilization=0.75" in qwen.args
    assert "AR + AV prompt embeddings 11.3 GiB beside vLLM rank 0 on cuda:0" in qwen.reason
    g27 = P.plan_pair(*released["gemma3-27b"])
    assert P.best(g27.options(1, 80)) is None and P.best(g27.options(2, 80)).args[3] == "cuda:1"


def test_requested_option_reports_why(released):
    qwen = P.plan_pair(*released["qwen2.5-7b"])
    bad = preflight.requested_option(qwen, "pair", gpus=1, gpu_mem=80 * GiB, backend="vllm", device="cuda")
    assert not bad.fits and "gpu_memory_utilization=0.9" in bad.reason and "left next to vLLM" in bad.reason
    ok = preflight.requested_option(qwen, "pair", gpus=1, gpu_mem=80 * GiB, backend="vllm", device="cuda",
                                    vllm_utilization=0.75)
    assert ok.fits
    tp = preflight.requested_option(qwen, "av", gpus=8, gpu_mem=80 * GiB, backend="vllm", device="cuda",
                                    tensor_parallel=8)
    assert not tp.fits and "does not divide the 28 attention heads" in tp.reason


def test_check_refuses_before_loading(released, monkeypatch):
    monkeypatch.setattr(preflight, "_gpu_inventory", lambda: (1, 80 * GiB))
    with pytest.raises(InputError, match=r"will not fit on 1 x 80.0 GiB GPU\(s\).*227.0 GiB > 72.0 GiB"):
        preflight.check_before_loading(*released["llama3.3-70b"], device="cuda")
    assert preflight.check_before_loading(*released["qwen2.5-7b"], device="cuda").fits
    monkeypatch.setattr(preflight, "_gpu_inventory", lambda: None)  # CPU-only torch: the loader reports it
    assert preflight.check_before_loading(*released["llama3.3-70b"], device="cuda") is None
    monkeypatch.setattr(preflight, "_available_ram", lambda: 16 * GiB)
    with pytest.raises(InputError, match=r"the AV on the CPU will not fit: needs ~.* of RAM in float32, 16.0 GiB"):
        preflight.check_before_loading(released["qwen2.5-7b"][0], None, device="cpu")
    with pytest.raises(InputError, match=r"the AV on the CPU will not fit"):  # a device map without GPUs: the CPU
        preflight.check_before_loading(released["qwen2.5-7b"][0], None, device="auto")


def test_device_map_may_spill_to_cpu_ram(released, monkeypatch):
    monkeypatch.setattr(preflight, "_gpu_inventory", lambda: (1, 80 * GiB))
    monkeypatch.setattr(preflight, "_available_ram", lambda: 16 * GiB)
    # 227.0 GiB for the pair - 72.0 GiB on the GPU = 155.0 GiB for the CPU
    with pytest.raises(InputError, match=r"and the 155.0 GiB beyond the GPUs exceed the 16.0 GiB of RAM available"):
        preflight.check_before_loading(*released["llama3.3-70b"], device="auto")
    monkeypatch.setattr(preflight, "_available_ram", lambda: 400 * GiB)
    from nla_probe.errors import NLAProbeWarning

    with pytest.warns(NLAProbeWarning, match=r"about 155.0 GiB will be placed in CPU RAM"):
        assert preflight.check_before_loading(*released["llama3.3-70b"], device="auto").fits


def test_bad_input_is_one_clear_line(released, tmp_path):
    plan = P.plan_pair(*released["qwen2.5-7b"])
    with pytest.raises(InputError, match=r"--gpus: expected a positive number of GPUs, found 0"):
        plan.options(0, 80)
    import shutil

    av = tmp_path / "av"
    shutil.copytree(released["qwen2.5-7b"][0], av)
    (av / "config.json").unlink()
    with pytest.raises(ContractError, match=r"av/config.json: field '<file>': expected the model's config.json"):
        P.plan_pair(av, released["qwen2.5-7b"][1])
    for args, needle in ((["--gpus", "0"], "--gpus: expected a positive number of GPUs, found 0"),
                         ([], "config.json: field '<file>'")):
        a = released["qwen2.5-7b"][0] if args else av
        out = subprocess.run([sys.executable, "-m", "nla_probe", "plan", "--av", str(a), "--ar",
                              str(released["qwen2.5-7b"][1]), *args], capture_output=True, text=True)
        assert out.returncode == 2 and needle in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def _run(*args):
    from typer.testing import CliRunner

    from nla_probe.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_plan_command_prints_the_table_and_the_way_out(released):
    r = _run("plan", "--av", released["llama3.3-70b"][0], "--ar", released["llama3.3-70b"][1],
             "--gpus", 2, "--gpu-mem", 80)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert any(line.split()[:4] == ["AV", "70.55B", "131.4", "GiB"] for line in lines)
    assert any(line.split()[:4] == ["AR", "47.32B", "88.1", "GiB"] for line in lines)
    assert "the pair does not fit on 2 GPU(s) together" in r.output
    assert "verbalize: vllm tp=2: --backend vllm --device cuda:0 --backend-opt tensor_parallel_size=2" in r.output
    assert 'reconstruct: hf, device="auto": --device auto\n' in r.output


@pytest.fixture
def no_weights_loaded(monkeypatch):
    """A machine with one 80 GiB GPU; loading any weights fails the test."""
    from nla_probe.nla import checkpoint

    def refuse(*a, **k):
        raise AssertionError("weights were loaded before the memory check")

    monkeypatch.setattr(preflight, "_gpu_inventory", lambda: (1, 80 * GiB))
    monkeypatch.setattr(checkpoint, "check_device", lambda d: str(d), raising=False)  # no CUDA here
    monkeypatch.setattr(checkpoint, "load_av", refuse)
    monkeypatch.setattr(checkpoint, "load_ar", refuse)
    monkeypatch.setattr(checkpoint, "load_pair", refuse)


def test_verbalize_refuses_before_loading(released, tmp_path, no_weights_loaded):
    import numpy as np
    import polars as pl

    data = tmp_path / "acts.parquet"
    pl.DataFrame({"doc_id": ["d0"]}).with_columns(
        pl.Series("activation_vector", np.ones((1, 8192), np.float32), dtype=pl.Array(pl.Float32, 8192))
    ).write_parquet(data)
    with pytest.raises(InputError, match=r"the AV with backend hf on cuda will not fit on 1 x 80.0 GiB GPU\(s\): "
                                         r"AV 131.4 GiB weights"):
        _run("verbalize", "--av", released["llama3.3-70b"][0], "--data", data, "--out", tmp_path / "d.parquet",
             "--device", "cuda")
    # vLLM asked to leave no room for the prompt embeddings beside it: 80 GiB * (1 - 0.99) - 1 GiB context = -0.2 GiB
    with pytest.raises(InputError, match=r"the AV prompt embeddings \([0-9.]+ MiB on cuda beside vLLM's share\) do not "
                                         r"fit in the -0.2 GiB left next to vLLM's gpu_memory_utilization=0.99"):
        _run("verbalize", "--av", released["qwen2.5-7b"][0], "--data", data, "--out", tmp_path / "d.parquet",
             "--device", "cuda", "--backend", "vllm", "--backend-opt", "gpu_memory_utilization=0.99")


def test_ablate_refuses_before_loading(released, no_weights_loaded):
    from nla_probe.ablate.engine import ablate

    with pytest.raises(InputError, match=r"the AV and AR with backend vllm on cuda will not fit "
                                         r".*tensor_parallel_size=2 "
                                         r"but 1 GPU\(s\) are visible"):
        ablate("quote_ban", released["gemma3-27b"], data=None, device="cuda", backend="vllm",
               backend_options={"tensor_parallel_size": 2})


def test_small_sizes_keep_their_digits():
    """A toy component must not print as 0.00B parameters or 0.0 GiB."""
    from nla_probe.nla.plan import count_text, gib_text

    assert [count_text(n) for n in (7_615_616_512, 1_510_000, 12_345, 999)] == ["7.62B", "1.51M", "12.35K", "999"]
    assert gib_text(3 * 2 ** 20) == "3.0 MiB" and gib_text(0) == "0.0 GiB" and gib_text(2.5 * 2 ** 30) == "2.5 GiB"
    assert gib_text(0.1 * 2 ** 30) == "0.1 GiB"
