"""The toy build: a --smoke build runs end to end, resumes, and loads like a released pair."""

import json

import numpy as np
import polars as pl
import pytest

from nla_probe.checkpoint import load_pair
from nla_probe.contract import AV_TEMPLATE, read_sidecar
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
    assert c.injection_scale == pytest.approx(info["injection_scale"], rel=1e-3)
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
