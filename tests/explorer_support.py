"""Synthetic ablation run directories (no model) and a small Chromium DevTools client, for the
explorer tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl

from nla_probe.ablate.result import BASE_COLUMNS
from nla_probe.ablate.spec import Spec
from nla_probe.surgery.functional import prose_only

DENOM = 0.5


def redaction_spec(name: str, conditions: list[str], n_boot: int = 200) -> Spec:
    """A ``redaction`` spec whose first condition is unedited and the others are ``prose_only``."""
    conds = [{"name": conditions[0]}] + [{"name": c, "transforms": [{"name": "prose_only"}]} for c in conditions[1:]]
    return Spec.from_dict({"schema_version": 1, "experiment": {"name": name, "kind": "redaction"},
                           "metrics": {"n_boot": n_boot}, "conditions": conds})


def make_run(root: Path, explanations: list[str], fve: np.ndarray, conditions: list[str], *,
             docs: list[str] | None = None, name: str = "synthetic", attribution: pl.DataFrame | None = None,
             distinct: bool = False) -> Path:
    """A run directory AblationResult.load reads: one redaction experiment, ``fve[c, i]`` per
    condition ``c`` and activation ``i``; edited conditions score ``prose_only(explanation)``, or
    (``distinct``) a text of their own per condition, as the decodes of ban conditions are."""
    n = len(explanations)
    docs = docs if docs is not None else [f"doc{i // 2}" for i in range(n)]
    spec = redaction_spec(name, conditions)
    cols: dict[str, list] = {k: [] for k in [*BASE_COLUMNS, "n_spans", "span_share", "chars", "edited"]}
    for c, cond in enumerate(conditions):
        for i, e in enumerate(explanations):
            text = e if c == 0 else f"{cond}: {e}" if distinct else prose_only(e)
            f = float(fve[c, i])
            row = {"experiment": name, "condition": cond, "sample_id": i, "doc_id": docs[i], "position": i % 50,
                   "explanation": e, "text": text, "tag_status": "ok", "n_tokens": 10, "finish_reason": "stop",
                   "ar_tokens": 20, "overflow": "", "mse_nrm": (1 - f) * DENOM, "cos": 1 - (1 - f) * DENOM / 2,
                   "fve_nrm": f, "n_spans": 1, "span_share": 0.1, "chars": len(text), "edited": text != e}
            for k, v in cols.items():
                v.append(row[k])
    (root / "results").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(cols).write_parquet(root / "results" / f"{name}.parquet")
    if attribution is not None:
        attribution.write_parquet(root / "results" / "attribution.parquet")
    info = {"format": "nla-probe-ablation", "format_version": 1, "experiments": [name],
            "specs": {name: spec.to_dict()}, "spec_hashes": {name: spec.content_hash()},
            "pair": {"av": {"path": "/nowhere/av", "fingerprint": "x"},
                     "ar": {"path": "/nowhere/ar", "fingerprint": "y"},
                     "layer": 1, "d_model": 8},
            "data": {"path": "/nowhere/data.parquet", "digest": "z"},
            "selection": {name: {"n_selected": n, "n_limit": None, "shard": None, "n_docs": len(set(docs))}},
            "denominators": {name: {"value": DENOM, "source": "synthetic", "auto": False}},
            "batch_size": 32, "limit": None, "shard": None, "counts": {}, "created": "2026-01-01T00:00:00Z"}
    (root / "results" / "info.json").write_text(json.dumps(info), encoding="utf-8")
    return root


# ------------------------------------------------------------------------------------ Chromium


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, width: int = 1400, height: int = 1000):
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="nlx-chromium-")
        self.proc = subprocess.Popen(
            [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-extensions", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint within 30 s")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        self._conn = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self.ws = self._conn.__enter__()
        self._id = 0
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method: str, **params) -> dict:
        self._id += 1
        mid = self._id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page error in {expr[:80]!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, url: str, ready: str = "document.querySelector('.nla-explorer[data-ready]') !== null",
             timeout: float = 30) -> float:
        """Navigate and wait until ``ready`` holds; returns the seconds it took."""
        t0 = time.monotonic()
        self.call("Page.navigate", url=url)
        while time.monotonic() - t0 < timeout:
            try:
                if self.eval(ready):
                    return time.monotonic() - t0
            except RuntimeError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"{url}: not ready after {timeout} s")

    def screenshot(self, path: Path, full: bool = True) -> Path:
        import base64

        r = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=full)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(r["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection
            self._conn.__exit__(None, None, None)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


os.environ.setdefault("NLX_ARTIFACTS", str(Path(__file__).parent / "artifacts"))
