"""Generation hooks: ban resolution (bytes, partial pieces, cache), length controls, specs, HF decodes."""

import json
import math
import random
import warnings
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nla_probe.errors import InputError, SpecError, UnknownNameError
from nla_probe.hooks import (
    BanChars,
    Hook,
    LengthPenalty,
    MaxNewTokens,
    MinNewTokens,
    end_token_ids,
    hook_from_spec,
    hooks_from_spec,
    hooks_to_spec,
    length_bonus,
    list_hooks,
    merge_vllm_kwargs,
    register_hook,
)
from nla_probe.hooks.base import _AddBias, _StepBonus
from nla_probe.hooks.token_bans import ban_ids, byte_alphabet, cache_info, clear_cache, resolve_ban, token_bytes
from nla_probe.nla.generation import CLOSE_TAG, HookContext, Sampling, decodes_to_frame, length_limits
from nla_probe.text.delimiters import resolve_chars
from nla_probe.toy.fixtures import make_fixture_pair

QUOTES = resolve_chars("quotes")


@pytest.fixture(scope="module")
def av(tmp_path_factory):
    from nla_probe.nla.checkpoint import load_av

    av_dir, _ = make_fixture_pair(tmp_path_factory.mktemp("hooks"), "gemma3", d_model=128)
    return load_av(av_dir)


@pytest.fixture(scope="module")
def vectors():
    return torch.randn(64, 128, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def baseline(av, vectors):
    return av.verbalizer().verbalize(vectors, max_new_tokens=32, batch_size=64)


def _ctx(av, max_new_tokens=40):
    return av.verbalizer().hook_context(Sampling(max_new_tokens=max_new_tokens))


# ---------------------------------------------------------------- byte tables and the pure rule
def test_byte_alphabet_is_the_gpt2_bijection():
    table = byte_alphabet()
    assert len(table) == 256 and sorted(table.values()) == list(range(256))
    assert table["\u0120"] == 0x20 and table["\u010a"] == 0x0A  # 'Ġ' = space, 'Ċ' = newline
    assert table["A"] == 0x41 and table["\u00e9"] == 0xE9


def test_ban_ids_full_partial_and_tails():
    pieces = [b"a", b'"', b'x"y', "\u201c".encode(), b"\xe2", b"\xe2\x80", b"\x80\x9c", b"q\xe2\x80",
              "\u2014".encode(), None, b'"']
    full, partial = ban_ids(pieces, '"\u201c', protected=[10])
    assert full == [1, 2, 3]
    assert partial == [4, 5, 7]  # end in E2 / E2 80; the tail 80 9C and the whole em dash stay
    assert ban_ids(pieces, '"\u201c', partial_bytes="allow") == ([1, 2, 3, 10], [])
    with pytest.raises(InputError, match="partial_bytes"):
        ban_ids(pieces, '"', partial_bytes="maybe")


CHARS = ['"', "\u201c", "\u2019", "\u300c", "\u00ab", "a", "\u00e9", "\U0001f600"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="".join(CHARS) + "xyz ", min_size=1, max_size=4), max_size=25),
       st.sets(st.sampled_from(CHARS[:5]), min_size=1), st.integers(0, 2**31 - 1))
def test_ban_is_exact_for_any_token_sequence(words, banned, seed):
    """No sequence of allowed pieces decodes to a banned character (byte pieces included)."""
    vocab = [bytes([b]) for b in range(256)] + [w.encode() for w in words]
    vocab += [w.encode()[:k] for w in words for k in range(1, len(w.encode()))]
    full, partial = ban_ids(vocab, banned)
    allowed = sorted(set(range(len(vocab))) - set(full) - set(partial))
    rng = random.Random(seed)
    for _ in range(30):
        text = b"".join(vocab[rng.choice(allowed)] for _ in range(rng.randint(1, 12))).decode("utf-8", "replace")
        assert not set(text) & banned


# ---------------------------------------------------------------- resolution on a real tokenizer
def test_resolve_matches_independent_decode(av):
    tok, ctx = av.tokenizer, _ctx(av)
    ban = BanChars(families="quotes").resolve(tok, vocab_size=ctx.vocab_size, stop_ids=ctx.stop_ids)
    independent = {i for i in range(len(tok)) if set(tok.decode([i])) & QUOTES} - set(tok.all_special_ids)
    full_ids = {i for i in ban.ids if any(c.encode() in token_bytes(tok).pieces[i] for c in QUOTES)}
    assert full_ids == independent and ban.n_full == len(independent) > 0
    assert ban.count == len(ban.ids) == ban.n_full + ban.n_partial
    assert not set(ban.ids) & (set(tok.all_special_ids) | set(ctx.stop_ids))
    assert ban.by_char['"'] == sum('"' in tok.decode([i]) for i in independent)
    assert ban.examples(3) and all(isinstance(e, str) for e in ban.examples(3))
    assert "token ids banned" in ban.summary()
    # every allowed id decodes without a banned char
    allowed = set(range(len(tok))) - set(ban.ids)
    assert not any(set(tok.decode([i])) & QUOTES for i in allowed)


def test_byte_fallback_tokenizer_pieces():
    """SentencePiece-style vocabularies: <0xNN> is one byte, '▁' a space."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1, **{f"<0x{b:02X}>": 2 + b for b in range(256)},
             "\u2581": 258, "a": 259, "\u201c": 260, "\u2581\u201ca": 261, "b": 262}
    backend = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")
    table = token_bytes(tok)
    assert table.kind == "byte_fallback" and table.special == frozenset({0, 1})
    assert table.pieces[2 + 0xE2] == b"\xe2" and table.pieces[261] == " \u201ca".encode()
    ban = resolve_ban(tok, "\u201c")
    assert ban.ids == (2 + 0xE2, 260, 261) and (ban.n_full, ban.n_partial) == (2, 1)
    assert tok.decode([2 + 0xE2, 2 + 0x80, 2 + 0x9C]) == "\u201c"  # why the lead byte must go


def test_resolution_is_cached_per_tokenizer(av):
    clear_cache()
    tok = av.tokenizer
    a = BanChars(families="quotes").resolve(tok)
    b = BanChars(families=["double_quotes", "single_quotes"]).resolve(tok)
    assert a is b and cache_info() == {"token_bytes": 1, "ban_sets": 1}
    BanChars(families="emphasis").resolve(tok)
    assert cache_info() == {"token_bytes": 1, "ban_sets": 2}


class _FakeTok:
    """A minimal tokenizer: tokens 'a', 'b', 'ab' and one special."""

    all_special_ids = [3]
    added_tokens_decoder: dict = {}
    _toks = ["a", "b", "ab", "<s>"]

    def __len__(self):
        return 4

    def convert_ids_to_tokens(self, ids):
        return [self._toks[i] for i in ids]

    def decode(self, ids):
        return "".join(self._toks[i] for i in ids)


def test_ban_leaving_no_token_is_refused():
    with pytest.raises(InputError, match="no.*allowed token|at least one allowed token"):
        resolve_ban(_FakeTok(), "ab")
    assert resolve_ban(_FakeTok(), "a").ids == (0, 2)


def test_bad_input_messages(av):
    with pytest.raises(UnknownNameError, match="valid delimiter familys: .*double_quotes"):
        BanChars(families=["double_quote"])
    with pytest.raises(InputError, match="lam.*>= 0"):
        LengthPenalty(-0.1)
    with pytest.raises(InputError, match="bias"):
        BanChars(families="quotes", bias=0.0)
    with pytest.raises(InputError, match="explanation.*found \\['/'\\]"):
        BanChars(chars="/")
    with pytest.raises(InputError, match="at least one"):
        BanChars()
    with pytest.raises(InputError, match="min_new_tokens.n"):
        MinNewTokens(-1)
    with pytest.raises(InputError, match="max_new_tokens.n"):
        MaxNewTokens(0)
    with pytest.warns(UserWarning, match="U\\+2603"):
        BanChars(chars="\u2603").resolve(av.tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BanChars(families="quotes").resolve(av.tokenizer)  # family chars absent from the vocab: no warning


# ---------------------------------------------------------------- specs and composition
def test_spec_round_trip_and_errors():
    hooks = [BanChars(families=("quotes",), chars="\u300c", bias=-100.0, partial_bytes="allow"),
             LengthPenalty(0.05, start=10, schedule="constant", targets="stop"), MinNewTokens(140), MaxNewTokens(64)]
    specs = json.loads(json.dumps(hooks_to_spec(hooks)))
    assert all(s["version"] == 1 for s in specs)
    assert specs[0] == {"version": 1, "name": "ban_chars", "families": ["quotes"], "chars": "\u300c",
                        "bias": -100.0, "partial_bytes": "allow"}
    assert hooks_from_spec(specs) == tuple(hooks)
    assert hook_from_spec({"name": "min_new_tokens", "n": 3}) == MinNewTokens(3)
    with pytest.raises(UnknownNameError, match="valid hooks: ban_chars, grammar, length_penalty"):
        hook_from_spec({"name": "ban"})
    with pytest.raises(SpecError, match="unknown key.*'family'.*valid keys"):
        hook_from_spec({"name": "ban_chars", "family": "quotes"})
    with pytest.raises(SpecError, match="version"):
        hook_from_spec({"name": "min_new_tokens", "version": 2})
    with pytest.raises(SpecError, match="lam"):
        hook_from_spec({"name": "length_penalty", "lam": -1})
    assert list_hooks() == ["ban_chars", "grammar", "prefix", "length_penalty", "min_new_tokens", "max_new_tokens"]
    assert BanChars("quotes").describe() == "ban_chars(families=('quotes',))"


def test_register_hook_guards():
    with pytest.raises(InputError, match="already registered"):
        register_hook(type("X", (MinNewTokens,), {"name": "min_new_tokens", "__module__": __name__}))
    with pytest.raises(InputError, match="dataclass subclassing Hook"):
        register_hook(dict)
    assert issubclass(register_hook(MinNewTokens), Hook)


def test_merge_vllm_kwargs():
    merged = merge_vllm_kwargs([{"logit_bias": {1: -5.0, 2: -1.0}, "min_tokens": 3},
                                {"logit_bias": {2: -2.0}, "min_tokens": 7, "max_tokens": 9},
                                {"extra_args": {"k": [1]}}, {"extra_args": {"k": [2]}, "max_tokens": 4}])
    assert merged == {"logit_bias": {1: -5.0, 2: -3.0}, "min_tokens": 7, "max_tokens": 4, "extra_args": {"k": [1, 2]}}


def test_length_limits():
    s = Sampling(max_new_tokens=50)
    assert length_limits(s, [MinNewTokens(5), MaxNewTokens(20), MaxNewTokens(30)]) == (5, 20)
    assert length_limits(s, []) == (0, 50)
    with pytest.raises(InputError, match="min_new_tokens: expected <= the length cap \\(20"):
        length_limits(s, [MinNewTokens(25), MaxNewTokens(20)])


# ---------------------------------------------------------------- logits processors
def test_processors_act_on_the_right_ids_and_steps():
    scores = torch.ones(2, 6)
    out = _AddBias([1, 4], -1e9)(torch.zeros(2, 0, dtype=torch.long), scores)
    assert out is scores  # in place: only the banned columns are touched
    assert out[:, [1, 4]].eq(1 - 1e9).all() and out[:, [0, 2, 3, 5]].eq(1).all()
    assert _AddBias([2], -math.inf)(None, torch.zeros(3, 6))[:, 2].eq(-math.inf).all()
    lp = LengthPenalty(0.5, start=2)
    proc = _StepBonus([5], lp.bonus)
    seen = [proc(torch.zeros(2, n, dtype=torch.long), torch.zeros(2, 6))[0, 5].item() for n in range(7, 13)]
    assert seen == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5]  # t counts from the first call, whatever the prompt length
    assert [length_bonus(t, 2.0, 3, "constant") for t in range(5)] == [0, 0, 0, 2.0, 2.0]


def test_end_token_ids(av):
    ctx = _ctx(av)
    ids = end_token_ids(ctx)
    first = av.tokenizer.encode(CLOSE_TAG, add_special_tokens=False)[0]
    assert set(ctx.stop_ids) < set(ids) and first in ids
    assert end_token_ids(ctx, "stop") == tuple(sorted(ctx.stop_ids))


# ---------------------------------------------------------------- decodes (transformers backend)
def test_ban_binds_on_decodes_and_rows_record_hooks(av, vectors, baseline):
    """The characters the unbanned model writes (ASCII, whole tokens) disappear under a ban."""
    used = [c for c in "*}\"\\T" if any(c in d.raw_text for d in baseline)]
    assert len(used) >= 3
    hook = BanChars(families="quotes", chars="".join(used))
    decs = av.verbalizer().verbalize(vectors, max_new_tokens=32, hooks=[hook], batch_size=64)
    assert len(decs) == 64
    assert sum(c in d.raw_text for d in decs for c in hook.banned_chars) == 0
    assert all(d.hooks == (hook.to_spec(),) for d in decs)
    assert json.loads(decodes_to_frame(decs)["hooks"][0]) == [hook.to_spec()]


def test_partial_bytes_policy_on_decodes(av, vectors, baseline):
    """The model writes lone lead bytes (e.g. 0xE7); banning a character that starts with the most
    frequent one removes that byte piece with partial_bytes='ban' and changes nothing with 'allow'."""
    pieces = token_bytes(av.tokenizer).pieces
    leads = Counter(pieces[i][0] for d in baseline for i in d.token_ids
                    if len(pieces[i]) == 1 and 0xE1 <= pieces[i][0] <= 0xEC)
    assert leads, "the fixture is expected to write lone 3-byte lead bytes"
    lead = leads.most_common(1)[0][0]
    char = (bytes([lead]) + b"\x80\x80").decode()  # a character no 526-token vocabulary holds whole
    vb = av.verbalizer()
    with pytest.warns(UserWarning, match="only through partial byte pieces"):
        exact = vb.verbalize(vectors, max_new_tokens=32, batch_size=64, hooks=[BanChars(chars=char)])
    with pytest.warns(UserWarning, match="partial_bytes='allow'"):
        loose = vb.verbalize(vectors, max_new_tokens=32, batch_size=64,
                             hooks=[BanChars(chars=char, partial_bytes="allow")])
    assert not any(pieces[i].endswith(bytes([lead])) for d in exact for i in d.token_ids)
    assert [d.token_ids for d in loose] == [d.token_ids for d in baseline]


def test_length_controls_on_decodes(av, vectors):
    v = vectors[:8]
    vb = av.verbalizer()
    plain = vb.verbalize(v, max_new_tokens=16)
    same = vb.verbalize(v, max_new_tokens=16, hooks=[LengthPenalty(0.0)])
    assert [d.token_ids for d in same] == [d.token_ids for d in plain]
    huge = LengthPenalty(1e6, start=5, targets="stop")  # stop forced once the bonus is > 0: at t = 6
    forced = vb.verbalize(v, max_new_tokens=16, hooks=[huge])
    assert {(d.n_tokens, d.finish_reason) for d in forced} == {(6, "stop")}
    const = vb.verbalize(v, max_new_tokens=16, hooks=[LengthPenalty(1e6, start=3, schedule="constant", targets="stop")])
    assert {d.n_tokens for d in const} == {3}
    floored = vb.verbalize(v, max_new_tokens=16, hooks=[LengthPenalty(1e6, targets="stop"), MinNewTokens(9)])
    assert {(d.n_tokens, d.finish_reason) for d in floored} == {(9, "stop")}
    capped = vb.verbalize(v, max_new_tokens=16, hooks=[MaxNewTokens(5)])
    assert all(d.n_tokens <= 5 for d in capped)
    assert [d.truncated for d in capped] == [d.finish_reason == "length" and d.n_tokens == 5 for d in capped]
    assert decodes_to_frame(capped)["truncated"].to_list() == [d.truncated for d in capped]
    assert [d.token_ids for d in capped] == [d.token_ids[:5] for d in plain]


def test_hook_context_fields(av):
    ctx = _ctx(av)
    assert isinstance(ctx, HookContext) and ctx.vocab_size >= len(av.tokenizer)


# ---------------------------------------------------------------- length penalty and the closing tag
def test_close_tag_state_completes_and_closes():
    from nla_probe.nla.generation import FORCE_BONUS, CloseTagState, length_step

    seqs = [(10, 11, 12), (20, 21, 11, 12)]  # "</" "explanation" ">"  and  " <" "/" "explanation" ">"
    st = CloseTagState(seqs)
    assert length_step(st, 4, 0.5, 0, "linear", [2]) == ((10, 20), 2.0)  # before a tag: its first tokens
    st.feed([7, 20])  # a tag started with its second form
    assert length_step(st, 6, 0.5, 0, "linear", [2]) == ((21,), FORCE_BONUS)
    st.feed([7, 20, 21, 11])
    assert length_step(st, 8, 0.5, 0, "linear", [2]) == ((12,), FORCE_BONUS)
    st.feed([7, 20, 21, 11, 12])
    assert st.closed and length_step(st, 9, 0.5, 0, "linear", [2]) == ((2,), FORCE_BONUS)  # then stop
    st.feed([7, 20, 21, 11, 12, 10])  # a later "</" does not start a second tag
    assert st.forced() is None and st.closed
    off = CloseTagState([(10, 11, 12)])
    off.feed([10, 5])  # a start that did not continue as the tag is dropped
    assert off.forced() is None and not off.closed
    stop_only = CloseTagState([])
    assert length_step(stop_only, 3, 1.0, 1, "linear", [2, 3]) == ((2, 3), 2.0)


@pytest.fixture(scope="module")
def toy_av():
    from pathlib import Path

    from nla_probe.nla.checkpoint import load_av

    path = Path(__file__).resolve().parents[1] / "data" / "toy" / "qwen_small" / "av"
    if not (path / "model.safetensors").is_file():
        pytest.skip("toy pair not built")
    return load_av(path)


@pytest.fixture(scope="module")
def toy_vectors():
    from pathlib import Path

    from nla_probe.nla.extraction import read_activations

    path = Path(__file__).resolve().parents[1] / "data" / "toy" / "qwen_small" / "eval.parquet"
    return read_activations(path, d_model=128)[1][:64]


@pytest.mark.parametrize("hook", [LengthPenalty(lam, schedule="linear") for lam in (0.05, 0.5, 1.0, 5.0)]
                         + [LengthPenalty(lam, schedule="constant") for lam in (0.5, 5.0)]
                         + [LengthPenalty(0.5, start=12)], ids=lambda h: h.describe())
def test_length_penalty_never_breaks_or_repeats_the_closing_tag(toy_av, toy_vectors, hook):
    """64 toy decodes under the penalty: every one is '<explanation>…</explanation>' with exactly one
    closing tag and nothing after it (before the fix, λ = 0.5 linear broke 14 of 64)."""
    decs = toy_av.verbalizer().verbalize(toy_vectors, max_new_tokens=64, hooks=[hook], batch_size=64)
    for d in decs:
        assert d.tag_status == "ok", d.raw_text
        assert d.raw_text.count("</explanation") == 1 and d.raw_text.rstrip().endswith(CLOSE_TAG), d.raw_text
        assert d.finish_reason == "stop"


def test_length_penalty_shortens_toy_decodes(toy_av, toy_vectors):
    """Mean generated tokens of 64 greedy toy decodes (docs/hooks.md): 29.95 without a penalty,
    27.55 at λ = 0.5, 13.19 at λ = 1, 7.38 at λ = 5 (linear schedule)."""
    vb = toy_av.verbalizer()
    means = [sum(d.n_tokens for d in vb.verbalize(toy_vectors, max_new_tokens=64, batch_size=64,
                                                  hooks=[LengthPenalty(lam)] if lam else [])) / 64
             for lam in (0.0, 0.5, 1.0, 5.0)]
    assert means == pytest.approx([29.953125, 27.546875, 13.1875, 7.375], abs=0.25)
