"""scripts/check_env.py: the end state scripts/setup.sh checks and repairs towards."""

import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "scripts" / "check_env.py"
TORCH = md.version("torch").split("+")[0]


def _fake_dist(site: Path, name: str, version: str) -> None:
    d = site / f"{name}-{version}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def _run(*args: str, path: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin"}
    if path is not None:
        env["PYTHONPATH"] = str(path)
    return subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True, env=env, timeout=60,
                          check=False)


def test_this_environment_is_in_the_end_state():
    r = _run("--torch", TORCH)
    assert (r.returncode, r.stdout) == (0, "")


def test_a_leftover_torchvision_is_reported(tmp_path):
    """The state an interrupted vLLM install leaves: vllm imports but torchvision is still there."""
    _fake_dist(tmp_path, "torchvision", "0.99.0")
    r = _run("--torch", TORCH, path=tmp_path)
    assert r.returncode == 1
    want = "torchvision: expected absent, found 0.99.0 (it breaks model loading with the pinned torch)"
    assert r.stdout.splitlines() == [want]


def test_torch_off_its_pin_is_reported():
    r = _run("--torch", "0.0.1")
    assert r.returncode == 1
    assert r.stdout.startswith(f"torch: expected 0.0.1, found {md.version('torch')}")


def test_setup_script_parses_and_checks_the_end_state():
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "setup.sh")], check=False).returncode == 0
    text = (ROOT / "scripts" / "setup.sh").read_text()
    # the repair steps run whatever imports: the uninstall is unconditional and the end state is verified
    assert "\npip uninstall --quiet -y torchvision torchaudio torchcodec" in text
    assert 'python scripts/check_env.py "${CHECK_ARGS[@]}"' in text
