"""Batched AR scoring equals scoring each text alone (``batching="exact"``), in float32 and bfloat16.

Reference: each text scored on its own (one forward pass, the head on one row) — what the
official client does one text at a time.  ``exact`` batches must reproduce it bit for bit;
``fast`` (right-padded batches) must stay within the per-row noise stated in ``docs/metrics.md``.
Texts: the toy pair's held-out explanations (when present) and synthetic explanations of 60–400
characters on the random-weight fixture pairs, so batches mix lengths and hold equal-length groups.
"""

import numpy as np
import pytest

from nla_probe.analysis.metrics import mse_nrm
from nla_probe.defaults import toy_eval_path, toy_pair_dirs, toy_pair_present
from nla_probe.errors import InputError
from nla_probe.nla.checkpoint import load_ar
from nla_probe.nla.generation import parse_explanation

#: Largest per-row |Δ mse_nrm| of ``fast`` vs alone measured on CPU bfloat16 (docs/metrics.md: 4.2e-3).
FAST_BF16_BOUND = 5e-3


def _synthetic(n):
    from nla_probe.toy.fixtures import FIXTURE_TEXTS

    rng = np.random.default_rng(0)
    words = " ".join(FIXTURE_TEXTS).split()
    return [" ".join(rng.choice(words, size=int(rng.integers(8, 60)))) for _ in range(n)]


def _cases(fixture_pairs):
    rng = np.random.default_rng(1)
    out = []
    if toy_pair_present():
        import polars as pl

        df = pl.read_parquet(toy_eval_path(), columns=["explanation", "activation_vector"]).head(96)
        texts = [parse_explanation(t)[0] for t in df["explanation"].to_list()]  # the AR reads inside the tags
        out.append(("toy", toy_pair_dirs()[1], texts,
                    np.stack(df["activation_vector"].to_list()).astype(np.float32)))
    texts = _synthetic(64)
    for arch in ("qwen2", "gemma3"):
        out.append((arch, fixture_pairs[arch][1], texts, rng.normal(size=(64, 64)).astype(np.float32)))
    return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_exact_batches_equal_each_text_alone(fixture_pairs, dtype):
    for name, ar_dir, texts, gold in _cases(fixture_pairs):
        ar = load_ar(ar_dir, dtype=dtype)
        assert ar.batching == "exact"
        lengths = [len(x) for x in ar.encode(texts)]
        assert len(set(lengths)) > 3 and len(set(lengths)) < len(texts), "mixed lengths with equal-length groups"
        alone = np.stack([ar.reconstruct([t], batching="fast")[0] for t in texts])
        for bs in (8, 64):
            got = ar.reconstruct(texts, batch_size=bs)
            assert np.array_equal(got, alone), f"{name} {dtype} batch {bs}: rows {np.flatnonzero((got != alone).any(1))}"
        frame = ar.score(texts, gold, denominator=0.5, batch_size=64)
        assert np.array_equal(frame["mse_nrm"].to_numpy(), mse_nrm(alone, gold, ar.contract.mse_scale))
        fast = ar.reconstruct(texts, batch_size=64, batching="fast")
        diff = np.abs(mse_nrm(fast, gold, ar.contract.mse_scale) - mse_nrm(alone, gold, ar.contract.mse_scale))
        assert diff.max() <= (FAST_BF16_BOUND if dtype == "bfloat16" else 1e-6), (name, dtype, diff.max())


def test_batching_mode_is_checked(fixture_pairs):
    ar = load_ar(fixture_pairs["qwen2"][1])
    with pytest.raises(InputError, match=r"batching: expected one of \('exact', 'fast'\), found 'quick'"):
        ar.reconstruct(["a"], batching="quick")
    ar.batching = "fast"
    assert ar.reconstruct_detailed(["a", "bb"]).vectors.shape == (2, 64)
