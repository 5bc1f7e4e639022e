"""The helpers of ``nla-probe bench``: start-up, alternating best-of timing, scaling arithmetic.

No test here times anything against a threshold: speed targets live in ``nla-probe bench``.
"""

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from nla_probe.bench.common import best_alternating, timed
from nla_probe.bench.scaling import _tiled, format_row, growth
from nla_probe.bench.startup import HEAVY_MODULES, format_startup


def test_import_nla_probe_loads_no_heavy_module():
    code = ("import sys; import nla_probe; "
            f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
    # the check itself can fail: importing a heavy module is seen
    out = subprocess.run([sys.executable, "-c", code.replace("import nla_probe", "import nla_probe, numpy")],
                         capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "numpy"


def test_format_startup_states_what_was_timed():
    line = format_startup({"import_s": 0.0042, "help_s": 0.31, "python_s": 0.02, "heavy_after_import": [],
                           "repeats": 3})
    assert line == ("start-up (fresh interpreters, best of 3): import nla_probe 0.004 s (import statement only; "
                    "heavy modules loaded: none); nla-probe --help 0.31 s (whole command; a bare python -c pass "
                    "takes 0.02 s)")


def test_best_alternating_keeps_the_best_rate_and_alternates_order():
    calls = []
    times = {"a": iter([2.0, 1.0, 4.0]), "b": iter([2.0, 4.0, 5.0])}

    def make(label):
        def f():
            calls.append(label)
            return 10.0, next(times[label])
        return f

    rates = best_alternating({"a": make("a"), "b": make("b")}, 3)
    assert rates == {"a": 10.0, "b": 5.0}  # best = least seconds: a 1.0 s, b 2.0 s
    assert calls == ["a", "b", "b", "a", "a", "b"]


def test_timed_note_names_warmup_repeats_and_threads():
    assert timed(warmup="none", repeats=2, what="x", threads=3) == \
        "timed: x; warm-up none; best of 2 alternating runs; torch threads 3"


def test_growth_from_smallest_to_largest():
    rows = [{"n": 400, "per_unit_s": 0.10, "peak_rss_mib": 760.0},
            {"n": 100, "per_unit_s": 0.20, "peak_rss_mib": 700.0},
            {"n": 1600, "per_unit_s": 0.09, "peak_rss_mib": 790.0}]
    g = growth(rows)
    assert g["cost_ratio"] == pytest.approx(0.45)  # 0.09 / 0.20
    assert g["rss_growth_mib"] == pytest.approx(90.0)  # 790 - 700
    assert g["rss_per_1k_mib"] == pytest.approx(60.0)  # 90 MiB over 1,500 more activations


def test_format_row_per_activation_and_per_thousand_pairs():
    a = {"workload": "default_suite", "n": 400, "unit": "activation", "run_s": 40.0, "per_unit_s": 0.1,
         "peak_rss_mib": 757.4, "base_rss_mib": 522.0}
    assert format_row(a) == ("default_suite: N=400 activations  run 40.0 s  0.100 s/activation  peak RSS 757 MiB "
                             "(before the work 522 MiB)")
    c = {"workload": "copy_detection", "n": 99981, "unit": "pair", "run_s": 30.0, "per_unit_s": 3e-4,
         "peak_rss_mib": 140.0, "base_rss_mib": 51.0}
    assert "N=99,981 pairs  run 30.0 s  0.300 s/1k pairs" in format_row(c)


def test_tiled_rows_are_renamed_and_scaled_past_the_end():
    frame = pl.DataFrame({"doc_id": ["x", "y"], "position": [3, 4]})
    vecs = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    f, v = _tiled(frame, vecs, 5)
    assert f["doc_id"].to_list() == ["x", "y", "x#1", "y#1", "x#2"]
    assert f["position"].to_list() == [3, 4, 3, 4, 3]
    np.testing.assert_allclose(v, [[1, 2], [3, 4], [1.001, 2.002], [3.003, 4.004], [1.002, 2.004]], rtol=1e-6)
    f, v = _tiled(frame, vecs, 1)
    assert f.height == 1 and v.shape == (1, 2)


def test_run_scaling_runs_each_size_in_a_child_process():
    from nla_probe.bench.scaling import run_scaling

    lines = []
    res = run_scaling((), (441, 882), echo=lines.append)
    rows = res["copy_detection"]
    assert [r["n"] for r in rows] == [441, 882]  # 21 and 42 explanations x (1 + 20 nulls)
    assert all(r["unit"] == "pair" and r["peak_rss_mib"] >= r["base_rss_mib"] > 0 for r in rows)
    assert res["default_suite"] == [] and set(res["growth"]) == {"copy_detection"}
    assert lines[0].startswith("copy_detection: N=441 pairs") and lines[-1].startswith("copy_detection: per-unit")
    expected = r"^scaling child copy 210 failed: .*InputError: null sources: .*expected at least n_null=20$"
    with pytest.raises(RuntimeError, match=expected):
        run_scaling((), (210,), echo=lines.append)  # 10 explanations cannot have 20 null documents each


def test_grammar_walk_masks_are_real_and_the_apply_kernel_honours_them():
    """The mask-cost benchmark walks a grammar over a synthetic vocabulary and applies the masks it
    saw: inside a span a lone quote is allowed and a newline is not, and applying a mask sets
    exactly the disallowed logits to -inf (bits decoded by hand here)."""
    xgr = pytest.importorskip("xgrammar")
    import torch

    from nla_probe.bench.grammar import WALK_TEXTS, greedy_tokenize, synthetic_vocab, walk_masks
    from nla_probe.hooks import Grammar

    v = 1024
    vocab = [b"<|stop|>"] + synthetic_vocab(v)[1:]
    assert len(set(vocab)) == v and all(bytes([b]) in vocab for b in range(1, 256))
    index = {t: i for i, t in enumerate(vocab) if i}
    text = WALK_TEXTS["spans_only"].encode("utf-8")
    ids = greedy_tokenize(index, text)
    assert b"".join(vocab[i] for i in ids) == text
    info = xgr.TokenizerInfo(vocab, vocab_type=xgr.VocabType.RAW, vocab_size=v, stop_token_ids=[0])
    cg = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False).compile_grammar(
        Grammar(builtin="spans_only").ebnf_text())
    _, masks = walk_masks(cg, ids, v)
    assert len(masks) == len(ids)

    def allowed(mask, tok):
        return bool((int(mask[tok // 32]) >> (tok % 32)) & 1)

    inside = text.index(b'"The') + 2  # byte offset inside the first span
    pos = next(k for k in range(len(ids)) if len(b"".join(vocab[i] for i in ids[:k])) >= inside)
    assert allowed(masks[pos], index[b'"']) and not allowed(masks[pos], index[b"\n"])
    logits = torch.zeros(1, v)
    xgr.apply_token_bitmask_inplace(logits, masks[pos].unsqueeze(0))
    expect = torch.tensor([0.0 if allowed(masks[pos], t) else -float("inf") for t in range(v)])
    assert torch.equal(logits[0], expect)
    with pytest.raises(RuntimeError, match="was rejected"):
        walk_masks(cg, [index[b"x"]], v)  # an explanation cannot start with "x"


@pytest.mark.parametrize("flag,mode", [(None, "multi-process"), ("1", "multi-process"), ("0", "in-process"),
                                       ("00", "in-process")])
def test_vllm_mode_line_follows_vllms_reading_of_the_flag(monkeypatch, flag, mode):
    from nla_probe.bench.runner import vllm_mode_line

    if flag is None:
        monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    else:
        monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", flag)
    line = vllm_mode_line()
    assert line.startswith(f"vLLM engine: {mode} ") and f"={flag if flag is not None else 'unset'})" in line
