"""Ablation specs: TOML round trips, validation errors that name the key and list valid choices."""

import math

import pytest
import tomllib
from hypothesis import given, settings
from hypothesis import strategies as st

from nla_probe.ablate.spec import SCHEMA_VERSION, Spec, list_specs, load_spec
from nla_probe.ablate.toml_writer import dumps_toml
from nla_probe.errors import SpecError

MINIMAL = {
    "experiment": {"name": "t", "kind": "redaction"},
    "conditions": [{"name": "unedited"}, {"name": "spans", "transforms": [{"name": "spans_only"}]}],
}


def spec_dict(**changes):
    d = {k: (dict(v) if isinstance(v, dict) else list(v)) for k, v in MINIMAL.items()}
    d.update(changes)
    return d


# ------------------------------------------------------------------------------------ TOML writer

_scalars = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20),
                     st.floats(allow_nan=False))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                       max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=10), _values, max_size=6))
def test_dumps_toml_round_trips_through_tomllib(data):
    assert tomllib.loads(dumps_toml(data)) == data


def test_dumps_toml_layout_and_escapes():
    text = dumps_toml({"a": 1, "t": {"x": 'q"\\\n\x7f', "y": [1.5, -math.inf]},
                       "rows": [{"name": "one"}, {"name": "two", "h": [{"k": 1}]}]})
    assert text.index("a = 1") < text.index("[t]") < text.index("[[rows]]")
    assert text.count("[[rows]]") == 2
    assert '"q\\"\\\\\\n\\u007F"' in text
    assert tomllib.loads(text)["t"]["y"] == [1.5, -math.inf]
    with pytest.raises(SpecError, match="None"):
        dumps_toml({"a": None})


# ------------------------------------------------------------------------------------ round trips

def test_shipped_specs_validate_and_round_trip():
    paths = list_specs()
    names = {p.stem for p in paths}
    assert {"quote_ban", "quote_surgery"} <= names
    for p in paths:
        spec = load_spec(p)
        assert Spec.from_toml(spec.to_toml()) == spec
        assert Spec.from_dict(spec.to_dict()) == spec
        assert spec.to_dict()["schema_version"] == SCHEMA_VERSION


def test_defaults_are_filled_and_hash_changes_with_content():
    spec = Spec.from_dict(spec_dict())
    assert spec.baseline == "unedited"  # first condition by default
    assert spec.n is None and spec.seed == 0
    assert spec.sampling.max_new_tokens == 200 and spec.sampling.do_sample is False
    assert spec.metrics.denominator == "auto" and spec.metrics.n_boot == 2000
    assert spec.params == {"families": ["quotes"]}
    # transform specs are normalized (version + defaults), so equal specs compare equal
    assert spec.conditions[1].transforms[0]["name"] == "spans_only"
    assert spec.conditions[1].transforms[0]["version"] == 1
    other = Spec.from_dict(spec_dict(seed=1))
    assert spec.content_hash() == Spec.from_dict(spec_dict()).content_hash() != other.content_hash()


def test_sampling_for_merges_overrides_and_seed():
    spec = Spec.from_dict({
        "seed": 7, "sampling": {"max_new_tokens": 30},
        "experiment": {"name": "r", "kind": "roundtrip"},
        "conditions": [{"name": "a"}, {"name": "b", "sampling": {"do_sample": True, "temperature": 2},
                                       "seed": 3}],
    })
    a, b = spec.conditions
    assert spec.sampling_for(a) == {"max_new_tokens": 30, "do_sample": False, "temperature": 1.0, "top_p": 1.0,
                                    "seed": 7}
    assert spec.sampling_for(b) == {"max_new_tokens": 30, "do_sample": True, "temperature": 2.0, "top_p": 1.0,
                                    "seed": 3}
    assert b.sampling == {"do_sample": True, "temperature": 2.0}  # only the overrides are kept
    assert Spec.from_toml(spec.to_toml()) == spec


def test_hook_specs_are_validated_and_normalized():
    spec = Spec.from_dict({"experiment": {"name": "r", "kind": "roundtrip"},
                           "conditions": [{"name": "a"},
                                          {"name": "b", "hooks": [{"name": "ban_chars", "families": "quotes"}]}]})
    hook = spec.conditions[1].hooks[0]
    assert hook["name"] == "ban_chars" and hook["families"] == ["quotes"] and hook["bias"] == -1e9
    assert Spec.from_toml(spec.to_toml()) == spec


# ------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("changes, pattern", [
    ({"colour": 1}, r"unknown top-level key\(s\) \['colour'\]; valid keys: .*conditions"),
    ({"experiment": {"name": "t", "kind": "redaction", "owner": "me"}},
     r"experiment: unknown key\(s\) \['owner'\]; valid keys: \['description', 'kind', 'name'\]"),
    ({"experiment": {"name": "t", "kind": "quotes"}}, r"experiment.kind: unknown experiment kind 'quotes'; "
                                                      r"valid experiment kinds: .*redaction, .*roundtrip"),
    ({"experiment": {"kind": "redaction"}}, r"experiment.name: required key missing"),
    ({"experiment": {"name": "a b", "kind": "redaction"}}, r"experiment.name: expected a name"),
    ({"n": "ten"}, r"n: expected integer or absent, found str 'ten'"),
    ({"n": 0}, r"n: expected an integer >= 1, found 0"),
    ({"seed": True}, r"seed: expected integer, found boolean True"),
    ({"sampling": {"max_new_tokens": 10, "temprature": 1.0}}, r"sampling: unknown key\(s\) \['temprature'\]"),
    ({"sampling": {"top_p": 1.5}}, r"sampling.top_p: expected a number in \(0, 1\], found 1.5"),
    ({"metrics": {"level": 95}}, r"metrics.level: expected a number in \(0, 1\), found 95.0"),
    ({"metrics": {"primary": "bleu"}}, r"metrics.primary: expected one of \['fve_nrm', 'cos', 'mse_nrm'\]"),
    ({"metrics": {"denominator": -1}}, r"metrics.denominator: expected 'auto'"),
    ({"metrics": {"denominator": "qwen-7b"}}, r"metrics.denominator: expected 'auto', a positive number or a "
                                              r"registered name \(.*qwen2.5-7b-L20.*\), found 'qwen-7b'"),
    ({"params": {"families": ["quotes"], "extra": 1}}, r"params: unknown key\(s\) \['extra'\]; valid keys: "
                                                        r"\['families'\]"),
    ({"params": {"families": ["quotez"]}}, r"params.families: unknown delimiter family 'quotez'"),
    ({"baseline": "nope"}, r"baseline: 'nope' is not a condition; conditions: \['unedited', 'spans'\]"),
    ({"conditions": []}, r"conditions: expected a non-empty array"),
    ({"conditions": [{"name": "a"}, {"name": "a"}]}, r"duplicate condition name 'a'"),
    ({"conditions": [{"description": "x"}]}, r"conditions\[0\].name: required key missing"),
    ({"conditions": [{"name": "a", "transform": []}]}, r"conditions\[0\] \('a'\): unknown key\(s\) \['transform'\]; "
                                                        r"valid keys: \['description', 'name', 'transforms'\]"),
    ({"conditions": [{"name": "a", "hooks": [{"name": "ban_chars", "families": ["quotes"]}]}]},
     r"key\(s\) \['hooks'\] are not used by kind 'redaction'"),
    ({"conditions": [{"name": "a"}, {"name": "b", "transforms": [{"name": "spans_olny"}]}]},
     r"conditions\[1\] \('b'\).transforms\[0\]: unknown transform 'spans_olny'; valid transforms: .*spans_only"),
    ({"conditions": [{"name": "a"}, {"name": "b", "transforms": [{"name": "spans_only", "sepp": " "}]}]},
     r"transform 'spans_only': unknown key\(s\) \['sepp'\]; valid keys: \['families', 'sep'\]"),
    ({"conditions": [{"name": "a"}, {"name": "b", "transforms": {"name": "spans_only"}}]},
     r"transforms: expected an array of transform tables"),
    ({"conditions": [{"name": "a", "transforms": [{"name": "prose_only"}]}]},
     r"baseline: condition 'a' must be unedited for kind 'redaction'"),
    ({"schema_version": 99}, r"schema_version: expected an integer in \[1, 1\]"),
])
def test_invalid_specs_raise_with_key_and_choices(changes, pattern):
    with pytest.raises(SpecError, match=pattern):
        Spec.from_dict(spec_dict(**changes))


def test_unknown_hook_lists_valid_hooks():
    d = {"experiment": {"name": "r", "kind": "roundtrip"},
         "conditions": [{"name": "a", "hooks": [{"name": "ban_quotes"}]}]}
    with pytest.raises(SpecError, match=r"hooks\[0\]: unknown hook 'ban_quotes'; valid hooks: .*ban_chars"):
        Spec.from_dict(d)


def test_specs_never_execute_code():
    # a "callable" transform resolves only labels registered in-process; anything else is refused
    d = spec_dict(conditions=[{"name": "a"}, {"name": "b", "transforms": [{"name": "callable",
                                                                           "label": "os.system"}]}])
    with pytest.raises(SpecError, match="unknown callable 'os.system'"):
        Spec.from_dict(d)


def test_toml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[experiment]\nname = 't'\nkind = \n")
    with pytest.raises(SpecError, match=rf"{bad}: invalid TOML"):
        load_spec(bad)
    bad.write_text(Spec.from_dict(spec_dict()).to_toml().replace("n_boot = 2000", "n_boot = 'many'"))
    with pytest.raises(SpecError, match=rf"{bad}: metrics.n_boot: expected integer, found str 'many'"):
        load_spec(bad)
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "missing.toml")


def test_load_spec_by_name_and_unknown_name():
    assert load_spec("quote_surgery").kind == "redaction"
    with pytest.raises(SpecError, match=r"'quote_surgeon': not a spec file .* valid names: .*quote_surgery"):
        load_spec("quote_surgeon")


def test_save_writes_loadable_toml(tmp_path):
    spec = Spec.from_dict(spec_dict(n=5, seed=2))
    path = spec.save(tmp_path / "sub" / "s.toml")
    assert load_spec(path) == spec
    assert tomllib.loads(path.read_text())["n"] == 5
