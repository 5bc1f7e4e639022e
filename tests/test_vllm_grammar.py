"""Grammar and prefix hooks on the vLLM backend against the transformers backend (toy pair).

Greedy decodes of 64 held-out toy activations under each built-in grammar must be identical on
both backends, and each must match a hand-written Python ``re`` pattern (not the library that
produced it).  One engine for the module.
"""

import re

import pytest
import torch

pytest.importorskip("vllm")

from nla_probe.defaults import toy_eval_path, toy_pair_dirs
from nla_probe.errors import InputError
from nla_probe.hooks import BanChars, Grammar, MinNewTokens, Prefix

pytestmark = pytest.mark.vllm

_Q = r'"[^"\n<]+"'
_S = "[ \n,.;:!?\u2013\u2014-]{1,4}"
_RUN = rf"{_Q}(?:{_S}{_Q})*(?:{_S})?"
CHECKS = {
    "spans_only": re.compile(rf"<explanation>\n?{_RUN}\n?</explanation>"),
    "scaffold_spans": re.compile(rf"<explanation>\n?Token {_Q} after {_Q}\.\n\n{_RUN}\n\n{_RUN}\n?</explanation>"),
    "no_delimiters": re.compile("<explanation>\n?[^<\"'\u201c\u201d`\u2018\u2019*_()\\[\\]\u00ab\u00bb]*\n?"
                                "</explanation>"),
}


@pytest.fixture(scope="module")
def av():
    from nla_probe.nla.checkpoint import load_av

    d = toy_pair_dirs()[0]
    if not (d / "nla_meta.yaml").is_file():
        pytest.skip("toy pair not present")
    return load_av(d)


@pytest.fixture(scope="module")
def hf(av):
    return av.verbalizer()


@pytest.fixture(scope="module")
def vl(av):
    return av.verbalizer(backend="vllm", enforce_eager=True)


@pytest.fixture(scope="module")
def vecs():
    from nla_probe.nla.extraction import read_activations

    pool = torch.as_tensor(read_activations(toy_eval_path())[1])
    return pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(5))[:64]]


@pytest.mark.parametrize("name", ["spans_only", "scaffold_spans", "no_delimiters"])
def test_builtin_grammar_parity(hf, vl, vecs, name):
    g = Grammar(builtin=name, scaffold="toy" if name == "scaffold_spans" else "")
    a = hf.verbalize(vecs, max_new_tokens=80, hooks=[g], batch_size=64)
    b = vl.verbalize(vecs, max_new_tokens=80, hooks=[g], batch_size=64)
    assert [d.token_ids for d in a] == [d.token_ids for d in b]
    assert [d.finish_reason for d in a] == [d.finish_reason for d in b]
    assert len({d.token_ids for d in a}) >= 16, "decodes must depend on the injected vector"
    done = [d for d in b if d.finish_reason == "stop"]
    assert len(done) >= 56
    assert all(CHECKS[name].fullmatch(d.raw_text) for d in done), [d.raw_text for d in done
                                                                  if not CHECKS[name].fullmatch(d.raw_text)][:3]
    assert all(d.backend == "vllm" and d.hooks == (g.to_spec(),) for d in b)


def test_dead_end_floor_and_prefix_parity(hf, vl, vecs):
    v = vecs[:8]
    g = Grammar(regex="Token \u2014[a-z]+")  # '—' only as byte tokens; the ban below removes its lead byte
    ban = BanChars(chars="\u201c")
    with pytest.warns(UserWarning, match="U\\+201C"):
        a = hf.verbalize(v, max_new_tokens=30, hooks=[g, ban])
    b = vl.verbalize(v, max_new_tokens=30, hooks=[g, ban])
    assert [(d.token_ids, d.finish_reason) for d in a] == [(d.token_ids, d.finish_reason) for d in b]
    assert all(d.finish_reason == "grammar_dead_end" and d.raw_text == "<explanation>\nToken " for d in b)
    short = [Grammar(regex="Token"), MinNewTokens(20)]  # a floor yields to a completed grammar on both
    a = hf.verbalize(v, max_new_tokens=30, hooks=short)
    b = vl.verbalize(v, max_new_tokens=30, hooks=short)
    assert [(d.token_ids, d.finish_reason) for d in a] == [(d.token_ids, d.finish_reason) for d in b]
    assert all(d.finish_reason == "stop" and d.n_tokens < 20 for d in b)
    p = [Prefix(scaffold="toy")]
    a = hf.verbalize(vecs, max_new_tokens=60, hooks=p, batch_size=64)
    b = vl.verbalize(vecs, max_new_tokens=60, hooks=p, batch_size=64)
    assert sum(x.token_ids == y.token_ids for x, y in zip(a, b)) >= 61  # as unconstrained parity
    assert all(d.raw_text.startswith('<explanation>\nToken "') and d.prefix == '<explanation>\nToken "' for d in b)


def test_vllm_refuses_grammar_checks_before_decoding(vl, vecs):
    with pytest.raises(InputError, match="needs a banned character"):
        vl.verbalize(vecs[:2], max_new_tokens=30, hooks=[Grammar(builtin="spans_only"), BanChars(families=("quotes",))])
