import math

import pytest
import yaml

from nla_probe.errors import ContractError
from nla_probe.nla.contract import AR_TEMPLATE, AV_TEMPLATE, parse_sidecar, read_sidecar, sidecar_dict, write_sidecar

QWEN_AV = {
    "kind": "nla_model", "schema_version": 2, "role": "av", "stage": "rl",
    "base_checkpoint": "Qwen/Qwen2.5-7B-Instruct", "d_model": 3584,
    "extraction": {"injection_scale": 150.0, "mse_scale": 59.866518188383236},
    "tokens": {"injection_char": "\u320e", "injection_token_id": 149705, "injection_left_neighbor_id": 29,
               "injection_right_neighbor_id": 522, "critic_suffix_ids": None},
    "prompt_templates": {"av": AV_TEMPLATE, "ar": AR_TEMPLATE},
    "extraction_layer_index": 20,
}


def _dump(tmp_path, d, name="nla_meta.yaml"):
    p = tmp_path / name
    p.write_text(yaml.dump(d, sort_keys=False))
    return p


def test_released_layout_roundtrip(tmp_path):
    c = parse_sidecar(QWEN_AV)
    assert (c.role, c.d_model, c.layer, c.injection_scale) == ("av", 3584, 20, 150.0)
    write_sidecar(tmp_path, c)
    text = (tmp_path / "nla_meta.yaml").read_text()
    assert '"\\u320E"' in text  # escaped unicode, as the release scrub writes it
    c2 = read_sidecar(tmp_path)
    assert c2.injection_char == "\u320e" and c2.av_template == AV_TEMPLATE and c2.layer == 20


@pytest.mark.parametrize("variant", ["top", "critic_eli", "critic_nhl_v1", "ar_nhl"])
def test_layer_index_in_any_place(variant):
    d = {k: v for k, v in QWEN_AV.items() if k != "extraction_layer_index"}
    d = {**d, "role": "ar", "extraction": {"injection_scale": None, "mse_scale": "sqrt_d_model"},
         "tokens": {**QWEN_AV["tokens"], "critic_suffix_ids": [1318, 29, 366, 1708, 29]}}
    if variant == "top":
        d["extraction_layer_index"] = 20
    elif variant == "critic_eli":
        d["critic"] = {"extraction_layer_index": 20}
    elif variant == "critic_nhl_v1":
        d["schema_version"] = 1
        d["critic"] = {"num_hidden_layers": 20}
    else:
        d["ar"] = {"num_hidden_layers": 20}
    c = parse_sidecar(d)
    assert c.layer == 20 and c.role == "ar"
    assert c.mse_scale == pytest.approx(math.sqrt(3584))
    assert c.critic_suffix_ids == (1318, 29, 366, 1708, 29)


def test_prerelease_roles_and_template_keys():
    d = {**QWEN_AV, "role": "actor", "prompt_templates": {"actor": AV_TEMPLATE, "critic": AR_TEMPLATE}}
    c = parse_sidecar(d)
    assert c.role == "av" and c.ar_template == AR_TEMPLATE
    assert parse_sidecar({**d, "role": "critic"}).role == "ar"


def test_literal_and_escaped_unicode_yaml(tmp_path):
    escaped = yaml.dump(QWEN_AV, sort_keys=False)
    literal = yaml.dump(QWEN_AV, sort_keys=False, allow_unicode=True)
    assert "\u320e" in literal and "\u320e" not in escaped
    for i, text in enumerate((escaped, literal)):
        p = tmp_path / f"s{i}.yaml"
        p.write_text(text, encoding="utf-8")
        assert read_sidecar(p).injection_char == "\u320e"


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.update(kind="nla_dataset"), "kind"),
    (lambda d: d.update(role="judge"), "role"),
    (lambda d: d.update(d_model="big"), "d_model"),
    (lambda d: d.pop("extraction_layer_index"), "extraction_layer_index"),
    (lambda d: d["tokens"].update(injection_char="ab"), "tokens.injection_char"),
    (lambda d: d["tokens"].pop("injection_token_id"), "tokens.injection_token_id"),
    (lambda d: d["extraction"].update(injection_scale=None), "extraction.injection_scale"),
    (lambda d: d["extraction"].update(mse_scale=None), "extraction.mse_scale"),
    (lambda d: d["prompt_templates"].update(av="no placeholder"), "prompt_templates.av"),
])
def test_malformed_sidecars_name_file_and_field(tmp_path, mutate, field):
    import copy

    d = copy.deepcopy(QWEN_AV)
    mutate(d)
    p = _dump(tmp_path, d)
    with pytest.raises(ContractError) as e:
        read_sidecar(p)
    assert e.value.field == field
    assert str(p) in str(e.value) and "expected" in str(e.value)


def test_unparseable_and_missing(tmp_path):
    p = tmp_path / "nla_meta.yaml"
    p.write_text("kind: [unclosed")
    with pytest.raises(ContractError, match="valid YAML"):
        read_sidecar(p)
    with pytest.raises(ContractError, match="no such file"):
        read_sidecar(tmp_path / "missing")


def test_sidecar_dict_ar_fields():
    c = parse_sidecar(QWEN_AV).with_role("ar")
    d = sidecar_dict(c)
    assert d["extraction"]["injection_scale"] is None
    assert d["critic"] == {"extraction_layer_index": 20} and d["extraction_layer_index"] == 20
