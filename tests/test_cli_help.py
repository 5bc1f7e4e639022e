"""What ``--help`` shows: no type tag on flags, every command in the same (typer) style, stated
defaults, and no heavy import just to print help."""

import inspect
import json
import subprocess
import sys

import pytest
import typer

from nla_probe.cli import app


def _commands():
    """Every command path of the app, e.g. ("ablate",), ("toy", "build")."""
    root = typer.main.get_command(app)
    out = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, (*path, name))
        else:
            out.append(path)

    walk(root, ())
    return out


def _help(*path):
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"}, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def test_the_app_has_the_documented_commands():
    names = {" ".join(p) for p in _commands()}
    assert {"inspect", "verbalize", "reconstruct", "extract", "ablate", "report", "merge", "toy build"} <= names


@pytest.mark.parametrize("path", [(), *_commands()], ids=lambda p: " ".join(p) or "nla-probe")
def test_no_bool_type_tag_on_any_flag(path):
    text = _help(*path)
    assert "<bool>" not in text
    assert "--help" in text and "Show this message and exit." in text


def test_options_that_take_a_value_keep_their_type():
    text = _help("ablate")
    assert "--limit" in text and "<int>" in text and "<path>" in text


def test_toy_build_help_is_the_typer_style_with_every_build_option():
    from nla_probe.toy.build_options import OPTION_HELP

    text = _help("toy", "build")
    assert "╭─ Options" in text and "usage:" not in text  # rich panel, not argparse
    for key in OPTION_HELP:
        assert f"--{key.replace('_', '-')}" in text, key


def test_toy_build_passes_its_options_to_the_build(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import nla_probe.toy.build as build_mod

    seen = {}
    monkeypatch.setattr(build_mod, "build", lambda **kw: seen.update(kw) or 0)
    r = CliRunner().invoke(app, ["toy", "build", "--smoke", "--work-dir", str(tmp_path), "--stages", "base,data",
                                 "--families", "qwen_tiny", "--budget-scale", "0.5", "--best-of-n", "2"])
    assert r.exit_code == 0, r.output
    assert seen == {"work_dir": tmp_path, "out_dir": None, "corpus": None, "smoke": True, "families": "qwen_tiny",
                    "stages": "base,data", "threads": None, "no_distilled": False, "budget_scale": 0.5,
                    "best_of_n": 2}


def test_reconstruct_and_specs_share_the_overflow_default():
    from nla_probe.ablate.spec import MetricsSpec
    from nla_probe.cli.core import reconstruct

    cli_default = inspect.signature(reconstruct).parameters["on_overflow"].default
    assert cli_default == MetricsSpec().on_overflow == "truncate"
    text = _help("reconstruct")
    assert "[default: truncate]" in text and "same default as ablation specs" in text


def test_ablate_threads_states_its_default():
    text = " ".join(_help("ablate").split())
    assert "--threads" in text and "default: (torch's own: one per physical CPU core)" in text


def test_help_of_every_command_imports_no_heavy_module():
    """``report --help`` (and every other help) must not import polars, plotnine, numpy or torch."""
    code = (
        "import json, sys\n"
        "from nla_probe.cli import app\n"
        "paths = json.loads(sys.argv[1])\n"
        "heavy = ('polars', 'plotnine', 'numpy', 'torch', 'matplotlib', 'transformers', 'scipy')\n"
        "bad = {}\n"
        "for p in paths:\n"
        "    try:\n"
        "        app([*p, '--help'], standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    loaded = [m for m in heavy if m in sys.modules]\n"
        "    if loaded:\n"
        "        bad[' '.join(p)] = loaded\n"
        "print(json.dumps(bad))\n"
    )
    paths = [list(p) for p in _commands()]
    out = subprocess.run([sys.executable, "-c", code, json.dumps(paths)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}
