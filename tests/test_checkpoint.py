import json
import shutil
import warnings

import pytest
import yaml

from nla_probe import load_ar, load_av, load_pair
from nla_probe.errors import ContractError, TemplateDriftWarning
from nla_probe.nla.checkpoint import inspect_checkpoint


def _copy(src, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def _edit_sidecar(d, fn):
    p = d / "nla_meta.yaml"
    raw = yaml.safe_load(p.read_text())
    fn(raw)
    p.write_text(yaml.dump(raw, sort_keys=False))


@pytest.mark.parametrize("arch", ["qwen2", "gemma3"])
def test_fixture_pairs_load_and_inspect(fixture_pairs, arch):
    av_dir, ar_dir = fixture_pairs[arch]
    pair = load_pair(av_dir, ar_dir)
    c = pair.contract
    assert pair.av.prompt_ids[pair.av.site] == c.injection_token_id
    assert pair.av.prompt_ids[pair.av.site - 1] == c.left_neighbor_id
    assert pair.av.embed_scale == (8.0 if arch == "gemma3" else 1.0)  # sqrt(64) for Gemma
    for d in (av_dir, ar_dir):
        info = inspect_checkpoint(d)
        assert info["d_model"] == 64 and info["layer"] == 2
    assert inspect_checkpoint(ar_dir)["num_hidden_layers"] == 3


def test_gemma_stop_ids_include_end_of_turn(gemma_pair):
    tok = gemma_pair.av.tokenizer
    assert tok.convert_tokens_to_ids("<end_of_turn>") in gemma_pair.av.stop_ids
    assert tok.convert_tokens_to_ids("<eos>") in gemma_pair.av.stop_ids


@pytest.mark.parametrize("role", ["av", "ar"])
@pytest.mark.parametrize("mutation, field", [
    (lambda r: r["tokens"].update(injection_token_id=r["tokens"]["injection_token_id"] + 1), "tokens.injection_token_id"),
    (lambda r: r["tokens"].update(injection_left_neighbor_id=0), "tokens.injection_left_neighbor_id/right_neighbor_id"),
    (lambda r: r.update(d_model=128), "d_model"),
])
def test_broken_sidecars_refused(fixture_pairs, tmp_path, role, mutation, field):
    src = fixture_pairs["qwen2"][0 if role == "av" else 1]
    d = _copy(src, tmp_path, role)
    _edit_sidecar(d, mutation)
    for fn in ((load_av if role == "av" else load_ar), inspect_checkpoint):
        with pytest.raises(ContractError) as e:
            fn(d)
        assert e.value.field == field
        assert "expected" in str(e.value) and "found" in str(e.value)


def test_wrong_layer_count_refused(fixture_pairs, tmp_path):
    d = _copy(fixture_pairs["qwen2"][1], tmp_path, "ar")
    _edit_sidecar(d, lambda r: (r.update(extraction_layer_index=1), r["critic"].update(extraction_layer_index=1)))
    with pytest.raises(ContractError, match="num_hidden_layers.*K\\+1 = 2.*found 3"):
        load_ar(d)


def test_value_head_checks(fixture_pairs, tmp_path):
    import torch
    from safetensors.torch import save_file

    d = _copy(fixture_pairs["qwen2"][1], tmp_path, "ar")
    save_file({"w": torch.zeros(64, 64)}, str(d / "value_head.safetensors"))
    with pytest.raises(ContractError, match="exactly one tensor named 'weight'"):
        load_ar(d)
    save_file({"weight": torch.zeros(64, 32)}, str(d / "value_head.safetensors"))
    with pytest.raises(ContractError, match=r"shape \[64, 64\]"):
        load_ar(d)
    (d / "value_head.safetensors").unlink()
    with pytest.raises(ContractError, match="value_head.safetensors"):
        inspect_checkpoint(d)


def test_role_and_pair_mismatch(fixture_pairs, tmp_path):
    av_dir, ar_dir = fixture_pairs["qwen2"]
    with pytest.raises(ContractError, match="role"):
        load_av(ar_dir)
    with pytest.raises(ContractError, match="role"):
        load_ar(av_dir)
    with pytest.raises(ContractError, match="no such directory"):
        load_av(tmp_path / "nowhere")
    # an AR from the other fixture family (different marker id) does not pair with this AV
    with pytest.raises(ContractError, match="same pair"):
        load_pair(av_dir, fixture_pairs["gemma3"][1])


def test_template_drift_fails_loudly(fixture_pairs, tmp_path):
    d = _copy(fixture_pairs["qwen2"][0], tmp_path, "av")
    _edit_sidecar(d, lambda r: r["prompt_templates"].update(
        av=r["prompt_templates"]["av"].replace("<concept>{injection_char}</concept>", "{injection_char}")))
    with pytest.raises(ContractError, match="neighbor"), \
            pytest.warns(TemplateDriftWarning, match="field 'prompt_templates.av' differs from the released AV template "
                                                     "at character 453"):
        load_av(d)


def test_wording_drift_loads_with_a_warning_naming_the_field(fixture_pairs, tmp_path):
    """A changed AV wording or AR head keeps the marker's neighbours: it loads, but not silently."""
    av = _copy(fixture_pairs["qwen2"][0], tmp_path, "av")
    _edit_sidecar(av, lambda r: r["prompt_templates"].update(av=r["prompt_templates"]["av"].replace("meticulous", "keen")))
    with pytest.warns(TemplateDriftWarning, match="'prompt_templates.av' .* at character 10: released 'meticulous"):
        assert load_av(av).contract.av_template.startswith("You are a keen AI researcher")
    ar = _copy(fixture_pairs["qwen2"][1], tmp_path, "ar")
    _edit_sidecar(ar, lambda r: r["prompt_templates"].update(ar="Summarise: <text>{explanation}</text> <summary>"))
    with pytest.warns(TemplateDriftWarning, match="'prompt_templates.ar' .* at character 6: released 'y of"):
        info = inspect_checkpoint(ar)
    assert len(info["warnings"]) == 1 and "prompt_templates.ar" in info["warnings"][0]
    assert "You are a meticulous AI researcher" in info["canonical_prompt"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the released templates load without any warning
        assert inspect_checkpoint(fixture_pairs["qwen2"][0])["warnings"] == []


def test_config_hidden_size_mismatch(fixture_pairs, tmp_path):
    d = _copy(fixture_pairs["qwen2"][0], tmp_path, "av")
    cfg = json.loads((d / "config.json").read_text())
    cfg["hidden_size"] = 32
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ContractError, match="hidden_size"):
        inspect_checkpoint(d)


def test_dtype_policy(fixture_pairs):
    import torch

    from nla_probe.nla.checkpoint import resolve_dtype

    assert resolve_dtype(None, "cuda:0") == torch.bfloat16
    assert resolve_dtype(None, "cpu") == torch.float32
    av = load_av(fixture_pairs["qwen2"][0], dtype="bfloat16")
    assert av.model.dtype == torch.bfloat16
