"""Leak audit: per-decode family counts, k/N usage tables and the paired substitution matrix."""

import pytest

from nla_probe.errors import InputError, UnknownNameError
from nla_probe.hooks import BanChars
from nla_probe.hooks.leak_audit import (
    FamilyUse,
    audit_conditions,
    audit_decodes,
    audit_text,
    banned_families,
    count_chars,
    leak_columns,
    substitution_matrix,
    usage_table,
)
from nla_probe.nla.generation import Decode


def _dec(row, text, hooks=()):
    return Decode(row=row, raw_text=f"<explanation>{text}</explanation>", explanation=text, tag_status="ok",
                  token_ids=(), n_tokens=0, finish_reason="stop", hooks=tuple(hooks))


def test_audit_text_counts_chars_and_spans():
    use = audit_text("He said \"no\" (twice), don't \u300cstop\u300d *now* 'ok'")
    assert use["double_quotes"] == FamilyUse(chars=2, spans=1)
    assert use["single_quotes"] == FamilyUse(chars=3, spans=1)  # the apostrophe counts as a char, not a span
    assert use["corner_brackets"] == FamilyUse(2, 1)
    assert use["parentheses"] == FamilyUse(2, 1)
    assert use["emphasis"] == FamilyUse(2, 1)
    assert use["guillemets"] == FamilyUse(0, 0) and use["square_brackets"] == FamilyUse(0, 0)
    assert list(audit_text("x", "quotes")) == ["double_quotes", "single_quotes"]
    with pytest.raises(UnknownNameError, match="valid delimiter familys"):
        audit_text("x", "quotez")


def test_count_chars_and_banned_families():
    assert count_chars(["a\"b\"", "c", "\u201cd\u201d'"], "\"\u201c\u201d") == [2, 0, 2]
    assert banned_families([BanChars(families="quotes").to_spec()]) == ("double_quotes", "single_quotes")
    # chars covering a whole family count as banning it; a partial cover does not
    assert banned_families([{"name": "ban_chars", "chars": "()\uff08\uff09[]"}]) == ("parentheses",)
    assert banned_families([{"name": "min_new_tokens", "n": 3}]) == ()


def test_usage_table_k_over_n():
    ban = BanChars(families="double_quotes").to_spec()
    conds = {
        "base": [_dec(0, 'a "b" c'), _dec(1, 'say "x" and "y"'), _dec(2, "plain"), _dec(3, "(aside)")],
        "no_dq": [_dec(0, "a 'b' c", [ban]), _dec(1, "say 'x' (y)", [ban]), _dec(2, "plain", [ban]),
                  _dec(3, "\u300cz\u300d", [ban])],
    }
    audit = audit_conditions(conds)
    assert audit.height == 2 * 4 * 7
    t = {(r["condition"], r["family"]): r for r in usage_table(audit).iter_rows(named=True)}
    assert (t["base", "double_quotes"]["k"], t["base", "double_quotes"]["n"]) == (2, 4)
    assert t["base", "double_quotes"]["total"] == 3 and t["base", "double_quotes"]["label"] == "2/4"
    assert t["no_dq", "single_quotes"]["label"] == "2/4" and t["no_dq", "single_quotes"]["share"] == 0.5
    assert t["no_dq", "double_quotes"]["banned"] and not t["base", "double_quotes"]["banned"]
    chars = {(r["condition"], r["family"]): r["k"] for r in usage_table(audit, unit="chars").iter_rows(named=True)}
    assert chars["no_dq", "corner_brackets"] == 1
    with pytest.raises(InputError, match="unit"):
        usage_table(audit, unit="tokens")


def test_substitution_matrix_by_hand():
    ban = BanChars(families="double_quotes").to_spec()
    conds = {
        "base": ['a "b"', '"x" (y)', 'k "z"', "none", '"q"'],
        "ban": ["a 'b'", "'x' (y)", "k z", "'w'", '\u300cq\u300d *r*'],
    }
    audit = audit_conditions(conds)
    m = substitution_matrix(audit, "base", "ban", banned=["double_quotes"])
    got = {r["replacement"]: (r["k"], r["n"]) for r in m.iter_rows(named=True)}
    # rows using " in base: 0, 1, 2, 4 (n = 4); row 3 is not counted
    assert got["single_quotes"] == (2, 4)  # rows 0 and 1
    assert got["parentheses"] == (0, 4)  # row 1 already had parentheses
    assert got["corner_brackets"] == (1, 4) and got["emphasis"] == (1, 4)  # row 4 (two replacements)
    assert got["none"] == (1, 4)  # row 2 paraphrased
    assert got["double_quotes"] == (0, 4)  # no leak
    # the banned family comes from the decodes' hooks when not given
    decs = {"base": [_dec(i, t) for i, t in enumerate(conds["base"])],
            "ban": [_dec(i, t, [ban]) for i, t in enumerate(conds["ban"])]}
    m2 = substitution_matrix(audit_conditions(decs), "base", "ban")
    assert m2.to_dicts() == m.to_dicts()
    with pytest.raises(InputError, match="no banned family known"):
        substitution_matrix(audit, "base", "ban")
    with pytest.raises(InputError, match="same rows"):
        substitution_matrix(audit_conditions({"base": ['"a"', "b"], "ban": ["a"]}), "base", "ban",
                            banned=["double_quotes"])


def test_leak_is_visible_and_columns():
    audit = audit_decodes(['a "b"', "c"], condition="c1", field="explanation")
    m = substitution_matrix(audit_conditions({"b": ['"a"'], "c": ['"a" again']}), "b", "c", banned=["double_quotes"])
    assert {r["replacement"]: r["k"] for r in m.iter_rows(named=True)}["double_quotes"] == 1
    assert audit["condition"].unique().to_list() == ["c1"]
    cols = leak_columns(['a "b" "c"', "(x)"], families="all")
    assert cols["leak_double_quotes"] == [2, 0] and cols["leak_parentheses"] == [0, 1]
    assert leak_columns(["don't"], "single_quotes", unit="chars") == {"leak_single_quotes": [1]}
    with pytest.raises(InputError, match="field"):
        audit_decodes(["x"], field="text")
