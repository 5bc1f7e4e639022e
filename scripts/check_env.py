"""Report how a Python environment differs from the end state ``scripts/setup.sh`` builds.

Usage: ``python scripts/check_env.py --torch 2.13.0 [--vllm]``.  Prints one line per problem and
exits 1 when there is any, 0 (printing nothing) when the environment is in its end state:

* torch installed at the pinned version (a local build tag such as ``+cpu`` is allowed);
* nla-probe installed, with its test extras (pytest, hypothesis);
* torchvision, torchaudio and torchcodec absent: nla-probe never uses them, and a build that does
  not match the pinned torch breaks every model load (``operator torchvision::nms does not exist``);
* with ``--vllm``: ``import vllm`` works.

Only package metadata is read, except for the vLLM check, which imports vllm.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import sys

#: Packages that must not be installed next to the pinned torch.
FORBIDDEN = ("torchvision", "torchaudio", "torchcodec")
REQUIRED = ("nla-probe", "pytest", "hypothesis")


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def problems(torch_pin: str, want_vllm: bool) -> list[str]:
    """One line per difference from the end state (empty when there is none)."""
    out = []
    torch = _version("torch")
    if torch is None or torch.split("+")[0] != torch_pin:
        out.append(f"torch: expected {torch_pin}, found {torch or 'not installed'}")
    out += [f"{name}: expected installed, found not installed" for name in REQUIRED if _version(name) is None]
    out += [f"{name}: expected absent, found {_version(name)} (it breaks model loading with the pinned torch)"
            for name in FORBIDDEN if _version(name) is not None]
    if want_vllm:
        try:
            import vllm  # noqa: F401
        except Exception as e:  # noqa: BLE001 - any import failure is the finding
            out.append(f"vllm: expected importable, found {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch", required=True, help="pinned torch version, e.g. 2.13.0")
    ap.add_argument("--vllm", action="store_true", help="also require an importable vllm")
    args = ap.parse_args(argv)
    found = problems(args.torch, args.vllm)
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
