"""The vLLM backend against the transformers backend: parity, bans, length controls, seeds.

Uses the trained toy pair and its held-out activations when they exist
(:func:`nla_probe.defaults.toy_pair_dirs`), else a Gemma-3 fixture pair with ``d_model=128``
(vLLM's CPU attention needs a head size of at least 32).  Greedy decodes must depend on the
injected vector (checked below), so parity is not trivial.  One engine for the whole module.
"""

import math

import pytest
import torch

pytest.importorskip("vllm")

from nla_probe.defaults import toy_eval_path, toy_pair_dirs  # noqa: E402
from nla_probe.errors import InputError  # noqa: E402
from nla_probe.hooks import BanChars, LengthPenalty, MaxNewTokens, MinNewTokens  # noqa: E402
from nla_probe.nla.checkpoint import load_av  # noqa: E402
from nla_probe.nla.generation import Sampling  # noqa: E402
from nla_probe.text.delimiters import resolve_chars  # noqa: E402
from nla_probe.toy.fixtures import make_fixture_pair  # noqa: E402

pytestmark = pytest.mark.vllm

QUOTES = resolve_chars("quotes")


@pytest.fixture(scope="module")
def av(tmp_path_factory):
    toy_av = toy_pair_dirs()[0]
    if (toy_av / "nla_meta.yaml").is_file():
        return load_av(toy_av)
    av_dir, _ = make_fixture_pair(tmp_path_factory.mktemp("vllm"), "gemma3", d_model=128)
    return load_av(av_dir)


@pytest.fixture(scope="module")
def hf(av):
    return av.verbalizer()


@pytest.fixture(scope="module")
def vl(av):
    return av.verbalizer(backend="vllm", enforce_eager=True)


_POOL = []


def _vectors(n, d, seed=1):
    """``n`` held-out toy activations (a seeded sample) with the toy pair, else Gaussian vectors."""
    if (toy_pair_dirs()[0] / "nla_meta.yaml").is_file() and toy_eval_path().is_file():
        if not _POOL:
            from nla_probe.nla.extraction import read_activations

            _POOL.append(torch.as_tensor(read_activations(toy_eval_path())[1]))
        pool = _POOL[0]
        if pool.shape[1] == d and len(pool) >= n:
            return pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]]
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _same(a, b):
    return sum(x.token_ids == y.token_ids for x, y in zip(a, b))


def test_greedy_parity_with_and_without_a_ban(av, hf, vl):
    v = _vectors(64, av.contract.d_model)
    base_hf = hf.verbalize(v, max_new_tokens=32, batch_size=64)
    assert len({d.token_ids for d in base_hf}) >= 8, "decodes must depend on the injected vector"
    base_vl = vl.verbalize(v, max_new_tokens=32, batch_size=64)
    assert _same(base_hf, base_vl) >= 61  # >= 95% of 64
    ban = BanChars(families=("quotes", "emphasis"))
    ban_hf = hf.verbalize(v, max_new_tokens=32, batch_size=64, hooks=[ban])
    ban_vl = vl.verbalize(v, max_new_tokens=32, batch_size=64, hooks=[ban])
    assert _same(ban_hf, base_hf) < 64, "the ban must change some decodes"
    assert _same(ban_hf, ban_vl) >= 61
    assert all(d.backend == "vllm" and d.hooks == (ban.to_spec(),) for d in ban_vl)


def test_quote_ban_leaves_no_quote_in_200_decodes(av, hf, vl):
    v = _vectors(200, av.contract.d_model, seed=2)
    ban = BanChars(families=("double_quotes", "single_quotes"))
    unbanned = vl.verbalize(v, max_new_tokens=40, batch_size=100)
    assert sum(c in QUOTES for d in unbanned for c in d.raw_text) > 0, "the unbanned model must write quotes"
    for backend in (vl, hf):
        decs = backend.verbalize(v, max_new_tokens=40, batch_size=100, hooks=[ban])
        assert len(decs) == 200
        assert sum(c in QUOTES for d in decs for c in d.raw_text) == 0


def test_length_controls_match_their_definitions(av, hf, vl):
    v = _vectors(8, av.contract.d_model, seed=3)
    forced = vl.verbalize(v, max_new_tokens=16, hooks=[LengthPenalty(1e6, start=5, targets="stop")])
    assert {(d.n_tokens, d.finish_reason) for d in forced} == {(6, "stop")}
    floored = vl.verbalize(v, max_new_tokens=16, hooks=[LengthPenalty(1e6, targets="stop"), MinNewTokens(9)])
    assert {(d.n_tokens, d.finish_reason) for d in floored} == {(9, "stop")}
    capped = vl.verbalize(v, max_new_tokens=16, hooks=[MaxNewTokens(5)])
    assert all(d.n_tokens <= 5 and d.truncated == (d.finish_reason == "length") for d in capped)
    closing = [LengthPenalty(1e6, start=5)]  # stop_and_close: the tag at t = 6, completed, then stop
    for backend in (hf, vl):
        for d in backend.verbalize(v, max_new_tokens=24, hooks=closing):
            assert d.raw_text.count("</explanation") == 1 and d.raw_text.rstrip().endswith("</explanation>"), d.raw_text
            assert d.finish_reason == "stop"
    moderate = [LengthPenalty(0.4, start=2)]
    assert _same(hf.verbalize(v, max_new_tokens=16, hooks=moderate),
                 vl.verbalize(v, max_new_tokens=16, hooks=moderate)) >= 7


class _MarginRecorder:
    """A hook that records, per step, max(banned raw logit) - max(allowed raw logit)."""

    name = "margin_recorder"

    def __init__(self, ids):
        self.ids, self.margins = list(ids), []

    def to_spec(self):
        return {"name": self.name}

    def vllm_sampling_kwargs(self, ctx):
        return {}

    def hf_logits_processors(self, ctx):
        def record(input_ids, scores):
            mask = torch.zeros(scores.shape[1], dtype=torch.bool)
            mask[self.ids] = True
            self.margins.append((scores[:, mask].max(1).values - scores[:, ~mask].max(1).values).max().item())
            return scores

        return [record]


def test_clamped_logit_bias_still_forbids_banned_tokens(av, hf, vl):
    from vllm import SamplingParams

    ban = BanChars(families="quotes")
    ctx = hf.hook_context(Sampling(max_new_tokens=24))
    ids = ban.ban_set(ctx).ids
    assert SamplingParams.from_optional(logit_bias={ids[0]: -1e9}).logit_bias[ids[0]] == -100.0  # the server clamp
    assert vl.backend.sampling_params(ctx.sampling, (ban,), ctx, 1)[0].logit_bias[ids[0]] == -1e9  # ours is not
    v = _vectors(32, av.contract.d_model, seed=4)
    recorder = _MarginRecorder(ids)
    hf.verbalize(v, max_new_tokens=24, hooks=[recorder, ban])
    assert max(recorder.margins) < 100  # so a -100 bias already puts every banned token last
    exact = vl.verbalize(v, max_new_tokens=24, hooks=[ban])
    clamped = vl.verbalize(v, max_new_tokens=24, hooks=[BanChars(families="quotes", bias=-100.0)])
    assert [d.token_ids for d in exact] == [d.token_ids for d in clamped]
    assert not {i for d in clamped for i in d.token_ids} & set(ids)


def test_sampling_is_seeded_per_request(av, vl):
    from nla_probe.nla.backends.vllm import request_seed

    v = _vectors(6, av.contract.d_model, seed=5)
    a = vl.verbalize(v, max_new_tokens=12, do_sample=True, seed=7)
    b = vl.verbalize(v, max_new_tokens=12, do_sample=True, seed=7)
    assert [d.token_ids for d in a] == [d.token_ids for d in b]
    assert len({request_seed(7, j) for j in range(1000)} | {request_seed(8, j) for j in range(1000)}) == 2000
    assert all(0 <= request_seed(s, 0) < 2**31 for s in (0, 1, 2**40))


def test_backend_options_and_provenance(av, vl):
    from nla_probe.nla.backends.vllm import VLLMBackend

    with pytest.raises(InputError, match="'model'.*set by the backend"):
        VLLMBackend(av, model="elsewhere")
    info = vl.backend.info()
    assert info["model_runner"] == "v1" and info["engine_kwargs"]["enforce_eager"] == "True"
    assert not math.isnan(float(info["vllm_version"].split(".")[0]))
