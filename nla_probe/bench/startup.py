"""Start-up cost: ``import nla_probe`` and ``nla-probe --help``, each in a fresh interpreter.

* ``import nla_probe`` — seconds of the import statement alone, timed inside a fresh
  ``python -c`` (interpreter start-up excluded); best of :data:`REPEATS`.
* ``nla-probe --help`` — wall seconds of the whole command ``python -m nla_probe --help``
  (interpreter start-up included, as a user sees it); best of :data:`REPEATS`.
* ``python -c pass`` — wall seconds of a bare interpreter, for reference.
* :data:`HEAVY_MODULES` found in ``sys.modules`` after ``import nla_probe`` (should be none: they
  load only when a model, a frame or a figure is used).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

REPEATS = 3
#: Modules that ``import nla_probe`` must not load.
HEAVY_MODULES = ("torch", "transformers", "plotnine", "matplotlib", "polars", "pandas", "scipy", "numpy",
                 "pyarrow", "vllm", "rich", "typer")

_IMPORT_CODE = ("import json, sys, time; t = time.perf_counter(); import nla_probe; "
                "dt = time.perf_counter() - t; "
                f"print(json.dumps([dt, [m for m in {HEAVY_MODULES!r} if m in sys.modules]]))")


def _wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, env={**os.environ, "COLUMNS": "120"})
    return time.perf_counter() - t


def startup_times(repeats: int = REPEATS) -> dict:
    """``{"import_s", "help_s", "python_s", "heavy_after_import", "repeats"}`` (module doc)."""
    imports, heavy = [], []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _IMPORT_CODE], capture_output=True, text=True, check=True)
        dt, heavy = json.loads(out.stdout.strip().splitlines()[-1])
        imports.append(float(dt))
    helps = [_wall([sys.executable, "-m", "nla_probe", "--help"]) for _ in range(repeats)]
    bare = [_wall([sys.executable, "-c", "pass"]) for _ in range(repeats)]
    return {"import_s": min(imports), "help_s": min(helps), "python_s": min(bare), "heavy_after_import": heavy,
            "repeats": repeats}


def format_startup(t: dict) -> str:
    heavy = ", ".join(t["heavy_after_import"]) or "none"
    return (f"start-up (fresh interpreters, best of {t['repeats']}): import nla_probe {t['import_s']:.3f} s "
            f"(import statement only; heavy modules loaded: {heavy}); nla-probe --help {t['help_s']:.2f} s "
            f"(whole command; a bare python -c pass takes {t['python_s']:.2f} s)")
