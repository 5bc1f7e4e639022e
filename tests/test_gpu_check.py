"""The GPU check (scripts/gpu_check.sh, nla_probe.bench.gpu_check) exercised on the CPU.

On the CPU its configurations are float32 (a self-check against the float32 reference: it must
agree exactly) and bfloat16; without CUDA the default run stops with status 2 and says why.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nla_probe.bench.gpu_check import NO_CUDA_STATUS, Row, Sizes, format_table, main, run, split_maps
from nla_probe.defaults import toy_pair_present

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not toy_pair_present(), reason="needs the embedded toy pair")
def test_cpu_quick_run_prints_the_table(capsys):
    rows = run("cpu", quick=True)
    out = capsys.readouterr().out
    assert [r.name for r in rows] == ["hf cpu fp32", "hf cpu bf16", "hf cpu+disk split fp32"]
    assert not any(r.error for r in rows)
    fp32, bf16, split = rows
    for r in (fp32, split):  # the reference's setting, on one device and split over CPU and disk
        assert r.agreement == 1.0 and r.max_dmse == 0.0 and r.mean_dmse == 0.0
    assert 0.0 <= bf16.agreement <= 1.0 and 0.0 <= bf16.mean_dmse <= bf16.max_dmse < 0.1
    for r in rows:
        assert sorted(r.tok_s) == [1, 4, 8] and all(v > 0 for v in r.tok_s.values())
        assert sorted(r.rows_s) == [1, 4, 8] and r.fast_rows_s > 0 and r.peak.startswith("RSS ")
    header = out.splitlines()[-4]
    assert header.split() == ["config", "greedy=", "max|Δmse|", "mean|Δmse|", "tok/s@1", "tok/s@4", "tok/s@8",
                              "rows/s@1", "rows/s@4", "rows/s@8", "fast@8", "peak"]
    assert out.splitlines()[-3].split()[:4] == ["hf", "cpu", "fp32", "100.0%"]


def test_split_maps_place_every_parameter_of_the_toy_pair():
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from nla_probe.defaults import toy_pair_dirs
    from nla_probe.nla.arch import text_config
    from nla_probe.nla.placement import check_device_map, meta_param_names

    av, ar = split_maps(4, 3, (0, 1))
    assert [av[f"model.layers.{i}"] for i in range(4)] == [0, 0, 1, 1] and av["lm_head"] == av["model.embed_tokens"] == 0
    assert [ar[f"layers.{i}"] for i in range(3)] == [0, 0, 1] and (ar["embed_tokens"], ar["norm"]) == (0, 1)
    if toy_pair_present():
        av_dir, ar_dir = toy_pair_dirs()
        av_cfg, ar_cfg = (text_config(AutoConfig.from_pretrained(str(d))) for d in (av_dir, ar_dir))
        av, ar = split_maps(av_cfg.num_hidden_layers, ar_cfg.num_hidden_layers, ("cpu", "disk"))
        check_device_map(av, meta_param_names(AutoModelForCausalLM, av_cfg), av_dir)  # raises if one is left out
        check_device_map(ar, meta_param_names(AutoModel, ar_cfg), ar_dir)


def test_table_formats_hand_made_rows():
    sz = Sizes(2, 4, (1, 32))
    rows = [Row("a", 0.5, 1.25e-3, 2e-4, {1: 10.0, 32: 1234.4}, {1: 3.0, 32: 96.0}, 120.0, "1.50 GiB"),
            Row("b", error="RuntimeError: out of memory")]
    lines = format_table(rows, sz).splitlines()
    assert lines[1].split() == ["a", "50.0%", "1.25e-03", "2.00e-04", "10", "1,234", "3", "96", "120", "1.50", "GiB"]
    assert lines[2].split()[:3] == ["b", "n/a%", "n/a"] and lines[3] == "b: FAILED: RuntimeError: out of memory"
    assert math.isnan(rows[1].agreement)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_without_cuda_the_check_stops_and_says_why(capsys):
    assert main([]) == NO_CUDA_STATUS
    err = capsys.readouterr().err
    assert "gpu_check: CUDA is not available: this torch build" in err and "--device cpu --quick" in err
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert proc.returncode == NO_CUDA_STATUS and "CUDA is not available" in proc.stderr
