import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from nla_probe.cli import app


def _run(*args):
    from typer.testing import CliRunner

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_help_does_not_import_torch():
    code = "import sys; from nla_probe.cli import app; import nla_probe; assert 'torch' not in sys.modules, 'torch'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([sys.executable, "-m", "nla_probe", "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "120"})
    assert out.returncode == 0 and "inspect" in out.stdout and "verbalize" in out.stdout


@pytest.mark.parametrize("arch", ["qwen2", "gemma3"])
def test_inspect_json(fixture_pairs, arch):
    for d in fixture_pairs[arch]:
        r = _run("inspect", d, "--json")
        assert r.exit_code == 0, r.output
        info = json.loads(r.output)
        assert info["d_model"] == 64 and info["layer"] == 2


def test_inspect_refuses_broken_with_message(fixture_pairs, tmp_path):
    import shutil

    import yaml

    d = tmp_path / "av"
    shutil.copytree(fixture_pairs["qwen2"][0], d)
    raw = yaml.safe_load((d / "nla_meta.yaml").read_text())
    raw["tokens"]["injection_token_id"] += 1
    (d / "nla_meta.yaml").write_text(yaml.dump(raw))
    out = subprocess.run([sys.executable, "-m", "nla_probe", "inspect", str(d)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "nla_meta.yaml" in out.stderr and "tokens.injection_token_id" in out.stderr


@pytest.mark.parametrize("arch", ["qwen2", "gemma3"])
def test_verbalize_then_reconstruct_end_to_end(fixture_pairs, tmp_path, arch):
    av, ar = fixture_pairs[arch]
    vecs = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    data = tmp_path / "acts.parquet"
    pl.DataFrame({"doc_id": [f"d{i}" for i in range(5)], "position": list(range(5))}).with_columns(
        pl.Series("activation_vector", vecs, dtype=pl.Array(pl.Float32, 64))).write_parquet(data)
    r = _run("verbalize", "--av", av, "--data", data, "--out", tmp_path / "dec.parquet", "--max-new-tokens", 5,
             "--limit", 4)
    assert r.exit_code == 0, r.output
    dec = pl.read_parquet(tmp_path / "dec.parquet")
    assert dec.height == 4 and dec["doc_id"].to_list() == ["d0", "d1", "d2", "d3"]
    assert set(dec["tag_status"]) <= {"ok", "no_close", "no_open"}
    data4 = tmp_path / "acts4.parquet"  # one gold vector per decoded text
    pl.read_parquet(data).head(4).write_parquet(data4)
    r = _run("reconstruct", "--ar", ar, "--texts", tmp_path / "dec.parquet", "--data", data4,
             "--out", tmp_path / "rec.jsonl", "--on-overflow", "truncate", "--denominator", "0.5")
    assert r.exit_code == 0, r.output
    rec = pl.read_ndjson(tmp_path / "rec.jsonl")
    cos = rec["cos"].to_numpy()
    recon = np.array(rec["reconstruction"].to_list())
    expected = (recon * vecs[:4]).sum(1) / np.linalg.norm(recon, axis=1) / np.linalg.norm(vecs[:4], axis=1)
    np.testing.assert_allclose(cos, expected, atol=1e-5)
    np.testing.assert_allclose(rec["fve_nrm"].to_numpy(), 1 - 2 * (1 - expected) / 0.5, atol=1e-4)



def test_default_denominator_is_the_toy_constant_only_for_the_toy_pair(tmp_path):
    """On the embedded toy pair (its paths given explicitly) ``reconstruct`` and ``ablate`` default to
    the toy's training constant; with a copy of the AR elsewhere ``reconstruct`` uses Var(v_nrm) of
    the rows given, computed here by hand (rows scaled to norm sqrt(d), mean squared deviation from
    the mean row). Checked against 1 - mse_nrm / B and the printed source."""
    import shutil

    from nla_probe import defaults

    if not defaults.toy_pair_present():
        pytest.skip("toy pair not built")
    data = tmp_path / "e6.parquet"
    pl.read_parquet(defaults.toy_eval_path()).head(6).write_parquet(data)
    gold = np.array(pl.read_parquet(data)["activation_vector"].to_list(), dtype=np.float64)
    vn = gold / np.linalg.norm(gold, axis=1, keepdims=True) * np.sqrt(gold.shape[1])
    rows_b = float(((vn - vn.mean(axis=0)) ** 2).mean())
    toy_av, toy_ar = defaults.toy_pair_dirs()
    toy_b = json.loads((defaults.TOY_DIR / defaults.TOY_FAMILY / "metrics.json").read_text())["denominator"]
    assert abs(toy_b - rows_b) > 1e-3  # the two defaults differ on this subset
    copy = tmp_path / "ar_copy"
    shutil.copytree(toy_ar, copy)
    for ar, b, source in ((toy_ar, toy_b, "training activations"), (copy, rows_b, "6 rows of --data")):
        r = _run("reconstruct", "--ar", ar, "--texts", data, "--data", data, "--out", tmp_path / "r.parquet")
        assert r.exit_code == 0, r.output
        assert source in r.output
        rec = pl.read_parquet(tmp_path / "r.parquet")
        np.testing.assert_allclose(rec["fve_nrm"].to_numpy(), 1 - rec["mse_nrm"].to_numpy() / b, rtol=1e-6)
    r = _run("ablate", defaults.ABLATIONS_DIR / "quote_surgery.toml", "--av", toy_av, "--ar", toy_ar,
             "--data", data, "--limit", 2, "--out", tmp_path / "run", "--no-report")
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "run" / "results" / "info.json").read_text())
    assert info["denominators"]["quote_surgery"]["value"] == toy_b


def test_extract_cli(fixture_pairs, tmp_path):
    texts = tmp_path / "docs.jsonl"
    texts.write_text("\n".join(json.dumps({"doc_id": f"x{i}", "text": "words and more words " * 30}) for i in range(2)))
    r = _run("extract", "--model", fixture_pairs["qwen2"][0], "--texts", texts, "--layer", 2, "--out",
             tmp_path / "a.parquet", "--n-per-doc", 3)
    assert r.exit_code == 0, r.output
    f = pl.read_parquet(tmp_path / "a.parquet")
    assert f.height == 6 and set(f["doc_id"]) == {"x0", "x1"}
