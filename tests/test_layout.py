"""The package layout: public names stay importable, layers and cycles are checked by import-linter."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import nla_probe

ROOT = Path(__file__).resolve().parent.parent

# The top-level API of the 0.1 release (README, docs/quickstart.md); written out here so that a name
# that disappears from nla_probe.__all__ fails this test.  New names may be added.
DOCUMENTED = [
    "AblationResult", "BanChars", "Compose", "Contract", "Decode", "LengthPenalty", "MaxNewTokens", "MinNewTokens",
    "NLAPair", "Reconstructor", "Spec", "Verbalizer", "ablate", "copy_detection", "extract_activations",
    "extract_layers", "find_spans", "get_transform", "list_experiments", "list_families", "list_hooks",
    "list_transforms", "load_ar", "load_av", "load_pair", "load_spec", "metrics", "parse_explanation",
    "read_activations", "read_sidecar", "redaction_grid", "register_transform", "score_variants",
    "span_attribution", "write_activations",
]
SUBPACKAGES = ["nla", "text", "hooks", "surgery", "copying", "analysis", "ablate", "experiments", "cli", "bench", "toy"]


def test_documented_names_are_exported_and_resolve():
    missing = sorted(set(DOCUMENTED) - set(nla_probe.__all__))
    assert not missing, f"public names no longer exported: {missing}"
    for name in nla_probe.__all__:
        assert getattr(nla_probe, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        nla_probe.not_a_name  # noqa: B018


def test_metrics_module_and_documented_import_forms():
    from nla_probe import metrics
    from nla_probe.analysis import metrics as analysis_metrics

    assert metrics is analysis_metrics
    assert metrics.fve_nrm(metrics.mse_nrm([[1.0, 0.0]], [[1.0, 0.0]]), denominator=0.5).tolist() == [1.0]
    from nla_probe.hooks import BanChars, list_hooks
    from nla_probe.surgery import ProseOnly, SpansOnly, list_transforms

    assert {"ban_chars", "length_penalty"} <= set(list_hooks()) and BanChars.name == "ban_chars"
    assert {"spans_only", "prose_only", "compose"} <= set(list_transforms())
    assert ProseOnly()('a "b" c') == "a  c" and SpansOnly()('a "b" c') == '"b"'


def test_every_subpackage_states_what_it_holds_and_may_import():
    for name in SUBPACKAGES:
        mod = importlib.import_module(f"nla_probe.{name}")
        doc = mod.__doc__ or ""
        assert len(doc.split()) > 10, f"nla_probe.{name} has no docstring saying what it holds"
        if name not in ("cli", "toy"):
            assert "May import" in doc, f"nla_probe.{name}: docstring does not say what it may import"


def test_modules_stay_small():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
             for p in (ROOT / "nla_probe").rglob("*.py")}
    big = {p: n for p, n in sizes.items() if n > 520}
    assert not big, f"modules over ~500 lines: {big}"


def test_import_linter_contracts_hold():
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed (it comes with the test extra)")
    proc = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "3 kept, 0 broken" in out, out
