"""``report.html``: the run explorer as one self-contained page, and the same view in notebooks.

The page is a Jinja2 template (``explorer_assets/page.html.j2``, autoescaped) around the data of
:func:`nla_probe.ablate.page_data.build_data`, embedded as JSON in a
``<script type="application/json">`` block, and a small plain-JavaScript viewer
(``explorer_assets/explorer.js``, no library) that builds the decode browser from it.  Figures are
embedded as base64 PNG, so the file opens from disk with no network and no server.

Safety: explanations are untrusted model output.  Template values are HTML-escaped; the JSON block
escapes ``<``, ``>``, ``&``, U+2028 and U+2029 (:func:`json_for_script`), so no text can close the
script element; the viewer inserts data with ``textContent`` only.  The standalone page also sends
a Content-Security-Policy that allows no network access and runs only its own two scripts (by hash).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
from importlib import resources
from pathlib import Path
from typing import Any

from nla_probe.errors import InputError

HTML_NAME = "report.html"
#: Cap on activations per experiment in a notebook view (a page file takes :data:`nla_probe.ablate.page_data.MAX_ROWS`).
NOTEBOOK_ROWS = 2_000
_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_for_script(obj: Any) -> str:
    """``obj`` as JSON that is safe inside ``<script type="application/json">`` (module doc)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: _ESCAPES[m.group()], text)


def _asset(name: str) -> str:
    return (resources.files("nla_probe.ablate") / "explorer_assets" / name).read_text(encoding="utf-8")


def _env() -> Any:
    import jinja2

    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


# ------------------------------------------------------------------------------------ report.md

def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _inside(root: Path, src: str) -> Path | None:
    """``root / src`` if it is a file inside ``root`` (no absolute paths, no ``..`` escapes)."""
    if not src or "://" in src or src.startswith(("/", "data:")):
        return None
    p = (root / src).resolve()
    try:
        p.relative_to(root.resolve())
    except ValueError:
        return None
    return p if p.is_file() and p.suffix.lower() == ".png" else None


def read_report(root: Path, experiments: list[str]) -> tuple[dict[str, list[dict]], str]:
    """Figures of ``report.md`` per experiment (``[{src, caption}]``, PNGs as data URIs) and the
    whole report rendered to HTML (raw HTML in the markdown is escaped, images embedded)."""
    from markdown_it import MarkdownIt

    path = root / "report.md"
    if not path.is_file():
        return {}, ""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(path.read_text(encoding="utf-8"))
    figures: dict[str, list[dict]] = {}
    section = None
    for k, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.tag == "h2":
            title = re.sub(r"^\d+\.\s*", "", tokens[k + 1].content)
            section = next((e for e in experiments if title == e or title.startswith(e + ":")), None)
        for child in tok.children or []:
            if child.type != "image":
                continue
            src = child.attrGet("src") or ""
            file = _inside(root, src)
            if file is None:
                continue
            uri = _data_uri(file)
            child.attrSet("src", uri)
            if section is not None:
                figures.setdefault(section, []).append({"src": uri, "caption": child.content})
    return figures, md.renderer.render(tokens, md.options, {})


# ------------------------------------------------------------------------------------ summary

def _f(x: Any, fmt: str = "+.3f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, fmt)


def _p(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.2g}" if x < 0.001 else f"{x:.3f}"


def summaries(result: Any, experiments: list[str], figures: dict[str, list[dict]]) -> list[dict]:
    """Per experiment: description, setup and definition lines, the condition table, figures."""
    s_all = result.summary()
    out = []
    for name in experiments:
        spec = result.spec(name)
        m = spec.metrics
        denom, source = result._denominator(name)
        sel = result.info.get("selection", {}).get(name, {})
        rows = []
        if s_all.height:
            for r in result.summary(name).iter_rows(named=True):
                rows.append({
                    "condition": r["condition"], "baseline": r["condition"] == spec.baseline,
                    "estimate": _f(r["estimate"]), "ci": f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]",
                    "n": r["n"], "docs": r["n_clusters"],
                    "diff": "—" if r.get("diff") is None else
                    f"{_f(r['diff'])} [{_f(r['diff_low'])}, {_f(r['diff_high'])}]",
                    "pairs": r.get("n_pairs"), "p": _p(r.get("p")), "p_bh": _p(r.get("p_bh")),
                    "tag_ok": _f(r.get("tag_ok"), ".2f")})
        out.append({
            "name": name, "kind": spec.kind, "description": spec.description.strip(), "metric": m.primary,
            "baseline": spec.baseline, "rows": rows, "figures": figures.get(name, []),
            "level": f"{m.level * 100:g}%",
            "definitions": [
                (f"fve_nrm = 1 − mse_nrm / Var(v_nrm); Var(v_nrm) = {denom:.6g} ({source})." if m.primary == "fve_nrm"
                 else f"primary metric {m.primary} (docs/metrics.md); FVE denominator {denom:.6g} ({source})."),
                (f"CI: {m.level * 100:g}% percentile bootstrap clustered by document ({m.n_boot} resamples, "
                 f"seed {spec.seed}); n = activations, docs = documents."),
                (f"Δ vs {spec.baseline}: condition − baseline on the same activations (paired by sample_id), "
                 "with its clustered CI."),
                (f"p: Wilcoxon signed-rank on per-{m.wilcoxon_unit} paired differences; p_bh: Benjamini–Hochberg "
                 "adjusted over every test of the run."),
            ],
            "setup": f"{sel.get('n_selected', '?')} activations from {sel.get('n_docs', '?')} documents; "
                     f"decoding {'sampled' if spec.sampling.do_sample else 'greedy'}, at most "
                     f"{spec.sampling.max_new_tokens} new tokens.",
        })
    return out


def _pair_line(info: dict) -> tuple[str, bool]:
    from nla_probe import defaults

    pair = info.get("pair", {})
    av = str(pair.get("av", {}).get("path", "?"))
    toy = False
    try:
        toy = Path(av).resolve().is_relative_to(Path(defaults.TOY_DIR).resolve())
    except (OSError, ValueError):
        pass
    data = Path(str(info.get("data", {}).get("path", "?"))).name
    return (f"AV {Path(av).parent.name}/{Path(av).name}, layer {pair.get('layer', '?')}, d_model "
            f"{pair.get('d_model', '?')}; data {data}; created {info.get('created', '?')}"), toy


# ------------------------------------------------------------------------------------ rendering

def render(result: Any, data: dict, *, standalone: bool = True, report_html: str = "",
           figures: dict[str, list[dict]] | None = None) -> str:
    """The page (``standalone``) or a fragment for a notebook output, as a string."""
    names = [e["name"] for e in data["experiments"]]
    if figures is None:
        figures, report_html = read_report(result.root, names)
    pair, toy = _pair_line(result.info)
    uid = "nlx-" + secrets.token_hex(6)
    js = _asset("explorer.js")
    boot = f'nlaExplorer(document.getElementById("{uid}"), {json.dumps({"hash": standalone})});'
    ctx = {"uid": uid, "title": "nla-probe run explorer", "root": str(result.root.name), "pair": pair, "toy": toy,
           "summaries": summaries(result, names, figures), "report_html": report_html,
           "data_json": json_for_script(data), "js": js, "boot": boot, "css": _asset("explorer.css"),
           "standalone": standalone}
    if standalone:
        digest = [base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in (js, boot)]
        ctx["csp"] = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src "
                      + " ".join(f"'sha256-{d}'" for d in digest))
    import markupsafe

    ctx["report_html"] = markupsafe.Markup(report_html)  # rendered by markdown-it with html disabled
    for k in ("data_json", "js", "boot", "css"):
        ctx[k] = markupsafe.Markup(ctx[k])
    return _env().from_string(_asset("page.html.j2")).render(**ctx)


def write_html(result: Any, out: str | Path | None = None, *, max_rows: int | None = None, seed: int = 0) -> Path:
    """Write ``report.html`` into ``out`` (default: the run directory, beside ``report.md``)."""
    from nla_probe.ablate.page_data import MAX_ROWS, build_data

    out = Path(out) if out is not None else result.root
    out.mkdir(parents=True, exist_ok=True)
    data = build_data(result, max_rows=max_rows or MAX_ROWS, seed=seed)
    figures, report_html = read_report(out, [e["name"] for e in data["experiments"]])
    page = render(result, data, standalone=True, report_html=report_html, figures=figures)
    path = out / HTML_NAME
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


class ExplorerView:
    """The explorer of a run in a notebook cell (``_repr_html_``); ``.save(path)`` writes a page."""

    def __init__(self, result: Any, data: dict):
        self.result, self.data = result, data

    def _repr_html_(self) -> str:
        return render(self.result, self.data, standalone=False)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix.lower() not in (".html", ".htm"):
            raise InputError(f"save: expected a path ending in .html, found {str(path)!r}")
        path.write_text(render(self.result, self.data, standalone=True), encoding="utf-8")
        return path

    def __repr__(self) -> str:
        n = sum(len(e["ids"]) for e in self.data["experiments"])
        return f"ExplorerView({str(self.result.root)!r}, {n} activation rows)"


def view(result: Any, rows: Any = None, *, experiment: str | None = None, max_rows: int = NOTEBOOK_ROWS,
         seed: int = 0) -> ExplorerView:
    """:class:`ExplorerView` of ``result``: ``rows`` = an int (cap), a list of sample ids, or None."""
    from nla_probe.ablate.page_data import build_data

    ids = None
    if isinstance(rows, bool) or (rows is not None and not isinstance(rows, int) and not hasattr(rows, "__iter__")):
        raise InputError(f"rows: expected an int, a list of sample ids or None, found {rows!r}")
    if isinstance(rows, int):
        if rows < 1:
            raise InputError(f"rows: expected an integer >= 1, found {rows}")
        max_rows = rows
    elif rows is not None:
        ids = [int(r) for r in rows]
    exps = [experiment] if experiment is not None else None
    return ExplorerView(result, build_data(result, experiments=exps, rows=ids, max_rows=max_rows, seed=seed))


__all__ = ["HTML_NAME", "NOTEBOOK_ROWS", "ExplorerView", "json_for_script", "read_report", "render", "summaries",
           "view", "write_html"]
