"""The toy build: a --smoke build runs end to end, resumes, and loads like a released pair."""

import json

import numpy as np
import polars as pl
import pytest

from nla_probe.nla.checkpoint import load_pair
from nla_probe.nla.contract import AV_TEMPLATE, read_sidecar
from nla_probe.toy import build
from nla_probe.toy.evaluate import derangement


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    rc = build.main(["--work-dir", str(root / "work"), "--out-dir", str(root / "out"), "--smoke",
                     "--families", "qwen_small"])
    assert rc == 0
    return root


def test_smoke_build_writes_a_loadable_pair(smoke):
    out = smoke / "out" / "toy" / "qwen_small"
    pair = load_pair(out / "av", out / "ar")
    c = read_sidecar(out / "av")
    assert c.role == "av" and c.av_template == AV_TEMPLATE and c.layer == 2
    info = json.loads((smoke / "work" / "qwen_small" / "data.json").read_text())
    assert c.injection_scale == pytest.approx(info["injection_scale"], abs=5e-4)  # stored to 3 decimals
    frame = pl.read_parquet(out / "eval.parquet")
    vec = np.asarray(frame["activation_vector"].to_numpy(), dtype=np.float32)
    assert vec.shape[1] == c.d_model == pair.ar.d_model
    # offsets index the source text; the token's characters are the text at those offsets
    for row in frame.head(10).iter_rows(named=True):
        assert row["source_text"][row["char_start"]:row["char_end"]] == row["token"]
    # the mean-norm injection scale is the mean L2 norm of the training activations
    train = pl.read_parquet(smoke / "work" / "qwen_small" / "acts_train.parquet")
    tv = np.asarray(train["activation_vector"].to_numpy(), dtype=np.float32)
    assert info["injection_scale"] == pytest.approx(float(np.linalg.norm(tv, axis=1).mean()), rel=1e-5)
    decodes = pair.verbalizer().verbalize(vec[:3], max_new_tokens=8)
    assert len(decodes) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == frame.height and 0 <= metrics["tag_rate"] <= 1


def test_rerun_skips_finished_stages(smoke, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="nla_probe.toy.build")
    build.main(["--work-dir", str(smoke / "work"), "--out-dir", str(smoke / "out"), "--smoke",
                "--families", "qwen_small", "--stages", "tokenizer,base,ar"])
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 3


def test_derangement_has_no_fixed_point():
    for n in (2, 3, 17, 1000):
        d = derangement(n, seed=n)
        assert sorted(d.tolist()) == list(range(n))
        assert not np.any(d == np.arange(n))


def test_schedule_warmup_then_cosine():
    from nla_probe.toy.train import Schedule

    s = Schedule(budget_s=110.0, lr=1.0, warmup_s=10.0, min_lr_frac=0.1)
    assert s.lr_at(5.0) == pytest.approx(0.5)
    assert s.lr_at(10.0) == pytest.approx(1.0)
    assert s.lr_at(60.0) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert s.lr_at(110.0) == pytest.approx(0.1)
    assert s.lr_at(500.0) == pytest.approx(0.1)


def test_run_budgeted_resumes_from_its_checkpoint(tmp_path):
    import torch

    from nla_probe.toy.train import Schedule, run_budgeted

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    seen, at_resume = [], []

    def loss_fn(step):
        seen.append(step)
        if step == 4:
            at_resume.append(model.weight.detach().clone())
        return ((model(x) - y) ** 2).mean()

    first = run_budgeted(model, loss_fn, Schedule(budget_s=60, lr=1e-2, max_steps=4), tmp_path / "s.pt")
    w_after_first = model.weight.detach().clone()
    fresh = torch.nn.Linear(3, 1)  # different weights: must be replaced by the checkpoint
    model = fresh
    second = run_budgeted(model, loss_fn, Schedule(budget_s=60, lr=1e-2, max_steps=7), tmp_path / "s.pt")
    assert first["step"] == 4 and second["step"] == 7
    assert seen == [0, 1, 2, 3, 4, 5, 6]  # the resumed run continues at step 4
    assert torch.equal(at_resume[0], w_after_first)  # the fresh weights were replaced by the checkpoint
    assert not torch.equal(model.weight, w_after_first)  # and trained further
    st = torch.load(tmp_path / "s.pt", weights_only=False)
    assert st["step"] == 7
