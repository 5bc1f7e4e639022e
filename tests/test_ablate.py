"""The ablation engine on a fixture pair: correctness against a direct pipeline, caching and sharing,
SIGKILL resume, full disk, shards, statistics, report and CLI errors."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import nla_probe.ablate.store as store_mod
from nla_probe.ablate.engine import ablate
from nla_probe.ablate.result import AblationResult, merge
from nla_probe.ablate.spec import Spec
from nla_probe.ablate.store import Store, StoreWriteError
from nla_probe.errors import InputError

N_ROWS, N_DOCS, D = 24, 8, 64
QUOTES = set("\"'\u201c\u201d\u2018\u2019`")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny fixture models run fastest on one thread (and do not fight other processes for cores)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def acts(tmp_path_factory):
    """24 random activations in 8 documents (3 each), d=64, as a parquet."""
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(N_ROWS, D)).astype(np.float32)
    path = tmp_path_factory.mktemp("acts") / "acts.parquet"
    pl.DataFrame({"doc_id": [f"doc{i // 3}" for i in range(N_ROWS)], "position": [10 + i for i in range(N_ROWS)]}
                 ).with_columns(pl.Series("activation_vector", vecs, dtype=pl.Array(pl.Float32, D))).write_parquet(path)
    return path, vecs


def roundtrip_spec(name="rt", n=N_ROWS, **extra):
    sampled = {"do_sample": True, "temperature": 3.0}
    return Spec.from_dict({
        "n": n, "seed": 1, "experiment": {"name": name, "kind": "roundtrip"},
        "sampling": {"max_new_tokens": 8}, "metrics": {"n_boot": 200},
        "conditions": [{"name": "greedy"}, {"name": "sampled", "sampling": sampled},
                       {"name": "sampled_ban", "sampling": sampled,
                        "hooks": [{"name": "ban_chars", "families": ["quotes"]}]}], **extra})


def redaction_spec(name="red"):
    return Spec.from_dict({
        "seed": 1, "experiment": {"name": name, "kind": "redaction"}, "sampling": {"max_new_tokens": 8},
        "metrics": {"n_boot": 200},
        "conditions": [{"name": "unedited"}, {"name": "identity", "transforms": [{"name": "identity"}]},
                       {"name": "prose", "transforms": [{"name": "prose_only"}]}]})


@pytest.fixture(scope="module")
def rt_result(qwen_pair, acts, tmp_path_factory):
    out = tmp_path_factory.mktemp("rt")
    return ablate(roundtrip_spec(), qwen_pair, acts[0], out=out, batch_size=8, report=False)


def test_roundtrip_matches_a_direct_decode_and_reconstruction(rt_result, qwen_pair, acts):
    from nla_probe.analysis.metrics import mse_nrm, variance_baseline

    _, vecs = acts
    f = rt_result.frame
    assert f.height == 3 * N_ROWS
    assert not f.select("condition", "sample_id").is_duplicated().any()
    greedy = f.filter(pl.col("condition") == "greedy").sort("sample_id")
    decodes = qwen_pair.verbalizer().verbalize(vecs, max_new_tokens=8, batch_size=8)
    assert greedy["explanation"].to_list() == [d.explanation for d in decodes]
    recon = qwen_pair.reconstructor().reconstruct(greedy["text"].to_list())
    expected = 1 - mse_nrm(recon, vecs) / variance_baseline(vecs)
    np.testing.assert_allclose(greedy["fve_nrm"].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert greedy["doc_id"].to_list() == [f"doc{i // 3}" for i in range(N_ROWS)]
    assert greedy["position"].to_list() == [10 + i for i in range(N_ROWS)]
    assert rt_result.info["denominators"]["rt"]["value"] == pytest.approx(variance_baseline(vecs), rel=1e-9)


def test_ban_condition_has_no_quotes_and_the_audit_agrees(rt_result):
    f = rt_result.frame
    sampled = f.filter(pl.col("condition") == "sampled")["explanation"].to_list()
    banned = f.filter(pl.col("condition") == "sampled_ban")
    assert any(set(t) & QUOTES for t in sampled), "the unconstrained samples should use quote characters"
    assert not any(set(t) & QUOTES for t in banned["explanation"].to_list())
    assert banned["n_banned"].to_list() == [0] * N_ROWS and not banned["leaked"].any()
    # same seed and chunk: the two sampled conditions only differ where a quote was drawn
    assert sum(a == b for a, b in zip(sampled, banned["explanation"].to_list())) >= 1


def test_summary_statistics_match_hand_computation(rt_result):
    from scipy.stats import wilcoxon

    f = rt_result.frame
    s = rt_result.summary()
    assert s["condition"].to_list() == ["greedy", "sampled", "sampled_ban"]
    base = f.filter(pl.col("condition") == "greedy").sort("sample_id")["fve_nrm"].to_numpy()
    ps = []
    for row in s.iter_rows(named=True):
        vals = f.filter(pl.col("condition") == row["condition"]).sort("sample_id")["fve_nrm"].to_numpy()
        assert row["estimate"] == pytest.approx(vals.mean(), rel=1e-12)
        assert row["ci_low"] <= row["estimate"] <= row["ci_high"]
        assert row["n"] == N_ROWS and row["n_clusters"] == N_DOCS
        if row["condition"] == "greedy":
            assert row["diff"] is None and row["p"] is None
            continue
        d = vals - base
        assert row["diff"] == pytest.approx(d.mean(), rel=1e-9)
        d = d[d != 0]
        assert row["p"] == pytest.approx(wilcoxon(d).pvalue, rel=1e-9)
        ps.append(row["p"])
    # Benjamini-Hochberg by hand over the two tests
    lo, hi = sorted(ps)
    expected = {hi: hi, lo: min(lo * 2, hi)}
    for row in s.filter(pl.col("p").is_not_null()).iter_rows(named=True):
        assert row["p_bh"] == pytest.approx(expected[row["p"]], rel=1e-9)


def test_shared_work_is_computed_once_and_reruns_reuse_everything(qwen_pair, acts, tmp_path):
    r1 = ablate(redaction_spec(), qwen_pair, acts[0], out=tmp_path, batch_size=8, report=False)
    c = r1.info["counts"]["red"]
    # one decode for three conditions; the identity edit and (quote-free texts) prose_only score the same
    assert c["decode"] == {"computed": N_ROWS, "reused": 0}
    texts = r1.frame.group_by("condition").agg(pl.col("text"))
    if len({tuple(t) for t in texts["text"].to_list()}) == 1:
        assert c["score"] == {"computed": N_ROWS, "reused": 2 * N_ROWS}
    # a second experiment whose greedy baseline is the same decode reuses it from the store
    r2 = ablate([redaction_spec(), roundtrip_spec(n=8)], qwen_pair, acts[0], out=tmp_path, batch_size=8, report=False)
    assert r2.info["counts"]["red"]["decode"] == {"computed": 0, "reused": N_ROWS}
    assert r2.info["counts"]["rt"]["decode"]["reused"] == 8  # greedy chunk 0 was decoded by "red"
    assert r2.scan("red").collect().equals(r1.frame)
    assert Store(tmp_path / "store").stats()["duplicates"] == 0


_KILL_SCRIPT = """
import sys, time
from nla_probe.ablate.engine import ablate
from nla_probe.ablate.spec import load_spec
ablate(load_spec(sys.argv[1]), (sys.argv[2], sys.argv[3]), sys.argv[4], out=sys.argv[5], batch_size=4,
       report=False, on_chunk=lambda *a: time.sleep(0.3))
"""


def _records(store_dir):
    return len(Store(store_dir)) if store_dir.is_dir() else 0


def test_sigkill_mid_run_resumes_to_the_uninterrupted_result(fixture_pairs, qwen_pair, acts, tmp_path):
    import torch

    av, ar = fixture_pairs["qwen2"]
    spec = roundtrip_spec()
    spec_path = spec.save(tmp_path / "rt.toml")
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(spec_path), str(av), str(ar), str(acts[0]),
                             str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _records(out / "store") < 6 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    before = Store(out / "store")
    total_decode_rows = 3 * N_ROWS
    assert 0 < before.count("decode") * 4 < total_decode_rows, "the kill should land mid-run"
    assert not (out / "results" / "rt.parquet").exists()

    resumed = ablate(spec, qwen_pair, acts[0], out=out, batch_size=4, report=False)
    reference = ablate(spec, qwen_pair, acts[0], out=tmp_path / "reference", batch_size=4, report=False)
    assert resumed.frame.equals(reference.frame)
    assert not resumed.frame.select("condition", "sample_id").is_duplicated().any()
    counts = resumed.info["counts"]["rt"]["decode"]
    assert counts["reused"] == 4 * before.count("decode")  # nothing finished was redone
    assert counts["computed"] == total_decode_rows - counts["reused"]
    assert Store(out / "store").stats()["duplicates"] == 0
    assert resumed.summary().equals(reference.summary())


def test_full_disk_mid_run_keeps_finished_rows_and_resumes(qwen_pair, acts, tmp_path, monkeypatch):
    real, calls = store_mod._write_all, []

    def fills_up(fd, blob):
        calls.append(1)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, blob)

    monkeypatch.setattr(store_mod, "_write_all", fills_up)
    with pytest.raises(StoreWriteError, match=r"disk is full\). 3 finished records are safely stored"):
        ablate(redaction_spec(), qwen_pair, acts[0], out=tmp_path / "a", batch_size=8, report=False)
    assert len(Store(tmp_path / "a" / "store")) == 3
    monkeypatch.setattr(store_mod, "_write_all", real)
    resumed = ablate(redaction_spec(), qwen_pair, acts[0], out=tmp_path / "a", batch_size=8, report=False)
    reference = ablate(redaction_spec(), qwen_pair, acts[0], out=tmp_path / "b", batch_size=8, report=False)
    assert resumed.frame.equals(reference.frame)
    c = resumed.info["counts"]["red"]
    assert c["decode"]["reused"] + c["score"]["reused"] >= 3 * 8  # the 3 stored chunk records were read back


def test_shards_merge_to_the_unsharded_result(qwen_pair, acts, tmp_path):
    import shutil

    spec = redaction_spec()
    whole = ablate(spec, qwen_pair, acts[0], out=tmp_path / "whole", batch_size=1, report=False)
    parts = []
    for i in range(2):
        # with one row per chunk, a shard's work has the same keys as the unsharded run's: all reused
        shutil.copytree(tmp_path / "whole" / "store", tmp_path / f"s{i}" / "store")
        parts.append(ablate(spec, qwen_pair, acts[0], out=tmp_path / f"s{i}", batch_size=1, shard=f"{i}/2",
                            report=False))
        assert parts[-1].info["counts"]["red"]["decode"]["computed"] == 0
    docs = [set(p.frame["doc_id"].unique().to_list()) for p in parts]
    assert docs[0] and docs[1] and not docs[0] & docs[1]  # whole documents per shard
    assert docs[0] | docs[1] == {f"doc{i}" for i in range(N_DOCS)}
    merged = merge([p.root for p in parts], tmp_path / "merged", report=False)
    key = ["condition", "sample_id"]
    assert merged.frame.sort(key).equals(whole.frame.sort(key))
    ms, ws = merged.summary(), whole.summary()
    for col in ("estimate", "ci_low", "ci_high", "diff", "p"):
        assert ms[col].fill_null(0.0).to_list() == pytest.approx(ws[col].fill_null(0.0).to_list(), rel=1e-9)
    with pytest.raises(InputError, match="distinct shards"):
        merge([parts[0].root, parts[0].root], tmp_path / "bad", report=False)


def test_save_load_and_report(rt_result, tmp_path):
    saved = rt_result.save(tmp_path / "copy")
    loaded = AblationResult.load(saved)
    assert loaded.frame.equals(rt_result.frame) and loaded.info == rt_result.info
    assert loaded.spec("rt") == roundtrip_spec()
    with pytest.raises(InputError, match="already holds results"):
        rt_result.save(saved)
    path = loaded.write_report()
    text = path.read_text()
    assert "## 1. rt" in text and "Var(v_nrm)" in text and "Δ vs greedy" in text
    prov = json.loads((tmp_path / "copy" / "provenance.json").read_text())
    assert prov["pair"]["av"]["fingerprint"] in text  # checkpoint identities: summary in the report, all in the sidecar
    assert not Path(prov["pair"]["av"]["path"]).is_absolute()
    for png in ("rt_fve_nrm.png", "rt_diff.png"):
        data = (tmp_path / "copy" / "figures" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(InputError, match="not an ablation output directory"):
        AblationResult.load(tmp_path / "nothing")


# ------------------------------------------------------------------------------------ CLI


def run_cli(capsys, *args):
    from nla_probe.cli import main

    old = sys.argv
    sys.argv = ["nla-probe", *[str(a) for a in args]]
    try:
        with pytest.raises(SystemExit) as e:
            main()
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_runs_specs_writes_report_and_rebuilds_it(fixture_pairs, acts, tmp_path, capsys):
    av, ar = fixture_pairs["qwen2"]
    out = tmp_path / "out"
    specs = [redaction_spec().save(tmp_path / "red.toml"),
             Spec.from_dict({**roundtrip_spec(name="ban").to_dict(), "conditions": [
                 {"name": "greedy"}, {"name": "ban", "hooks": [{"name": "ban_chars", "families": ["quotes"]}]}]}
             ).save(tmp_path / "ban.toml")]
    code, stdout, err = run_cli(capsys, "ablate", *specs, "--av", av, "--ar", ar, "--data", acts[0], "--out", out,
                                "--limit", 8, "--batch-size", 8)
    assert code == 0, err
    assert f"report: {out / 'report.md'}" in stdout and "red (fve_nrm" in stdout and "ban (fve_nrm" in stdout
    text = (out / "report.md").read_text()
    assert "## 1. red" in text and "## 2. ban" in text and "n = 8 activations from 3 documents" in text
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == ["ban_diff.png", "ban_fve_nrm.png",
                                                                      "red_diff.png", "red_fve_nrm.png"]
    tables = sorted((out / "tables").glob("*.csv"))
    assert len(tables) == 2
    code, stdout, err = run_cli(capsys, "report", out, "--to", tmp_path / "again")
    assert code == 0, err
    for t in tables:
        assert (tmp_path / "again" / "tables" / t.name).read_text() == t.read_text()


def test_cli_errors_are_one_clear_line_and_lose_nothing(fixture_pairs, acts, qwen_pair, tmp_path, capsys):
    av, ar = fixture_pairs["qwen2"]
    out = tmp_path / "out"
    ablate(redaction_spec(), qwen_pair, acts[0], out=out, batch_size=8, report=False)
    before = len(Store(out / "store"))
    bad = tmp_path / "bad.toml"
    bad.write_text(redaction_spec().to_toml().replace('name = "prose"', 'name = "prose"\nhooks = []'))
    code, _, err = run_cli(capsys, "ablate", bad, "--av", av, "--ar", ar, "--data", acts[0], "--out", out)
    assert code == 2 and f"{bad}: conditions[2] ('prose'): key(s) ['hooks'] are not used" in err
    code, _, err = run_cli(capsys, "ablate", "--av", tmp_path / "nope", "--ar", ar, "--data", acts[0], "--out", out)
    assert code == 2 and "nope" in err and "no such directory" in err
    wrong = tmp_path / "wide.parquet"
    pl.DataFrame({"doc_id": ["a", "b"]}).with_columns(pl.Series(
        "activation_vector", np.ones((2, 32), np.float32), dtype=pl.Array(pl.Float32, 32))).write_parquet(wrong)
    code, _, err = run_cli(capsys, "ablate", "--av", av, "--ar", ar, "--data", wrong, "--out", out)
    assert code == 2 and "expected d_model=64" in err and "found 32" in err
    assert len(Store(out / "store")) == before
    assert AblationResult.load(out).frame.height == 3 * N_ROWS  # earlier results untouched


def test_cli_without_toy_pair_says_how_to_get_it(monkeypatch, tmp_path, capsys):
    import nla_probe.defaults as defaults

    monkeypatch.setattr(defaults, "TOY_DIR", tmp_path / "toy")
    code, _, err = run_cli(capsys, "ablate", "--out", tmp_path / "o")
    assert code == 2 and "toy pair is not built" in err and "--av" in err


def test_cli_without_arguments_runs_the_default_suite_on_the_toy(fixture_pairs, acts, monkeypatch, tmp_path, capsys):
    import json
    import shutil

    import nla_probe.defaults as defaults

    fam = tmp_path / "toy" / defaults.TOY_FAMILY  # a stand-in toy: the fixture pair in the toy layout
    for side, src in zip(("av", "ar"), fixture_pairs["qwen2"]):
        shutil.copytree(src, fam / side)
    shutil.copyfile(acts[0], fam / "eval.parquet")
    (fam / "metrics.json").write_text(json.dumps({"denominator": 0.5, "denominator_source": "training set"}))
    monkeypatch.setattr(defaults, "TOY_DIR", tmp_path / "toy")
    monkeypatch.setattr(defaults, "DEFAULT_SUITE_LIMIT", 4)
    monkeypatch.setattr(defaults, "DEFAULT_ABLATE_OUT", tmp_path / "runs" / "ablate")
    code, stdout, err = run_cli(capsys, "ablate", "--batch-size", 4)
    assert code == 0, err
    out = tmp_path / "runs" / "ablate"
    assert f"report: {out / 'report.md'}" in stdout and "first 4 activations" in stdout
    result = AblationResult.load(out)
    assert result.experiments == list(defaults.DEFAULT_SUITE)
    assert {d["value"] for d in result.info["denominators"].values()} == {0.5}
    assert all(v["n_selected"] == 4 for v in result.info["selection"].values())
    text = (out / "report.md").read_text()
    assert "Var(v_nrm) = 0.5 (toy qwen_small: training set" in text
    for png in (out / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{png.name}" in text


def test_the_documented_example_kind_runs(qwen_pair, acts, tmp_path):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "ablations.md").read_text()
    block = text.split("## Adding a kind")[1].split("```python")[1].split("```")[0]
    exec(compile(block, "docs/ablations.md", "exec"), {})
    spec = Spec.from_dict({"n": 8, "experiment": {"name": "para", "kind": "paraphrase"},
                           "sampling": {"max_new_tokens": 4}, "params": {"rounds": 2},
                           "conditions": [{"name": "a"}, {"name": "b", "transforms": [{"name": "prose_only"}]}]})
    with pytest.raises(Exception, match=r"params.rounds: expected >= 1"):
        Spec.from_dict({**spec.to_dict(), "params": {"rounds": 0}})
    r = ablate(spec, qwen_pair, acts[0], out=tmp_path, batch_size=8, report=False)
    assert r.frame.height == 16
    assert r.frame["chars"].to_list() == [len(t) for t in r.frame["text"].to_list()]
    assert r.summary()["chars"].to_list() == pytest.approx(
        [r.frame.filter(pl.col("condition") == c)["chars"].mean() for c in ("a", "b")])


@pytest.mark.vllm
def test_vllm_backend_runs_through_the_engine_and_shares_scores(tmp_path):
    pytest.importorskip("vllm")
    from nla_probe.toy.fixtures import make_fixture_pair

    # vLLM's CPU attention needs a head size of at least 32: d_model 128 with 4 heads
    av, ar = make_fixture_pair(tmp_path / "pair", "gemma3", d_model=128)
    vecs = np.random.default_rng(0).normal(size=(8, 128)).astype(np.float32)
    data = (pl.DataFrame({"doc_id": [f"d{i // 2}" for i in range(8)]}), vecs)
    spec = Spec.from_dict({"experiment": {"name": "v", "kind": "roundtrip"}, "sampling": {"max_new_tokens": 8},
                           "metrics": {"n_boot": 100},
                           "conditions": [{"name": "free"},
                                          {"name": "ban", "hooks": [{"name": "ban_chars", "families": ["quotes"]}]}]})
    out = tmp_path / "out"
    vl = ablate(spec, (av, ar), data, out=out, backend="vllm", batch_size=8, report=False,
                backend_options={"enforce_eager": True, "gpu_memory_utilization": 0.15})
    assert vl.info["pair"]["backend"] == "vllm"
    assert vl.info["pair"]["backend_options"] == {"enforce_eager": True, "gpu_memory_utilization": 0.15}
    hf = ablate(spec, (av, ar), data, out=out, backend="hf", batch_size=8, report=False)
    assert hf.info["counts"]["v"]["decode"] == {"computed": 16, "reused": 0}  # the backend is part of the key
    same = [a == b for a, b in zip(vl.frame.sort("condition", "sample_id")["explanation"].to_list(),
                                   hf.frame.sort("condition", "sample_id")["explanation"].to_list())]
    assert sum(same) >= 12  # greedy parity between backends (float noise may flip a rare token)
    assert hf.info["counts"]["v"]["score"]["reused"] == 8 * sum(
        all(same[i:i + 8]) for i in (0, 8))  # identical chunk texts are scored once


def test_result_writer_streams_row_groups_and_checks_columns(tmp_path):
    import pyarrow.parquet as pq

    from nla_probe.ablate.engine import ResultWriter

    w = ResultWriter(tmp_path / "r.parquet", {"a": "Int64", "b": "Utf8"}, row_group=12)
    for k in range(10):
        w.write({"a": list(range(5 * k, 5 * k + 5)), "b": ["x"] * 5})
        assert not (tmp_path / "r.parquet").exists()  # only the temporary file until close
    w.close()
    f = pq.ParquetFile(tmp_path / "r.parquet")
    assert f.metadata.num_rows == 50 and f.metadata.num_row_groups == 4  # 15 + 15 + 15 + 5 rows
    assert pl.read_parquet(tmp_path / "r.parquet")["a"].to_list() == list(range(50))
    w = ResultWriter(tmp_path / "s.parquet", {"a": "Int64"})
    with pytest.raises(Exception, match=r"missing columns \['a'\], undeclared columns \['c'\]"):
        w.write({"c": [1]})


def test_inputs_variance_shards_and_errors():
    import hashlib

    from nla_probe.ablate.inputs import parse_shard, shard_of, streaming_variance_baseline
    from nla_probe.analysis.metrics import variance_baseline

    v = np.random.default_rng(3).normal(size=(9000, 16)).astype(np.float32) + 0.5
    assert streaming_variance_baseline(v) == pytest.approx(variance_baseline(v), rel=1e-9)
    assert shard_of("doc0", 4) == int(hashlib.sha256(b"doc0").hexdigest()[:16], 16) % 4
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None
    for bad in ("3/3", "1", "a/b", "1/2/3", "-1/2"):
        with pytest.raises(InputError, match="shard"):
            parse_shard(bad)
