"""Grammar and prefix hooks: built-in texts, checks before decoding, transformers decodes on the toy pair.

Every decode is checked against a hand-written Python ``re`` pattern or character scan written
here, not against the library that produced it.
"""

import re

import pytest
import torch

pytest.importorskip("xgrammar")

from nla_probe.defaults import toy_eval_path, toy_pair_dirs
from nla_probe.errors import InputError, SpecError, UnknownNameError
from nla_probe.hooks import (
    BanChars,
    Grammar,
    LengthPenalty,
    MinNewTokens,
    Prefix,
    hook_from_spec,
    list_hooks,
)
from nla_probe.hooks.grammar_check import shortest_text
from nla_probe.hooks.grammar_text import SCAFFOLDS, scaffold_opening
from nla_probe.nla.generation import Sampling

# ---------------------------------------------------------------- independent checkers
_Q = r'"[^"\n<]+"'
_S = "[ \n,.;:!?\u2013\u2014-]{1,4}"
SPANS_ONLY_RE = re.compile(rf"<explanation>\n?{_Q}(?:{_S}{_Q})*(?:{_S})?\n?</explanation>")
_RUN = rf"{_Q}(?:{_S}{_Q})*(?:{_S})?"
TOY_SCAFFOLD_RE = re.compile(rf'<explanation>\n?Token {_Q} after {_Q}\.\n\n{_RUN}\n\n{_RUN}\n?</explanation>')
# Every delimiter character of docs/hooks.md's table, written out by hand.
DELIMS = set('"\u201c\u201d\u201e\u201f\uff02\u301d\u301e\u301f\u2033'
             "'\u2018\u2019\u201a\u201b`\u2032\uff07\u00b4"
             "\u300c\u300d\u300e\u300f\uff62\uff63\u00ab\u00bb\u2039\u203a*_()\uff08\uff09[]\uff3b\uff3d")


def no_delimiters_ok(raw: str) -> bool:
    m = re.fullmatch(r"<explanation>\n?([^<]*?)\n?</explanation>", raw, re.DOTALL)
    return m is not None and not (set(m.group(1)) & DELIMS)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def av():
    from nla_probe.nla.checkpoint import load_av

    d = toy_pair_dirs()[0]
    if not (d / "nla_meta.yaml").is_file():
        pytest.skip("toy pair not present")
    return load_av(d)


@pytest.fixture(scope="module")
def verb(av):
    return av.verbalizer()


@pytest.fixture(scope="module")
def vecs(av):
    from nla_probe.nla.extraction import read_activations

    pool = torch.as_tensor(read_activations(toy_eval_path())[1])
    return pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(3))[:24]]


# ---------------------------------------------------------------- texts and static checks
def test_registered_and_spec_round_trip():
    assert {"grammar", "prefix"} <= set(list_hooks())
    g = Grammar(builtin="scaffold_spans", scaffold="toy")
    spec = g.to_spec()
    assert spec == {"version": 1, "name": "grammar", "builtin": "scaffold_spans", "regex": "", "ebnf": "",
                    "lark": "", "json_schema": "", "scope": "body", "scaffold": "toy"}
    assert hook_from_spec(spec) == g
    assert hook_from_spec({"name": "grammar", "regex": "[a-z]+"}) == Grammar(regex="[a-z]+")
    assert hook_from_spec({"name": "prefix", "scaffold": "toy"}).prefix_text() == '<explanation>\nToken "'


def test_shortest_text_hand_computed():
    # root -> "ab" | "c" x ; x -> [d-f]{2}: shortest "ab"; without 'a': "cdd"; without a, d, e, f: none.
    g = 'root ::= "ab" | "c" x\nx ::= [d-f]{2}'
    import xgrammar as xgr

    e = str(xgr.Grammar.from_ebnf(g))
    assert shortest_text(e) == "ab"
    assert shortest_text(e, {"a"}) == "cdd"
    assert shortest_text(e, {"a", "d"}) == "cee"
    assert shortest_text(e, set("adef")) is None
    assert shortest_text(str(xgr.Grammar.from_ebnf('root ::= "a" root'))) is None  # never ends
    assert Grammar(builtin="spans_only").shortest_text() == '<explanation>"a"</explanation>'


def test_scaffold_opening_and_texts():
    assert scaffold_opening("toy") == 'Token "'
    assert scaffold_opening("released") == ""
    assert scaffold_opening('Kind: {a|b} "…"') == "Kind: "
    assert SCAFFOLDS["released"].count('"\u2026"') == 4


def test_bad_inputs_are_refused_with_clear_messages(verb):
    with pytest.raises(InputError, match=r"grammar.regex: invalid regular expression: .*position 3: Unmatched '\)'"):
        Grammar(regex="ab)cd")  # positions count characters from 1
    with pytest.raises(InputError, match=r"invalid EBNF grammar: .*line 1, column \d+.*not defined"):
        Grammar(ebnf='root ::= "a" b')
    with pytest.raises(InputError, match=r"grammar.lark: invalid Lark grammar: Lark error at line 1, column 12: "
                                         r"unknown name 'b'"):
        Grammar(lark='start: "a" b')
    with pytest.raises(InputError, match=r"grammar.json_schema: invalid JSON schema: .*Unsupported type \"nope\""):
        Grammar(json_schema='{"type": "nope"}')
    js = Grammar(json_schema='{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}')
    assert js.shortest_text() == '<explanation>{"a":""}</explanation>'
    with pytest.raises(UnknownNameError, match="unknown built-in grammar 'span_only'; valid built-in grammars: "
                                               "no_delimiters, scaffold_spans, spans_only"):
        Grammar(builtin="span_only")
    with pytest.raises(InputError, match=r"exactly one of .* found \['builtin', 'regex'\]"):
        Grammar(builtin="spans_only", regex="a")
    with pytest.raises(InputError, match="registered scaffold .*released, toy.* found 'nope'"):
        Grammar(builtin="scaffold_spans", scaffold="nope")
    with pytest.raises(SpecError, match="unknown key"):
        hook_from_spec({"name": "grammar", "builtin": "spans_only", "grammar": "x"})
    s = Sampling(max_new_tokens=40)
    ctx = verb.hook_context(s)
    no_end = Grammar(ebnf='root ::= "a" root', scope="output")
    with pytest.raises(InputError, match="no text matches this grammar, so a decode could never end"):
        no_end.preflight([no_end], ctx)
    g, ban = Grammar(builtin="spans_only"), BanChars(families=("quotes",))
    with pytest.raises(InputError, match=r"grammar\(builtin='spans_only'\) with ban_chars\(families=\('quotes',\)\): "
                                         r"every text the grammar accepts needs a banned character .*'\"'"):
        g.preflight([g, ban], ctx)
    long = Grammar(regex="(the ){60}")
    with pytest.raises(InputError, match=r"shortest text takes \d+ tokens .* more than the length cap of 40"):
        long.preflight([long], ctx)
    p = Prefix(text="<explanation>")
    with pytest.raises(InputError, match="grammar with prefix"):
        g.preflight([g, p], ctx)
    # the checks run inside verbalize, before any decode
    with pytest.raises(InputError, match="needs a banned character"):
        verb.verbalize(torch.randn(2, 128), max_new_tokens=40, hooks=[g, ban])
    # compatible: no delimiters + ban of every delimiter family
    nd = Grammar(builtin="no_delimiters")
    nd.preflight([nd, BanChars(families=("all",))], ctx)


# ---------------------------------------------------------------- decodes (transformers)
def test_builtin_grammars_hold_on_every_decode(verb, vecs):
    base = verb.verbalize(vecs, max_new_tokens=96, batch_size=24)
    import regex  # partial matching: a decode cut by the cap must be the start of an accepted text

    cases = [(Grammar(builtin="spans_only"), lambda r: SPANS_ONLY_RE.fullmatch(r) is not None, SPANS_ONLY_RE),
             (Grammar(builtin="scaffold_spans", scaffold="toy"), lambda r: TOY_SCAFFOLD_RE.fullmatch(r) is not None,
              TOY_SCAFFOLD_RE),
             (Grammar(builtin="no_delimiters"), no_delimiters_ok, None)]
    for g, ok, pattern in cases:
        dec = verb.verbalize(vecs, max_new_tokens=96, hooks=[g], batch_size=24)
        done = [d for d in dec if d.finish_reason == "stop"]
        assert len(done) >= 20, (g, [d.raw_text for d in dec if d.finish_reason != "stop"][:3])
        bad = [d.raw_text for d in done if not ok(d.raw_text)]
        assert not bad, (g.describe(), bad[:3])
        cut = [d.raw_text for d in dec if d.finish_reason == "length"]
        if pattern is not None:
            assert all(regex.fullmatch(pattern.pattern, r, partial=True) for r in cut), cut[:2]
            assert regex.fullmatch(pattern.pattern, "<explanation>\nno quotes", partial=True) is None
        assert all(d.tag_status == "ok" and d.hooks == (g.to_spec(),) for d in done)
        assert sum(a.token_ids == b.token_ids for a, b in zip(dec, base)) < len(vecs)
    assert not any(SPANS_ONLY_RE.fullmatch(d.raw_text) for d in base)  # the toy never writes spans only


def test_per_row_state_is_independent_of_batching(verb, vecs):
    g = Grammar(builtin="spans_only")
    whole = verb.verbalize(vecs, max_new_tokens=48, hooks=[g], batch_size=24)
    chunked = verb.verbalize(vecs, max_new_tokens=48, hooks=[g], batch_size=5)
    assert [d.token_ids for d in whole] == [d.token_ids for d in chunked]
    alone = verb.verbalize(vecs[7:8], max_new_tokens=48, hooks=[g])
    assert alone[0].token_ids == whole[7].token_ids


def test_grammar_composes_with_a_ban_and_a_length_penalty(verb, vecs):
    g = Grammar(builtin="spans_only")
    ban = BanChars(families=("parentheses",))
    dec = verb.verbalize(vecs, max_new_tokens=96, hooks=[g, ban, LengthPenalty(lam=0.5)], batch_size=24)
    plain = verb.verbalize(vecs, max_new_tokens=96, hooks=[g], batch_size=24)
    done = [d for d in dec if d.finish_reason == "stop"]
    assert len(done) >= 20
    assert all(SPANS_ONLY_RE.fullmatch(d.raw_text) and not set(d.raw_text) & set("()") for d in done)
    assert sum(d.n_tokens for d in dec) < sum(d.n_tokens for d in plain)  # the penalty shortens


def test_dead_end_is_reported_per_row(verb, vecs):
    # '—' (E2 80 94) exists in the toy vocabulary only as byte tokens; banning '“' with partial bytes
    # also bans the lone lead byte E2, so the grammar's next character cannot be written.  The static
    # check passes (no text of the grammar holds '“'), decoding reaches the dead end.
    g = Grammar(regex="Token \u2014[a-z]+")
    ban = BanChars(chars="\u201c")
    with pytest.warns(UserWarning, match="U\\+201C"):
        dec = verb.verbalize(vecs[:4], max_new_tokens=30, hooks=[g, ban])
    for d in dec:
        assert d.finish_reason == "grammar_dead_end"
        assert d.raw_text == "<explanation>\nToken "  # everything generated before the dead end
    # a floor yields to a grammar that allows nothing but the stop token (vLLM's rule too)
    short = Grammar(regex="Token")
    dec = verb.verbalize(vecs[:4], max_new_tokens=30, hooks=[short, MinNewTokens(20)])
    assert all(d.finish_reason == "stop" and re.fullmatch(r"<explanation>\n?Token\n?</explanation>", d.raw_text)
               for d in dec)


def test_prefix_counts_as_part_of_the_explanation(verb, vecs):
    p = Prefix(scaffold="toy")
    dec = verb.verbalize(vecs[:6], max_new_tokens=60, hooks=[p])
    tok = verb.av.tokenizer
    for d in dec:
        assert d.raw_text.startswith('<explanation>\nToken "')
        assert d.raw_text == '<explanation>\nToken "' + tok.decode(list(d.token_ids), skip_special_tokens=False)
        assert d.n_tokens == len(d.token_ids)
        assert d.tag_status == "ok" and d.explanation.startswith('Token "')


# ---------------------------------------------------------------- command line
def test_cli_verbalize_with_a_grammar(tmp_path):
    import polars as pl
    from typer.testing import CliRunner

    from nla_probe.cli import app
    from nla_probe.cli.core import grammar_hooks

    d = toy_pair_dirs()[0]
    if not (d / "nla_meta.yaml").is_file():
        pytest.skip("toy pair not present")
    out = tmp_path / "dec.parquet"
    r = CliRunner().invoke(app, ["verbalize", "--av", str(d), "--data", str(toy_eval_path()), "--out", str(out),
                                 "--limit", "6", "--max-new-tokens", "64", "--grammar", "spans_only"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    frame = pl.read_parquet(out)
    done = frame.filter(pl.col("finish_reason") == "stop")["raw_text"].to_list()
    assert frame.height == 6 and len(done) >= 5 and all(SPANS_ONLY_RE.fullmatch(t) for t in done)
    assert '"builtin": "spans_only"' in frame["hooks"][0]
    assert grammar_hooks("scaffold_spans", "toy") == [Grammar(builtin="scaffold_spans", scaffold="toy")]
    assert grammar_hooks(None, "toy", "scaffold") == [Prefix(scaffold="toy")]
    assert grammar_hooks("regex:[a-z]+", None, "<explanation>\\n") == [Grammar(regex="[a-z]+"),
                                                                        Prefix(text="<explanation>\n")]
    lark = tmp_path / "g.lark"
    lark.write_text('start: "x" /[a-z]+/\n')
    assert grammar_hooks(f"lark:{lark}")[0].lark.startswith("start:")
    with pytest.raises(UnknownNameError, match="valid built-in grammars: no_delimiters, scaffold_spans, spans_only"):
        grammar_hooks("spans")
    with pytest.raises(InputError, match="--grammar ebnf:: expected a readable file, found 'nope.gbnf'"):
        grammar_hooks("ebnf:nope.gbnf")


# ---------------------------------------------------------------- experiment kind
def test_quoted_share_hand_examples():
    from nla_probe.experiments.constrained import quoted_share

    assert quoted_share('"ab" "c"') == 1.0
    assert quoted_share('Token "ab" after x.') == pytest.approx(4 / 16)  # '"ab"' of the 16 in 'Token"ab"afterx.'
    assert quoted_share("no quotes here") == 0.0
    assert quoted_share("   ") == 0.0


def test_constrained_spec_runs_on_the_toy(tmp_path):
    from pathlib import Path

    import polars as pl

    from nla_probe import load_pair
    from nla_probe.ablate.engine import ablate
    from nla_probe.ablate.spec import Spec, load_spec

    av_dir, ar_dir = toy_pair_dirs()
    if not (ar_dir / "nla_meta.yaml").is_file():
        pytest.skip("toy pair not present")
    spec = load_spec(Path(__file__).resolve().parents[1] / "ablations" / "constrained.toml")
    assert spec.kind == "constrained" and Spec.from_toml(spec.to_toml()) == spec
    d = spec.to_dict()
    d["metrics"]["n_boot"] = 50
    res = ablate(d, load_pair(av_dir, ar_dir), toy_eval_path(), out=tmp_path / "out", batch_size=8, limit=8,
                 report=False)
    f = res.frame
    by = {c: f.filter(pl.col("condition") == c) for c in f["condition"].unique().to_list()}
    assert set(by) == {"unconstrained", "spans_only", "scaffold_forced", "scaffold_unforced", "no_delimiters",
                       "ban_all_floor"} and all(x.height == 8 for x in by.values())
    spans = by["spans_only"].filter(pl.col("finish_reason") == "stop")["text"].to_list()
    assert spans and all(re.fullmatch(rf"{_Q}(?:{_S}{_Q})*(?:{_S})?", t.strip()) for t in spans)
    no_delims = by["no_delimiters"]["text"].to_list() + by["ban_all_floor"]["text"].to_list()
    assert all(not set(t) & DELIMS for t in no_delims)
    assert by["ban_all_floor"]["n_banned"].to_list() == [0] * 8
    assert all(t.startswith('Token "') for t in by["scaffold_unforced"]["text"].to_list())
    assert by["spans_only"]["quoted_share"].mean() > by["unconstrained"]["quoted_share"].mean()
    assert by["no_delimiters"]["quoted_share"].to_list() == [0.0] * 8


def test_user_grammars_in_every_format_decode(verb, vecs):
    import json

    v = vecs[:4]
    cases = [
        (Grammar(regex='Token "[a-z]+"'), r'<explanation>\n?Token "[a-z]+"\n?</explanation>'),
        (Grammar(ebnf='root ::= "Kind: " ("word" | "piece") "."'),
         r"<explanation>\n?Kind: (word|piece)\.\n?</explanation>"),
        (Grammar(lark='start: "<explanation>" /[a-z ]{1,20}/ "</explanation>"', scope="output"),
         r"<explanation>[a-z ]{1,20}</explanation>"),
    ]
    for g, pattern in cases:
        for d in verb.verbalize(v, max_new_tokens=40, hooks=[g]):
            assert d.finish_reason == "stop" and re.fullmatch(pattern, d.raw_text), (g.describe(), d.raw_text)
    schema = {"type": "object", "properties": {"token": {"type": "string", "maxLength": 8}}, "required": ["token"],
              "additionalProperties": False}
    g = Grammar(json_schema=json.dumps(schema))
    for d in verb.verbalize(v, max_new_tokens=40, hooks=[g]):
        assert d.finish_reason == "stop" and d.tag_status == "ok", d.raw_text
        obj = json.loads(d.explanation)
        assert set(obj) == {"token"} and isinstance(obj["token"], str) and len(obj["token"]) <= 8


def test_sampled_decodes_hold_the_grammar(verb, vecs):
    g = Grammar(builtin="spans_only")
    dec = verb.verbalize(vecs[:12], max_new_tokens=64, hooks=[g], do_sample=True, temperature=1.5, top_p=0.95, seed=4)
    greedy = verb.verbalize(vecs[:12], max_new_tokens=64, hooks=[g])
    assert [d.token_ids for d in dec] != [d.token_ids for d in greedy]  # sampling did change the decodes
    done = [d for d in dec if d.finish_reason == "stop"]
    assert len(done) >= 6 and all(SPANS_ONLY_RE.fullmatch(d.raw_text) for d in done)
    import regex

    assert all(regex.fullmatch(SPANS_ONLY_RE.pattern, d.raw_text, partial=True) for d in dec)
