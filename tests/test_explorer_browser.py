"""report.html in a real browser: headless Chromium over the DevTools protocol.

The page of a small toy run is loaded from disk; the tests click a row, compare the highlighted
spans and their ΔFVE with results/attribution.parquet, sort and filter, keep a screenshot under
tests/artifacts/ (not committed), check that markup inside explanations renders as text, and time a
page of 10,000 activations x 10 conditions.  Without Chromium every test here skips.
"""

import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from explorer_support import Browser, chromium_path, make_run

from nla_probe.ablate.result import AblationResult

pytestmark = [
    pytest.mark.skipif(chromium_path() is None,
                       reason="chromium not found: the browser tests of report.html need Debian's chromium "
                              "(apt-get install chromium; .ci/run installs it)"),
    pytest.mark.skipif(importlib.util.find_spec("websockets") is None,
                       reason="websockets not installed: pip install -e '.[test]'"),
]

ARTIFACTS = Path(os.environ.get("NLX_ARTIFACTS", Path(__file__).parent / "artifacts"))
XSS = '<script>alert(1)</script><script>window.__xss=1</script> said "x" then "><img src=q onerror="window.__xss=2">.'


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    from nla_probe import defaults
    from nla_probe.ablate.engine import ablate
    from nla_probe.ablate.spec import Spec, load_spec

    if not defaults.toy_pair_present():
        pytest.skip("the toy pair is not built (nla-probe toy build)")
    surgery = load_spec("quote_surgery").to_dict()
    ban = load_spec("quote_ban").to_dict()
    ban["conditions"] = [c for c in ban["conditions"] if c["name"] in ("no_ban", "ban_double")]
    copying = load_spec("copying").to_dict()
    copying["params"]["n_null"] = 3  # 8 activations leave few other-document contexts
    for s in (surgery, ban, copying):
        s["metrics"]["n_boot"] = 200
    out = tmp_path_factory.mktemp("toy_run")
    return ablate([Spec.from_dict(x) for x in (surgery, ban, copying)], defaults.toy_pair_dirs(),
                  defaults.toy_eval_path(), out=out, limit=8, denominator=defaults.toy_denominator(),
                  attribution_rows=8)


@pytest.fixture(scope="module")
def browser():
    b = Browser(width=1400, height=1000)
    yield b
    b.close()


def _select(b, cls: str, index: int) -> None:
    b.eval(f"(function(){{var s=document.querySelector('.{cls}'); s.value='{index}'; s.onchange();}})()")


def _visible_ids(b) -> list[int]:
    return b.eval("Array.from(document.querySelectorAll('.nlx-grid tbody tr')).map(r => +r.dataset.sampleId)")


def test_row_shows_the_spans_and_deltas_of_the_result_parquet(toy_run, browser):
    r = toy_run
    f = r.scan("quote_surgery").collect()
    conds = [c.name for c in r.spec("quote_surgery").conditions]
    att = pl.read_parquet(r.root / "results" / "attribution.parquet").filter(pl.col("experiment") == "quote_surgery")
    browser.open(r.html_path.as_uri())
    _select(browser, "nlx-exp-select", r.experiments.index("quote_surgery"))
    _select(browser, "nlx-a", conds.index("prose_only"))
    # the default order is Δ A − B ascending: the largest drop under prose_only comes first
    base = f.filter(pl.col("condition") == "unedited").select("sample_id", pl.col("fve_nrm").alias("b"))
    drop = (f.filter(pl.col("condition") == "prose_only").join(base, on="sample_id")
            .with_columns((pl.col("fve_nrm") - pl.col("b")).alias("d")).sort("d", "sample_id"))
    first = drop["sample_id"][0]
    assert _visible_ids(browser) == drop["sample_id"].to_list()
    marker = f"document.querySelector('.nlx-grid tbody tr[data-sample-id=\"{first}\"] td[data-key=attr]').textContent"
    assert browser.eval(marker) == "yes"
    browser.eval(f"document.querySelector('.nlx-grid tbody tr[data-sample-id=\"{first}\"]').click()")
    spans = browser.eval("""Array.from(document.querySelectorAll('.nlx-spans-view [data-part=span]'))
        .map(s => [s.textContent, +s.dataset.delta, s.dataset.family])""")
    want = att.filter((pl.col("sample_id") == first) & (pl.col("unit") == "span")).sort("index")
    assert want.height > 0
    assert spans == [list(x) for x in want.select("part", "delta_fve", "family").rows()]
    sentences = browser.eval("""Array.from(document.querySelectorAll('.nlx-sent-view [data-part=sentence]'))
        .map(s => [s.textContent, +s.dataset.delta])""")
    want = att.filter((pl.col("sample_id") == first) & (pl.col("unit") == "sentence")).sort("index")
    assert sentences == [list(x) for x in want.select("part", "delta_fve").rows()]
    colours = browser.eval("""Array.from(document.querySelectorAll('.nlx-spans-view [data-part=span]'))
        .map(s => getComputedStyle(s).backgroundColor)""")
    assert all(c not in ("rgba(0, 0, 0, 0)", "transparent") for c in colours)
    fves = browser.eval("""Object.fromEntries(Array.from(document.querySelectorAll('.nlx-conds tbody tr'))
        .map(t => [t.dataset.condition, +t.querySelector('[data-fve]').dataset.fve]))""")
    row = f.filter(pl.col("sample_id") == first)
    assert fves == dict(zip(row["condition"].to_list(), row["fve_nrm"].to_list()))
    shot = browser.screenshot(ARTIFACTS / "explorer_toy_row.png")
    print(f"screenshot: {shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_sort_filter_and_link_to_a_row(toy_run, browser):
    r = toy_run
    f = r.scan("quote_ban").collect()
    browser.open(r.html_path.as_uri())
    _select(browser, "nlx-exp-select", r.experiments.index("quote_ban"))
    col = [c.name for c in r.spec("quote_ban").conditions].index("no_ban")
    browser.eval(f"document.querySelector('.nlx-grid th[data-key=c{col}]').click()")
    base = f.filter(pl.col("condition") == "no_ban")
    assert _visible_ids(browser) == base.sort(["fve_nrm", "sample_id"], descending=[True, False])["sample_id"].to_list()
    assert browser.eval(f"document.querySelector('.nlx-grid th[data-key=c{col}]').getAttribute('aria-sort')") == \
        "descending"
    browser.eval(f"document.querySelector('.nlx-grid th[data-key=c{col}]').click()")
    assert _visible_ids(browser) == base.sort(["fve_nrm", "sample_id"])["sample_id"].to_list()
    browser.eval(f"""(function(){{var i=document.querySelector('.nlx-filter input[data-key=c{col}]');
        i.value='>0.5'; i.oninput();}})()""")
    time.sleep(0.4)  # the filter box waits 150 ms after the last key
    assert sorted(_visible_ids(browser)) == sorted(base.filter(pl.col("fve_nrm") > 0.5)["sample_id"].to_list())
    sid = base["sample_id"][3]
    browser.open(r.html_path.as_uri() + f"#exp=quote_ban&row={sid}",
                 ready="document.querySelector('.nlx-detail') !== null")
    assert browser.eval("document.querySelector('.nlx-detail').dataset.sampleId") == str(sid)
    leak = browser.eval("document.querySelector('.nlx-conds tr[data-condition=ban_double] .nlx-leak').textContent")
    assert leak.startswith("banned: double_quotes")


def test_copy_detection_marks_the_runs_of_the_result_parquet(toy_run, browser):
    import re

    r = toy_run
    f = r.scan("copying").collect()
    browser.open(r.html_path.as_uri())
    _select(browser, "nlx-exp-select", r.experiments.index("copying"))
    sid = int(f["sample_id"].max())
    browser.eval(f"document.querySelector('.nlx-grid tbody tr[data-sample-id=\"{sid}\"]').click()")
    rows = browser.eval("""Array.from(document.querySelectorAll('.nlx-copyrow')).map(w => [w.dataset.condition,
        w.querySelector('.nlx-muted').textContent, w.querySelector('.nlx-half .nlx-ctx').dataset.run])""")
    assert [x[0] for x in rows] == [c.name for c in r.spec("copying").conditions]
    for cond, head, marked in rows:
        want = f.filter((pl.col("sample_id") == sid) & (pl.col("condition") == cond)).row(0, named=True)
        nulls = sorted(int(v) for v in want["null_run_lens"].split())
        n = want["run_len"]
        assert head.startswith(f"{cond}: {n} word{'s' if n != 1 else ''} shared with the true context; "
                               "longest of 3 null")
        assert head.endswith("null run lengths " + " ".join(map(str, nulls)))
        assert re.findall(r"\w+", marked.lower()) == want["run_text"].split()


def _fragment_page(result: AblationResult, path: Path) -> Path:
    """The notebook fragment in a bare page without the report's Content-Security-Policy."""
    path.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body>" + result._repr_html_()
                    + "</body></html>", encoding="utf-8")
    return path


def _inserted_page(result: AblationResult, path: Path) -> Path:
    """The notebook fragment inserted with innerHTML and its scripts re-created, as Jupyter does."""
    from nla_probe.ablate.explorer import json_for_script

    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'></head><body><div id='out'></div>"
        f"<script type='application/json' id='frag'>{json_for_script(result._repr_html_())}</script><script>"
        "var out = document.getElementById('out');"
        "out.innerHTML = JSON.parse(document.getElementById('frag').textContent);"
        "out.querySelectorAll('script').forEach(function (old) { var s = document.createElement('script');"
        " if (old.type) s.type = old.type; if (old.className) s.className = old.className;"
        " s.text = old.textContent; old.replaceWith(s); });"
        "</script></body></html>", encoding="utf-8")
    return path


def test_markup_in_explanations_renders_as_text(tmp_path, browser):
    texts = [XSS, 'A "plain" one.']
    fve = np.array([[0.5, 0.6], [0.1, 0.2]])
    r = AblationResult.load(make_run(tmp_path / "run", texts, fve, ["base", "cut"],
                                     docs=['<img src=q onerror="window.__xss=3">', "d1"]))
    r.write_report()
    for page in (r.html_path, _fragment_page(r, tmp_path / "fragment.html"),
                 _inserted_page(r, tmp_path / "inserted.html")):
        browser.open(page.as_uri())
        browser.eval("document.querySelector('.nlx-grid tbody tr[data-sample-id=\"0\"]').click()")
        assert browser.eval("window.__xss === undefined") is True
        assert browser.eval("document.querySelectorAll('.nlx-app img, .nlx-app script').length") == 0
        assert browser.eval("document.querySelector('.nlx-spans-view').textContent") == XSS
        assert browser.eval("document.querySelector('.nlx-detail h3').textContent").startswith(
            'sample 0 · document <img src=q onerror="window.__xss=3">')


@pytest.mark.slow
def test_ten_thousand_activations_by_ten_conditions(tmp_path, browser):
    n, conds = 10_000, ["base"] + [f"c{k}" for k in range(9)]
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    texts = [f'Token "{words[i % 10]}" after "{words[i * 7 % 10]} {i}".\n\nA definition of {words[i * 3 % 10]}, '
             "early in the text.\n\nA word start." for i in range(n)]
    fve = np.random.default_rng(0).normal(0.3, 0.4, (len(conds), n))
    r = AblationResult.load(make_run(tmp_path / "big", texts, fve, conds, distinct=True))
    from nla_probe.ablate.explorer import write_html

    t0 = time.monotonic()
    path = write_html(r)
    build = time.monotonic() - t0
    load = browser.open(path.as_uri())
    t0 = time.monotonic()
    browser.eval("document.querySelector('.nlx-grid th[data-key=c4]').click()")
    sort = time.monotonic() - t0
    t0 = time.monotonic()
    browser.eval("document.querySelector('.nlx-grid tbody tr').click()")
    row = time.monotonic() - t0
    rows = browser.eval("document.querySelectorAll('.nlx-grid tbody tr').length")
    size = path.stat().st_size / 1e6
    print(json.dumps({"build_s": round(build, 2), "load_s": round(load, 2), "sort_s": round(sort, 3),
                      "open_row_s": round(row, 3), "page_mb": round(size, 1)}))
    assert rows == 100  # one page of rows in the DOM, not 10,000
    assert load < 3.0 and sort < 1.0 and row < 1.0
