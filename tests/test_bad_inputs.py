"""Bad inputs, as a careless user would give them, one table row each.

Every CLI row builds its bad input in a fresh directory (copies of the embedded toy pair and its
evaluation rows), runs ``nla-probe`` in-process through the console entry point and checks:

* the exit code (refusals exit 2; a few rows are correct results and exit 0);
* that no Python traceback reaches stdout or stderr;
* that the message holds the row's key words (file, field, expected, found);
* that every file present before the command has the same bytes afterwards.

API rows do the same through the Python API (error class and key words).  Adding a case is one
line in ``CLI_CASES`` or ``API_CASES``; the builders are the small methods of :class:`Workspace`.
One subprocess test proves that a refusal reaches a real console as one line.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "data" / "toy" / "qwen_small"
D = 128  # the toy pair's d_model

pytestmark = pytest.mark.skipif(not (TOY / "av" / "model.safetensors").is_file(), reason="toy pair not built")


# ------------------------------------------------------------------------------------ workspace


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    *head, last = dotted.split(".")
    for k in head:
        d = d.setdefault(k, {})
    d[last] = value


class Workspace:
    """A scratch directory in which a row builds its (bad) inputs; every builder returns a path."""

    def __init__(self, root: Path, eval_frame: pl.DataFrame, ablate_out: Callable[[], Path]):
        self.root = root
        self._eval = eval_frame
        self._ablate_out = ablate_out

    def p(self, name: str) -> Path:
        """A path in the workspace that does not exist yet (an output)."""
        return self.root / name

    def file(self, name: str, content: str | bytes = "") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        return path

    # -- checkpoints --------------------------------------------------------------------------

    def ckpt(self, role: str, name: str | None = None, *, drop: Sequence[str] = (), sidecar: dict | None = None,
             sidecar_text: str | None = None, config: dict | None = None, truncate: dict | None = None,
             poke: dict | None = None, files: dict | None = None, tensors: dict | None = None) -> Path:
        """A copy of the toy ``role`` checkpoint with edits.

        Args:
            drop: file names to delete.
            sidecar: ``{dotted.field: value}`` set in ``nla_meta.yaml``; ``sidecar_text`` is appended raw.
            config: ``{key: value}`` set in ``config.json``.
            truncate: ``{file: n_bytes}`` to keep.
            poke: ``{file: (fraction, bytes)}`` written at ``fraction`` of the file's size.
            files: ``{name: bytes}`` written as is.
            tensors: ``{file: {tensor: fn(array) -> array}}`` rewritten through safetensors.
        """
        import yaml

        dest = self.root / (name or role)
        shutil.copytree(TOY / role, dest)
        for f in drop:
            (dest / f).unlink()
        if sidecar:
            sc = dest / "nla_meta.yaml"
            d = yaml.safe_load(sc.read_text(encoding="utf-8"))
            for k, v in sidecar.items():
                _set_dotted(d, k, v)
            sc.write_text(yaml.dump(d, sort_keys=False), encoding="utf-8")
        if sidecar_text:
            with (dest / "nla_meta.yaml").open("a", encoding="utf-8") as fh:
                fh.write(sidecar_text)
        if config:
            cfg = json.loads((dest / "config.json").read_text())
            cfg.update(config)
            (dest / "config.json").write_text(json.dumps(cfg, indent=2))
        for f, fn in (tensors or {}).items():
            import torch
            from safetensors.torch import load_file, save_file

            tensors_ = load_file(str(dest / f))
            for k, edit in fn.items():
                t = tensors_[k]
                tensors_[k] = torch.from_numpy(np.ascontiguousarray(edit(t.float().numpy().copy()))).to(t.dtype)
            save_file(tensors_, str(dest / f), metadata={"format": "pt"})
        for f, n in (truncate or {}).items():
            data = (dest / f).read_bytes()
            (dest / f).write_bytes(data[:n])
        for f, (frac, b) in (poke or {}).items():
            path = dest / f
            with path.open("r+b") as fh:
                fh.seek(int(path.stat().st_size * frac))
                fh.write(b)
        for f, b in (files or {}).items():
            (dest / f).write_bytes(b)
        return dest

    def av(self, **edits: Any) -> Path:
        return self.ckpt("av", **edits)

    def ar(self, **edits: Any) -> Path:
        return self.ckpt("ar", **edits)

    # -- data ------------------------------------------------------------------------------------

    def acts(self, n: int = 4, *, rows: dict | None = None, null_vector: Sequence[int] = (),
             null_doc: Sequence[int] = (), width: int = D, name: str = "acts.parquet") -> Path:
        """The first ``n`` toy evaluation activations as a parquet; ``rows={i: vector or scalar}``
        replaces row i, ``null_vector``/``null_doc`` make those rows' vector/doc_id null."""
        f = self._eval.head(n)
        vecs: list[Any] = [list(map(float, v))[:width] + [0.5] * max(0, width - D) for v in f["activation_vector"]]
        for i, v in (rows or {}).items():
            vecs[i] = (np.broadcast_to(np.asarray(v, dtype=np.float64), (width,))).tolist() \
                if np.ndim(v) == 0 else list(map(float, v))
        for i in null_vector:
            vecs[i] = None
        docs = [None if i in null_doc else d for i, d in enumerate(f["doc_id"].to_list())]
        frame = pl.DataFrame({"doc_id": pl.Series(docs, dtype=pl.Utf8), "position": f["position"],
                              "activation_vector": pl.Series(vecs, dtype=pl.Array(pl.Float32, width))})
        path = self.root / name
        frame.write_parquet(path)
        return path

    def texts(self, texts: Sequence[str], name: str = "texts.jsonl", column: str = "explanation") -> Path:
        lines = "".join(json.dumps({column: t}) + "\n" for t in texts)
        return self.file(name, lines)

    def eval_texts(self, n: int = 4, name: str = "texts.jsonl") -> Path:
        """The toy evaluation set's own ``explanation`` column (tagged AV output), first n rows."""
        return self.texts(self._eval.head(n)["explanation"].to_list(), name)

    def spec(self, name: str = "rt", *, extra: str = "", n: int = 2) -> Path:
        """A tiny round-trip spec (n rows, greedy, 6 tokens)."""
        return self.file(f"{name}.toml", f"""schema_version = 1
n = {n}
seed = 0
{extra}
[experiment]
name = "{name}"
kind = "roundtrip"

[sampling]
max_new_tokens = 6
do_sample = false

[metrics]
denominator = 0.5
n_boot = 50

[[conditions]]
name = "greedy"
""")

    def old_out(self) -> Path:
        """A copy of an ablation output directory made with the unmodified toy pair."""
        dest = self.root / "out"
        shutil.copytree(self._ablate_out(), dest)
        return dest


# ------------------------------------------------------------------------------------ running


def run_cli(args: Sequence[Any]) -> tuple[int, str]:
    """Run ``nla-probe ARGS`` through the console entry point; returns (exit code, everything a
    console would show: stdout, stderr, warnings and — for an uncaught exception — its traceback)."""
    from nla_probe.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with warnings.catch_warnings(record=True) as caught, redirect_stdout(out), redirect_stderr(err), \
            mock.patch.object(sys, "argv", ["nla-probe", *[str(a) for a in args]]):
        warnings.simplefilter("always")
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - what the interpreter would print
            code = 1
            err.write(traceback.format_exc())
    shown = [warnings.formatwarning(w.message, w.category, w.filename, w.lineno, None) for w in caught]
    return code, out.getvalue() + err.getvalue() + "".join(shown)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _words_in(text: str, words: Sequence[str]) -> list[str]:
    low = text.lower()
    return [w for w in words if w.lower() not in low]


# ------------------------------------------------------------------------------------ CLI rows


@dataclass(frozen=True)
class Case:
    """One bad input given to the CLI.

    Attributes:
        id: test id.
        build: writes the input into the workspace; returns the CLI args, or ``(args, extra_words)``
            when the key words depend on the input (e.g. fingerprints).
        words: key words the output must contain (case-insensitive).
        code: expected exit code (2 = refused).
        patch: ``("module:attr.path", replacement)`` patched for the run (a fault to inject).
        check: called with the workspace after the run (for rows whose answer is a correct result).
    """

    id: str
    build: Callable[[Workspace], Any]
    words: tuple[str, ...]
    code: int = 2
    patch: tuple[str, Any] | None = None
    check: Callable[[Workspace], None] | None = None


def _nan(a: np.ndarray) -> np.ndarray:
    a.reshape(-1)[3] = np.nan
    return a


_BACKBONE_NAN = {"model.safetensors": {"model.layers.0.input_layernorm.weight": lambda a: a * np.nan}}


def _enospc(*_a: Any, **_k: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _fingerprints(w: Workspace, av: Path, ar: Path) -> list[str]:
    """The AV fingerprint recorded in the old output and the new AV's (the message names both)."""
    from nla_probe.nla.identity import checkpoint_identity

    info = json.loads((w.root / "out" / "results" / "info.json").read_text())
    return [info["pair"]["av"]["fingerprint"], checkpoint_identity(av)["fingerprint"]]


def _other_weights(w: Workspace) -> tuple[list, list]:
    out = w.old_out()
    av = w.av(poke={"model.safetensors": (0.5, b"\x01\x02\x03\x04")})  # a byte change in the middle only
    ar = w.ar()
    args = ["ablate", w.spec(), "--av", av, "--ar", ar, "--data", w.acts(), "--out", out]
    return args, _fingerprints(w, av, ar)


def _same_as_untagged(w: Workspace) -> None:
    """The tagged texts were scored as the text inside the tags."""
    from nla_probe.nla.checkpoint import load_ar

    got = pl.read_parquet(w.p("rec.parquet"))
    inner = [t.split("<explanation>", 1)[1].split("</explanation>", 1)[0].strip() for t in w._eval.head(4)["explanation"]]
    want = load_ar(w.root / "ar").reconstruct(inner)
    np.testing.assert_allclose(np.asarray(got["reconstruction"].to_list()), want, rtol=1e-5, atol=1e-5)


def _must_not_run(*args, **kwargs):
    raise RuntimeError("timing started before the benchmark names were checked")


def _nothing_timed(w: Workspace) -> None:
    """An unknown benchmark name is refused before any benchmark runs or anything is written."""
    assert not w.p("bench.json").exists()


def _huge_row_decodes_like_its_direction(w: Workspace) -> None:
    """Row 0 is row 1 times 1e19 (finite in float32, squared norm is not): same decode."""
    got = pl.read_parquet(w.p("dec.parquet"))
    assert got["raw_text"][0] == got["raw_text"][1]


def _av_template() -> str:
    from nla_probe.nla.contract import AV_TEMPLATE

    return AV_TEMPLATE


def _scaled_first_row(w: Workspace) -> list:
    v = np.asarray(w._eval["activation_vector"][0], dtype=np.float64)
    return [v * 1e19 / np.abs(v).max()]


CLI_CASES: list[Case] = [
    # --- silently wrong before: each is now an error or a correct result
    Case("ablate_into_out_made_with_other_weights", _other_weights, ("fingerprint", "--out")),
    Case("fixtures_into_existing_checkpoint", lambda w: ["fixtures", w.av(name="pair/av").parent],
         ("not empty", "--force")),
    Case("reconstruct_fewer_texts_than_vectors",
         lambda w: ["reconstruct", "--ar", w.ar(), "--texts", w.texts(["a b", "c d"]), "--data", w.acts(4),
                    "--out", w.p("r.parquet")], ("2 texts", "4 vectors")),
    Case("reconstruct_one_text_for_four_vectors",
         lambda w: ["reconstruct", "--ar", w.ar(), "--texts", w.texts(["a b"]), "--data", w.acts(4),
                    "--out", w.p("r.parquet")], ("1 text", "4 vectors")),
    Case("inspect_value_head_with_nan",
         lambda w: ["inspect", w.ar(tensors={"value_head.safetensors": {"weight": _nan}})],
         ("value_head.safetensors", "finite")),
    Case("reconstruct_value_head_with_nan",
         lambda w: ["reconstruct", "--ar", w.ar(tensors={"value_head.safetensors": {"weight": _nan}}),
                    "--texts", w.texts(["a b"]), "--out", w.p("r.parquet")], ("value_head.safetensors", "finite")),
    Case("reconstruct_backbone_with_nan",
         lambda w: ["reconstruct", "--ar", w.ar(tensors=_BACKBONE_NAN),
                    "--texts", w.texts(["a b", "c d"]), "--out", w.p("r.parquet")],
         ("layers.0.input_layernorm.weight", "finite weights")),
    Case("verbalize_av_weights_with_nan",
         lambda w: ["verbalize", "--av", w.av(tensors=_BACKBONE_NAN), "--data", w.acts(), "--out", w.p("d.parquet")],
         ("layers.0.input_layernorm.weight", "finite weights")),
    Case("ablate_with_nan_value_head",
         lambda w: ["ablate", w.spec(), "--av", w.av(), "--ar", w.ar(tensors={"value_head.safetensors": {
             "weight": _nan}}), "--data", w.acts(), "--out", w.p("out")], ("value_head.safetensors", "finite")),
    Case("verbalize_vector_whose_float32_norm_overflows",
         lambda w: ["verbalize", "--av", w.av(), "--data", w.acts(2, rows={0: _scaled_first_row(w)[0],
                                                                            1: _scaled_first_row(w)[0] / 1e19}),
                    "--out", w.p("dec.parquet"), "--max-new-tokens", "8"], ("wrote 2 decodes",), code=0,
         check=_huge_row_decodes_like_its_direction),
    Case("reconstruct_lone_surrogate",
         lambda w: ["reconstruct", "--ar", w.ar(), "--texts", w.texts(["fine", "bad \ud800 text"]),
                    "--out", w.p("r.parquet")], ("row 1", "surrogate")),
    Case("inspect_av_template_wording_drift",
         lambda w: ["inspect", w.av(sidecar={"prompt_templates.av": _av_template().replace("meticulous", "careless")})],
         ("prompt_templates.av", "released", "careless AI researcher"), code=0),
    Case("inspect_ar_template_head_drift",
         lambda w: ["inspect", w.ar(sidecar={"prompt_templates.ar":
                                             "Summary of this text: <text>{explanation}</text> <summary>"})],
         ("prompt_templates.ar", "released"), code=0),
    Case("reconstruct_tagged_texts_scores_the_inside",
         lambda w: ["reconstruct", "--ar", w.ar(), "--texts", w.eval_texts(4), "--out", w.p("rec.parquet")],
         ("stripped", "4 of 4"), code=0, check=_same_as_untagged),
    # --- tracebacks before: each is now one clear line
    Case("verbalize_device_cuda_without_cuda",
         lambda w: ["verbalize", "--av", w.av(), "--data", w.acts(), "--out", w.p("d.parquet"), "--device", "cuda"],
         ("--device", "cuda", "not available")),
    Case("reconstruct_device_cuda_without_cuda",
         lambda w: ["reconstruct", "--ar", w.ar(), "--texts", w.texts(["a"]), "--out", w.p("r.parquet"),
                    "--device", "cuda"], ("--device", "cuda", "not available")),
    Case("ablate_device_cuda_without_cuda",
         lambda w: ["ablate", w.spec(), "--av", w.av(), "--ar", w.ar(), "--data", w.acts(), "--out", w.p("out"),
                    "--device", "cuda"], ("--device", "cuda", "not available")),
    Case("extract_device_cuda_without_cuda",
         lambda w: ["extract", "--model", w.ckpt("av", "base"), "--texts", w.file("docs.jsonl", '{"text": "a b"}\n'),
                    "--layer", "1", "--out", w.p("a.parquet"), "--device", "cuda"], ("--device", "cuda", "not available")),
    Case("extract_malformed_texts_file",
         lambda w: ["extract", "--model", w.ckpt("av", "base"), "--texts", w.file("docs.jsonl", '{"text": "a"}\n[1, 2\n'),
                    "--layer", "1", "--out", w.p("a.parquet")], ("docs.jsonl", "line 2", "json")),
    Case("extract_docs_without_text_field",
         lambda w: ["extract", "--model", w.ckpt("av", "base"), "--texts", w.file("docs.jsonl", '{"body": "a"}\n'),
                    "--layer", "1", "--out", w.p("a.parquet")], ("docs.jsonl", "rows [0]", "'text'")),
    Case("verbalize_out_is_a_directory",
         lambda w: ["verbalize", "--av", w.av(), "--data", w.acts(), "--out", w.file("d.parquet/keep", "x").parent],
         ("--out", "is a directory")),
    Case("ablate_threads_zero",
         lambda w: ["ablate", w.spec(), "--av", w.av(), "--ar", w.ar(), "--data", w.acts(), "--out", w.p("out"),
                    "--threads", "0"], ("--threads", "greater than or equal to 1")),
    Case("ablate_out_is_a_file",
         lambda w: ["ablate", w.spec(), "--av", w.av(), "--ar", w.ar(), "--data", w.acts(),
                    "--out", w.file("out", "notes")], ("--out", "is a file")),
    Case("ablate_out_unwritable",
         lambda w: ["ablate", w.spec(), "--av", w.av(), "--ar", w.ar(), "--data", w.acts(),
                    "--out", w.file("f", "x") / "out"], ("--out", "cannot")),
    Case("reconstruct_out_unwritable",
         lambda w: ["reconstruct", "--ar", w.ar(), "--texts", w.texts(["a"]), "--out", w.file("f", "x") / "r.parquet"],
         ("--out", "cannot")),
    Case("verbalize_null_activation_row",
         lambda w: ["verbalize", "--av", w.av(), "--data", w.acts(4, null_vector=[1]), "--out", w.p("d.parquet")],
         ("activation_vector", "null", "[1]")),
    Case("ablate_null_doc_id",
         lambda w: ["ablate", w.spec(), "--av", w.av(), "--ar", w.ar(), "--data", w.acts(4, null_doc=[2]),
                    "--out", w.p("out")], ("doc_id", "null", "[2]")),
    Case("reconstruct_empty_texts_file",
         lambda w: ["reconstruct", "--ar", w.ar(), "--texts", w.file("t.jsonl", ""), "--out", w.p("r.parquet")],
         ("t.jsonl", "empty")),
    Case("reconstruct_malformed_texts_file",
         lambda w: ["reconstruct", "--ar", w.ar(), "--texts", w.file("t.jsonl", '{"explanation": "a"}\n{oops\n'),
                    "--out", w.p("r.parquet")], ("t.jsonl", "json")),
    Case("inspect_truncated_safetensors",
         lambda w: ["inspect", w.av(truncate={"model.safetensors": 100_000})], ("model.safetensors", "truncated")),
    Case("verbalize_truncated_safetensors",
         lambda w: ["verbalize", "--av", w.av(truncate={"model.safetensors": 100_000}), "--data", w.acts(),
                    "--out", w.p("d.parquet")], ("model.safetensors", "truncated")),
    Case("inspect_corrupt_safetensors_header",
         lambda w: ["inspect", w.av(poke={"model.safetensors": (0.0, b"\xff" * 64)})],
         ("model.safetensors", "header")),
    Case("inspect_weights_missing",
         lambda w: ["inspect", w.av(drop=["model.safetensors"])], ("no weight file", "model.safetensors")),
    Case("verbalize_weights_missing",
         lambda w: ["verbalize", "--av", w.av(drop=["model.safetensors"]), "--data", w.acts(),
                    "--out", w.p("d.parquet")], ("no weight file", "model.safetensors")),
    Case("inspect_index_names_missing_shard",
         lambda w: ["inspect", w.av(files={"model.safetensors.index.json": json.dumps(
             {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}
         ).encode()}, drop=["model.safetensors"])], ("model-00001-of-00002.safetensors", "index")),
    Case("reconstruct_ar_layer_types_disagree",
         lambda w: ["reconstruct", "--ar", w.ar(config={"layer_types": ["full_attention"] * 5}),
                    "--texts", w.texts(["a"]), "--out", w.p("r.parquet")], ("layer_types", "num_hidden_layers")),
    Case("inspect_ar_layer_types_disagree",
         lambda w: ["inspect", w.ar(config={"layer_types": ["full_attention"] * 5})],
         ("layer_types", "num_hidden_layers")),
    Case("fixtures_given_a_file", lambda w: ["fixtures", w.file("notes.txt", "hello")], ("notes.txt", "directory")),
    Case("inspect_pickle_weights",
         lambda w: ["inspect", w.av(drop=["model.safetensors"], files={"pytorch_model.bin": b"\x80\x04K\x01."})],
         ("pytorch_model.bin", "safetensors", "pickle")),
    Case("verbalize_pickle_weights",
         lambda w: ["verbalize", "--av", w.av(drop=["model.safetensors"], files={"pytorch_model.bin": b"\x80\x04."}),
                    "--data", w.acts(), "--out", w.p("d.parquet")], ("pytorch_model.bin", "safetensors")),
    Case("ablate_with_no_finite_fve", lambda w: ["ablate", w.spec(), "--av", w.av(), "--ar", w.ar(), "--data", w.acts(),
                                                 "--out", w.p("out")], ("'rt'", "finite fve_nrm", "empty statistics table"),
         patch=("nla_probe.ablate.engine:RunContext.score", lambda self, chunk, texts, on_overflow=None: {
             "mse_nrm": [float("nan")] * len(chunk), "cos": [float("nan")] * len(chunk),
             "ar_tokens": [0] * len(chunk), "overflow": ["nan"] * len(chunk)})),
    Case("report_disk_full_while_writing_figures", lambda w: ["report", w.old_out()],
         ("no space", "records", "safe"), patch=("nla_probe.ablate.plots:save_png", _enospc)),
    # --- already refused clearly (kept closed)
    Case("inspect_missing_sidecar", lambda w: ["inspect", w.av(drop=["nla_meta.yaml"])], ("nla_meta.yaml",)),
    Case("inspect_yaml_python_tag",
         lambda w: ["inspect", w.av(sidecar_text="extra: !!python/object/apply:os.system ['echo pwned']\n")],
         ("nla_meta.yaml", "valid yaml")),
    Case("inspect_wrong_marker_id", lambda w: ["inspect", w.av(sidecar={"tokens.injection_token_id": 7})],
         ("tokens.injection_token_id", "[7]")),
    Case("inspect_wrong_neighbour_id", lambda w: ["inspect", w.av(sidecar={"tokens.injection_left_neighbor_id": 7})],
         ("injection_left_neighbor_id",)),
    Case("inspect_value_head_wrong_shape",
         lambda w: ["inspect", w.ar(tensors={"value_head.safetensors": {"weight": lambda a: a[:, :64].copy()}})],
         ("value_head.safetensors", "shape")),
    Case("verbalize_wrong_vector_width",
         lambda w: ["verbalize", "--av", w.av(), "--data", w.acts(width=64), "--out", w.p("d.parquet")],
         ("width", "d_model=128", "64")),
    Case("verbalize_zero_vector",
         lambda w: ["verbalize", "--av", w.av(), "--data", w.acts(rows={1: 0.0}), "--out", w.p("d.parquet")],
         ("[1]", "zero norm")),
    Case("verbalize_nan_vector",
         lambda w: ["verbalize", "--av", w.av(), "--data", w.acts(rows={2: np.nan}), "--out", w.p("d.parquet")],
         ("[2]", "nan")),
    Case("ablate_spec_unknown_key",
         lambda w: ["ablate", w.spec(extra="colour = 'red'"), "--av", w.av(), "--ar", w.ar(), "--data", w.acts(),
                    "--out", w.p("out")], ("colour",)),
    Case("ablate_spec_unknown_transform",
         lambda w: ["ablate", w.file("s.toml", w.spec().read_text() + 'transforms = [{ name = "no_such" }]\n'),
                    "--av", w.av(), "--ar", w.ar(), "--data", w.acts(), "--out", w.p("out")], ("no_such",)),
    Case("bench_unknown_name", lambda w: ["bench", "--only", "grammar_throughput", "--only", "no_such_bench",
                                          "--out", w.p("bench.json")],
         ("no_such_bench", "valid benchmarks", "grammar_throughput"), check=_nothing_timed,
         patch=("nla_probe.bench.startup:startup_times", _must_not_run)),
]


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def eval_frame() -> pl.DataFrame:
    return pl.read_parquet(TOY / "eval.parquet").head(8)


@pytest.fixture(scope="session")
def ablate_out_factory(tmp_path_factory, eval_frame):
    """An ablation output directory made with the unmodified toy pair (built on first use)."""
    made: list[Path] = []

    def get() -> Path:
        if not made:
            root = tmp_path_factory.mktemp("old_out")
            w = Workspace(root, eval_frame, get)
            code, text = run_cli(["ablate", w.spec(), "--av", TOY / "av", "--ar", TOY / "ar", "--data", w.acts(),
                                  "--out", root / "out"])
            assert code == 0, text
            made.append(root / "out")
        return made[0]

    return get


@pytest.fixture
def ws(tmp_path, eval_frame, ablate_out_factory) -> Workspace:
    return Workspace(tmp_path, eval_frame, ablate_out_factory)


# ------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_bad_input(case: Case, ws: Workspace, monkeypatch):
    built = case.build(ws)
    args, extra = built if isinstance(built, tuple) else (built, [])
    before = _hashes(ws.root)
    if case.patch is not None:
        import importlib

        (module, _, path), value = case.patch[0].partition(":"), case.patch[1]
        *owners, attr = path.split(".")
        owner = importlib.import_module(module)
        for name in owners:
            owner = getattr(owner, name)
        monkeypatch.setattr(owner, attr, value)
    code, text = run_cli(args)
    assert "Traceback" not in text, text
    assert code == case.code, text
    missing = _words_in(text, [*case.words, *extra])
    assert not missing, f"missing {missing} in:\n{text}"
    after = _hashes(ws.root)
    assert {k: after.get(k) for k in before} == before, "a user file changed"
    if case.check is not None:
        case.check(ws)


def test_refusal_reaches_a_real_console_as_one_line(tmp_path):
    """The console script itself (a subprocess): one 'error:' line naming the file, no traceback."""
    ws = Workspace(tmp_path, pl.DataFrame(), lambda: tmp_path)
    av = ws.av(truncate={"model.safetensors": 100_000})
    exe = Path(sys.executable).with_name("nla-probe")
    proc = subprocess.run([str(exe), "inspect", str(av)], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "model.safetensors" in lines[0], proc.stderr


# ------------------------------------------------------------------------------------ API rows


@dataclass(frozen=True)
class ApiCase:
    """One bad input given to the Python API: ``call(build(workspace))`` must raise ``error`` (a class
    of :mod:`nla_probe.errors`) whose message holds ``words``."""

    id: str
    build: Callable[[Workspace], Any]
    call: Callable[[Any], Any]
    error: str
    words: tuple[str, ...]


def _load_av(path: Path):
    from nla_probe.nla.checkpoint import load_av

    return load_av(path)


def _load_av_on(path: Path, device: str):
    from nla_probe.nla.checkpoint import load_av

    return load_av(path, device=device)


def _load_ar(path: Path):
    from nla_probe.nla.checkpoint import load_ar

    return load_ar(path)


def _nan_head_after_load(path: Path):
    """A loaded AR whose value head is then corrupted in memory: every output row is NaN."""
    r = _load_ar(path)
    r.model.value_head.weight.data[0, 0] = float("nan")
    return r


def _mse_nrm(args):
    from nla_probe.analysis.metrics import mse_nrm

    return mse_nrm(*args)


def _read(path: Path):
    from nla_probe.nla.extraction import read_activations

    return read_activations(path, d_model=D)


def _fixture_pair(out: Path):
    from nla_probe.toy.fixtures import make_fixture_pair

    return make_fixture_pair(out)

API_CASES: list[ApiCase] = [
    ApiCase("mse_nrm_zero_gold_vector", lambda w: (np.ones((2, 4)), np.array([[1.0, 0, 0, 0], [0, 0, 0, 0]])),
            _mse_nrm, "InputError", ("gold", "[1]", "zero norm")),
    ApiCase("reconstruct_lone_surrogate", lambda w: w.ar(), lambda p: _load_ar(p).reconstruct(["ok", "x\ud800y"]),
            "InputError", ("row 1", "surrogate")),
    ApiCase("reconstructor_score_length_mismatch", lambda w: w.ar(),
            lambda p: _load_ar(p).score(["a", "b"], np.ones((3, D)), denominator=0.5), "InputError", ("2", "3")),
    ApiCase("load_ar_value_head_nan", lambda w: w.ar(tensors={"value_head.safetensors": {"weight": _nan}}),
            _load_ar, "ContractError", ("value_head.safetensors", "finite")),
    ApiCase("load_ar_backbone_nan", lambda w: w.ar(tensors=_BACKBONE_NAN), _load_ar, "ContractError",
            ("layers.0.input_layernorm.weight", "finite weights")),
    ApiCase("load_av_weights_nan", lambda w: w.av(tensors=_BACKBONE_NAN), _load_av, "ContractError",
            ("layers.0.input_layernorm.weight", "finite weights")),
    ApiCase("reconstruct_non_finite_output", lambda w: w.ar(), lambda p: _nan_head_after_load(p).reconstruct(["a", "b"]),
            "ModelOutputError", ("non-finite", "rows [0, 1]")),
    ApiCase("load_av_device_cuda_without_cuda", lambda w: w.av(), lambda p: _load_av_on(p, "cuda"), "InputError",
            ("'cuda'", "not available")),
    ApiCase("load_av_truncated_safetensors", lambda w: w.av(truncate={"model.safetensors": 100_000}),
            _load_av, "ContractError", ("model.safetensors", "truncated")),
    ApiCase("load_av_pickle_weights",
            lambda w: w.av(drop=["model.safetensors"], files={"pytorch_model.bin": b"\x80\x04."}),
            _load_av, "ContractError", ("pytorch_model.bin", "safetensors")),
    ApiCase("load_av_weights_missing", lambda w: w.av(drop=["model.safetensors"]), _load_av,
            "ContractError", ("no weight file",)),
    ApiCase("load_ar_layer_types_disagree", lambda w: w.ar(config={"layer_types": ["full_attention"] * 5}),
            _load_ar, "ContractError", ("layer_types", "num_hidden_layers")),
    ApiCase("read_activations_null_row", lambda w: w.acts(4, null_vector=[1]), _read, "InputError",
            ("activation_vector", "null", "[1]")),
    ApiCase("read_activations_null_doc_id", lambda w: w.acts(4, null_doc=[3]), _read, "InputError",
            ("doc_id", "null", "[3]")),
    ApiCase("fixture_pair_into_existing_checkpoint", lambda w: w.av(name="pair/av").parent, _fixture_pair,
            "InputError", ("not empty", "force")),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_bad_input(case: ApiCase, ws: Workspace):
    from nla_probe import errors

    arg = case.build(ws)
    before = _hashes(ws.root)
    with pytest.raises(getattr(errors, case.error)) as e:
        case.call(arg)
    missing = _words_in(str(e.value), case.words)
    assert not missing, f"missing {missing} in: {e.value}"
    assert "\n" not in str(e.value)
    assert _hashes(ws.root) == before, "a user file changed"


# ------------------------------------------------------------------------------------ correct results (API)


def test_api_tagged_texts_are_scored_with_a_warning_naming_the_rows():
    from nla_probe.errors import TaggedTextWarning
    from nla_probe.nla.checkpoint import load_ar

    r = load_ar(TOY / "ar")
    with pytest.warns(TaggedTextWarning, match=r"rows \[1\] \(1 of 2\) hold a complete <explanation>"):
        r.reconstruct(["plain", "<explanation>tagged</explanation>"])


def test_api_huge_vector_keeps_its_direction():
    """Entries around 1e19: finite in float32, but the float32 squared norm overflows.  The injected
    row and the metrics see the direction, as for the same vector at a normal scale."""
    import torch

    from nla_probe.analysis.metrics import mse_nrm
    from nla_probe.nla.injection import check_vectors, normalize_activation

    v = np.asarray(pl.read_parquet(TOY / "eval.parquet").head(2)["activation_vector"].to_list(), dtype=np.float32)
    huge = (v / np.abs(v).max(1, keepdims=True) * 1e19).astype(np.float32)
    with np.errstate(over="ignore"):
        assert np.isfinite(huge).all() and not np.isfinite(np.linalg.norm(huge, axis=1)).any()
    t = check_vectors(huge, D)
    torch.testing.assert_close(normalize_activation(t, 150.0), normalize_activation(torch.from_numpy(v), 150.0),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(mse_nrm(huge, v), [0.0, 0.0], atol=1e-10)


def _verbatim_quote_is_a_span(w: Workspace) -> None:
    from nla_probe.text.spans import find_spans

    text = 'Final token " " opens a clause; then " (the AI model)." follows.'
    assert [s.inner(text) for s in find_spans(text, "quotes").spans] == [" ", " (the AI model)."]


def _fine_tuned_copy_has_another_fingerprint(w: Workspace) -> None:
    from nla_probe.nla.identity import checkpoint_identity

    poked = w.av(name="tuned", poke={"model.safetensors": (0.5, b"\x01\x02\x03\x04")})
    assert checkpoint_identity(poked)["fingerprint"] != checkpoint_identity(TOY / "av")["fingerprint"]


def _penalty_keeps_one_closing_tag(w: Workspace) -> None:
    from nla_probe.hooks import LengthPenalty
    from nla_probe.nla.checkpoint import load_av

    vecs = np.asarray(w._eval.head(8)["activation_vector"].to_list(), dtype=np.float32)
    for d in load_av(TOY / "av").verbalizer().verbalize(vecs, max_new_tokens=64, hooks=[LengthPenalty(0.5)]):
        assert d.tag_status == "ok" and d.raw_text.count("</explanation") == 1, d.raw_text


#: Cases whose answer is a correct result rather than a refusal (API level); more in test_spans,
#: test_identity and test_hooks.
RESULT_CASES = [
    ("verbatim_quote_with_leading_space_is_a_span", _verbatim_quote_is_a_span),
    ("fine_tuned_copy_has_another_fingerprint", _fine_tuned_copy_has_another_fingerprint),
    ("length_penalty_keeps_one_closing_tag", _penalty_keeps_one_closing_tag),
]


@pytest.mark.parametrize("check", [c[1] for c in RESULT_CASES], ids=[c[0] for c in RESULT_CASES])
def test_api_correct_result(check, ws: Workspace):
    check(ws)
