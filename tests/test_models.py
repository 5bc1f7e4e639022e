"""Contract behaviour of the AV injection and the AR forward on both fixture architectures."""

import numpy as np
import pytest
import torch

from nla_probe.errors import InputError
from nla_probe.nla.generation import parse_explanation
from nla_probe.nla.injection import find_injection_site


@pytest.fixture(params=["qwen2", "gemma3"])
def pair(request, qwen_pair, gemma_pair):
    return qwen_pair if request.param == "qwen2" else gemma_pair


def _base_model(pair):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(pair.av.path), dtype=torch.float32).eval()


def test_identity_head_ar_equals_base_hidden_state(pair):
    texts = ["one", 'a "quoted" span and (an aside) with more words than the first text']
    rec = pair.ar.reconstruct(texts)
    base = _base_model(pair)
    tok = pair.ar.tokenizer
    for i, t in enumerate(texts):
        ids = tok(pair.contract.ar_prompt_text(t), add_special_tokens=True)["input_ids"]
        if tok.bos_token_id is not None:
            assert ids[0] == tok.bos_token_id  # BOS read by the AR
        with torch.no_grad():
            hs = base(torch.tensor([ids]), output_hidden_states=True).hidden_states[pair.contract.layer + 1][0, -1]
        np.testing.assert_allclose(rec[i], hs.numpy(), atol=1e-4, rtol=1e-4)


def test_batched_equals_unbatched(pair):
    texts = ["short", "a much longer explanation " * 6, "mid length text here"]
    batched = pair.ar.reconstruct(texts, batch_size=3)
    single = np.stack([pair.ar.reconstruct([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_overflow_policies(qwen_pair):
    ar = qwen_pair.ar
    long = "word " * 2000
    with pytest.raises(InputError, match="exceed max_tokens"):
        ar.reconstruct(["ok", long])
    rec = ar.reconstruct_detailed(["ok", long], on_overflow="nan")
    assert rec.overflow == ["", "nan"] and np.isnan(rec.vectors[1]).all() and np.isfinite(rec.vectors[0]).all()
    rec = ar.reconstruct_detailed(["ok", long], on_overflow="truncate")
    assert rec.overflow[1].startswith("truncated:") and rec.n_tokens[1] <= ar.max_tokens
    assert np.isfinite(rec.vectors[1]).all()


def test_injection_rows(pair):
    verb = pair.verbalizer()
    v = np.random.default_rng(0).normal(size=(2, 64)) * 50
    emb = verb.prompt_embeds(v)
    site = pair.av.site
    c = pair.contract
    np.testing.assert_allclose(emb[:, site].norm(dim=-1).numpy(), [c.injection_scale] * 2, rtol=1e-5)
    np.testing.assert_allclose(emb[0, site].numpy() / np.linalg.norm(emb[0, site].numpy()),
                               v[0] / np.linalg.norm(v[0]), atol=1e-5)
    table = pair.av.model.get_input_embeddings().weight
    ids = torch.tensor(pair.av.prompt_ids)
    expected = table[ids] * pair.av.embed_scale
    other = [i for i in range(len(ids)) if i != site]
    np.testing.assert_allclose(emb[0, other].detach().numpy(), expected[other].detach().numpy(), rtol=1e-6)


def test_vector_reaches_the_model(pair):
    verb = pair.verbalizer()
    rng = np.random.default_rng(1)
    emb = verb.prompt_embeds(rng.normal(size=(2, 64)))
    with torch.no_grad():
        logits = pair.av.model(inputs_embeds=emb).logits[:, -1]
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)


def test_verbalize_keeps_order_and_matches_single(pair):
    verb = pair.verbalizer()
    v = np.random.default_rng(2).normal(size=(3, 64))
    batch = verb.verbalize(v, max_new_tokens=6, batch_size=3)
    singles = [verb.verbalize(v[i:i + 1], max_new_tokens=6)[0] for i in range(3)]
    assert [d.row for d in batch] == [0, 1, 2]
    assert [d.token_ids for d in batch] == [d.token_ids for d in singles]
    assert all(d.finish_reason in ("stop", "length") and d.n_tokens == len(d.token_ids) for d in batch)


@pytest.mark.parametrize("bad, msg", [
    (np.full((2, 64), np.nan), "NaN"),
    (np.zeros((2, 64)), "zero norm"),
    (np.ones((2, 63)), r"\[n, 64\]"),
])
def test_bad_vectors_raise_before_generation(qwen_pair, bad, msg):
    with pytest.raises(InputError, match=msg):
        qwen_pair.verbalizer().verbalize(bad, max_new_tokens=2)


def test_parse_explanation_statuses():
    assert parse_explanation("<explanation>\n a \"b\" c \n</explanation>junk") == ('a "b" c', "ok")
    assert parse_explanation("<explanation> open only") == ("<explanation> open only", "no_close")
    assert parse_explanation("plain text") == ("plain text", "no_open")


def test_site_search_rejects_duplicates(qwen_pair):
    c = qwen_pair.contract
    ids = [1, c.left_neighbor_id, c.injection_token_id, c.right_neighbor_id] * 2 + [5]
    with pytest.raises(Exception, match="2 marker"):
        find_injection_site(ids, c)


def test_checkpoint_sampling_defaults_do_not_leak_into_decoding(fixture_pairs, qwen_pair, tmp_path):
    """A generation_config.json with sampling defaults must not change a greedy decode."""
    import json
    import shutil

    from nla_probe import load_av

    d = tmp_path / "av"
    shutil.copytree(fixture_pairs["qwen2"][0], d)
    cfg = json.loads((d / "generation_config.json").read_text())
    cfg.update(do_sample=True, top_k=2, temperature=3.0, repetition_penalty=50.0)
    (d / "generation_config.json").write_text(json.dumps(cfg))
    v = np.random.default_rng(5).normal(size=(3, 64))
    ref = qwen_pair.verbalizer().verbalize(v, max_new_tokens=12)
    got = load_av(d).verbalizer().verbalize(v, max_new_tokens=12)
    assert [r.token_ids for r in ref] == [g.token_ids for g in got]
    assert any(len(set(r.token_ids)) < len(r.token_ids) for r in ref)  # repeats exist: a penalty would bite
