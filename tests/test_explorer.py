"""The run explorer without a browser: page data, sampling, attribution rows, colour scale,
escaping, notebook views (browser behaviour: tests/test_explorer_browser.py)."""

import base64
import hashlib
import html
import json
import re

import numpy as np
import polars as pl
import pytest
from explorer_support import DENOM, make_run

from nla_probe.ablate import page_data
from nla_probe.ablate.attribution import attribute_run, load_attribution, select_rows
from nla_probe.ablate.explorer import ExplorerView, json_for_script, write_html
from nla_probe.ablate.page_data import build_data, choose_rows, text_spans, utf16_offsets
from nla_probe.ablate.result import AblationResult
from nla_probe.errors import InputError, UnknownNameError
from nla_probe.surgery.view import INK, PALETTE, ColourScale, nice_limit, show_attribution
from nla_probe.text.delimiters import expand_family_names

pytestmark = pytest.mark.filterwarnings("ignore:condition 'cut2'")  # its NaN row has no pair, by design
FAMS = {f: i for i, f in enumerate(expand_family_names("all"))}
EVIL = '<script>alert(1)</script> said "x" then "><img src=y onerror=alert(2)>.'


def test_json_for_script_escapes_what_could_end_the_script_block():
    obj = {"t": "</script><!-- & \u2028 \u2029 >", "n": [1.5, None]}
    out = json_for_script(obj)
    assert not re.search("[<>&\u2028\u2029]", out)
    assert json.loads(out) == obj
    with pytest.raises(ValueError):
        json_for_script({"x": float("nan")})


def test_spans_offsets_are_utf16_for_javascript():
    text = '😀 "hi" and (x)'
    assert utf16_offsets("plain") is None
    assert utf16_offsets(text)[:4] == [0, 2, 3, 4]
    flat = text_spans(text, FAMS)
    assert flat == [3, 7, FAMS["double_quotes"], 0, 12, 15, FAMS["parentheses"], 0]
    u16 = text.encode("utf-16-le")
    assert u16[2 * 3:2 * 7].decode("utf-16-le") == '"hi"'
    assert u16[2 * 12:2 * 15].decode("utf-16-le") == "(x)"
    nested = text_spans('a ("b") c', FAMS)  # parentheses at depth 0 hold a quote at depth 1
    assert nested == [2, 7, FAMS["parentheses"], 0, 3, 6, FAMS["double_quotes"], 1]


def _frame(values: dict[str, list[float]]) -> pl.DataFrame:
    rows = [(c, i, v) for c, vs in values.items() for i, v in enumerate(vs)]
    return pl.DataFrame(rows, schema=["condition", "sample_id", "fve_nrm"], orient="row")


def test_choose_rows_all_under_the_cap_and_sampled_beyond():
    f = _frame({"base": [0.0] * 10, "x": [-i / 10 for i in range(10)]})  # drop under x = i/10
    ids, note = choose_rows(f, "base", ["base", "x"], 10, [])
    assert ids == list(range(10)) and note == "all 10 activations"
    ids, note = choose_rows(f, "base", ["base", "x"], 4, [2])
    assert ids == [2, 7, 8, 9]  # the attributed row, then the three largest drops
    assert note.startswith("4 of 10 activations (cap 4): the 1 with ΔFVE attribution, the 3 largest FVE drops")
    assert "random sample (seed 0) of 0 others" in note


def test_choose_rows_random_part_is_seeded(monkeypatch):
    monkeypatch.setattr(page_data, "TOP_DROPS", 1)
    f = _frame({"base": [0.0] * 10, "x": [-i / 10 for i in range(10)]})
    a, note = choose_rows(f, "base", ["base", "x"], 5, [2], seed=0)
    b, _ = choose_rows(f, "base", ["base", "x"], 5, [2], seed=0)
    assert a == b and len(a) == 5 and {2, 9} <= set(a) and a == sorted(a)
    assert "the 1 largest FVE drops" in note and "of 3 others" in note


def test_select_rows_takes_turns_over_conditions_then_first_rows():
    f = _frame({"b": [0.0] * 6, "x": [-0.1, -0.5, -0.3, 0, 0, 0], "y": [0, 0, 0, -0.2, -0.9, float("nan")]})
    assert select_rows(f, "b", 4) == [(1, "largest drop under x"), (4, "largest drop under y"),
                                      (0, "first rows"), (2, "first rows")]
    assert select_rows(f, "b", 6) == [(1, "largest drop under x"), (4, "largest drop under y"),
                                      (2, "largest drop under x"), (0, "first rows"), (3, "first rows"),
                                      (5, "first rows")]
    assert select_rows(f, "b", 0) == []
    with pytest.raises(InputError, match="max_rows: expected an integer >= 0, found -1"):
        select_rows(f, "b", -1)


def test_colour_scale_bins_and_limit():
    assert nice_limit([0.03, -2.06, 1.0, 0.5]) == 2.5  # nearest-rank 95th percentile of |x| = 2.06
    assert nice_limit([0.012]) == 0.015
    assert nice_limit([0.001]) == 0.01 and nice_limit([]) == 0.1 and nice_limit([float("nan")]) == 0.1
    s = ColourScale(0.7)
    assert s.edges == pytest.approx((-0.5, -0.3, -0.1, 0.1, 0.3, 0.5))
    assert [s.bin(x) for x in (-1, -0.4, -0.2, 0, 0.2, 0.35, 0.5, 9)] == [0, 1, 2, 3, 4, 5, 6, 6]
    assert s.colours(0.35) == (PALETTE[5], INK[5])
    with pytest.raises(InputError, match="ColourScale.limit: expected a positive finite number, found 0"):
        ColourScale(0)


def _attr_rows(sample_id: int, text: str, experiment: str = "synthetic", delta: float = 0.4) -> pl.DataFrame:
    a = text.index('"x"')
    rows = [("span", 0, a, a + 3, "double_quotes", '"x"', delta), ("sentence", 0, 0, len(text), None, text, 0.6)]
    return pl.DataFrame({
        "experiment": experiment, "condition": "base", "sample_id": [sample_id] * 2, "unit": [r[0] for r in rows],
        "index": [r[1] for r in rows], "start": [r[2] for r in rows], "end": [r[3] for r in rows],
        "family": [r[4] for r in rows], "part": [r[5] for r in rows], "n_chars": [r[3] - r[2] for r in rows],
        "fve_full": [0.5, 0.5], "fve_without": [0.5 - r[6] for r in rows], "delta_fve": [r[6] for r in rows],
        "mse_full": [0.25, 0.25], "mse_without": [0.25 + r[6] * DENOM for r in rows], "denominator": [DENOM] * 2,
        "explanation": [text] * 2, "families": ["quotes"] * 2, "reason": ["first rows"] * 2})


def test_show_attribution_highlights_and_escapes():
    frame = _attr_rows(0, EVIL).drop("experiment", "condition", "explanation", "families", "reason")
    view = show_attribution(frame, [EVIL])
    html = view._repr_html_()
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    scale = ColourScale(nice_limit([0.4]))
    assert f'<mark style="background:{scale.colours(0.4)[0]}' in html and "&quot;x&quot;</mark>" in html
    assert "ΔFVE +0.4000" in html and len(repr(view)) < 100
    assert 'title="sentence' in show_attribution(frame, {0: EVIL}, unit="sentence").html()
    with pytest.raises(InputError, match=r"explanations\[0\]\[.*\] is not the frame's part '\"x\"'"):
        show_attribution(frame, ["a different text with no x at all, long enough........"])
    with pytest.raises(InputError, match="no explanation for sample_id 0"):
        show_attribution(frame, {})
    with pytest.raises(InputError, match=r"missing \['delta_fve'\]"):
        show_attribution(frame.drop("delta_fve"), [EVIL])


@pytest.fixture
def run(tmp_path):
    texts = ['He said "hello" twice.', EVIL, 'Plain "y" text.', 'No spans here.']
    fve = np.array([[0.5, 0.6, 0.7, 0.8], [0.1, -0.2, 0.3, 0.4], [0.2, 0.0, np.nan, 0.5]])
    attr = pl.concat([_attr_rows(1, EVIL), _attr_rows(2, 'An old "x" text.')])  # sample 2's text differs
    return make_run(tmp_path / "run", texts, fve, ["base", "cut", "cut2"], attribution=attr,
                    docs=["d<b>0</b>", "d1", "d1", "d2"])


def test_build_data_matches_the_result_parquet(run):
    r = AblationResult.load(run)
    d = build_data(r)
    e = d["experiments"][0]
    f = pl.read_parquet(run / "results" / "synthetic.parquet")
    assert e["ids"] == [0, 1, 2, 3] and [c["name"] for c in e["conds"]] == ["base", "cut", "cut2"]
    for c in e["conds"]:
        want = f.filter(pl.col("condition") == c["name"]).sort("sample_id")
        got = [None if x is None else x for x in c["fve"]]
        exp = [None if np.isnan(x) else x for x in want["fve_nrm"].to_list()]
        assert got == exp
        assert [d["strings"][i] for i in c["expl"]] == want["explanation"].to_list()
        texts = [d["strings"][i] if i != -2 else d["strings"][c["expl"][k]] for k, i in enumerate(c["text"])]
        assert texts == want["text"].to_list()
    assert e["conds"][0]["text"] == [-2, -2, -2, -2]  # unedited: the explanation itself
    assert [d["strings"][i] for i in e["doc"]] == ["d<b>0</b>", "d1", "d1", "d2"]
    assert list(e["attr"]) == ["1"]  # sample 2's stored explanation is not the shown one
    a = EVIL.index('"x"')
    assert e["attr"]["1"]["parts"] == [[0, a, a + 3, FAMS["double_quotes"], 0.4, pytest.approx(0.1)],
                                       [1, 0, len(EVIL), -1, 0.6, pytest.approx(-0.1)]]
    assert e["attr_n"] == 2 and e["scale"]["limit"] == nice_limit([0.4, 0.6, 0.4, 0.6])
    spans = d["spans"][d["strings"].index('He said "hello" twice.')]
    assert spans == [8, 15, FAMS["double_quotes"], 0]
    with pytest.raises(InputError, match="max_rows: expected an integer >= 1, found 0"):
        build_data(r, max_rows=0)


def test_page_is_self_contained_and_escaped(run):
    r = AblationResult.load(run)
    r.write_report()
    page = r.html_path.read_text(encoding="utf-8")
    assert "<script>alert" not in page and "<img src=y" not in page and "<b>0</b>" not in page
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    csp = html.unescape(re.search(r'Content-Security-Policy" content="([^"]+)"', page).group(1))
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp.split("script-src")[1]
    for s in scripts:  # only the page's own scripts may run
        assert "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'" in csp
    blob = re.search(r'<script type="application/json" class="nlx-data">(.*?)</script>', page, flags=re.DOTALL).group(1)
    assert json.loads(blob)["strings"] == build_data(r)["strings"]
    imgs = re.findall(r'<img src="([^"]*)"', page)
    assert imgs and all(src.startswith("data:image/png;base64,") for src in imgs)
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page


def test_notebook_views(run):
    r = AblationResult.load(run)
    v = r.show(rows=[3, 1])
    assert isinstance(v, ExplorerView) and v.data["experiments"][0]["ids"] == [1, 3]
    assert v.data["experiments"][0]["rows_note"] == "2 activations chosen by the caller (of 4)"
    frag = r._repr_html_()
    assert "<!doctype" not in frag.lower() and 'class="nla-explorer"' in frag and "<script>alert" not in frag
    assert len(repr(r)) < 120 and repr(v).endswith("2 activation rows)")
    assert r.show(rows=2).data["experiments"][0]["ids"] == [1, 2]  # a cap of 2 keeps the attributed rows
    with pytest.raises(InputError, match="rows: expected an integer >= 1, found 0"):
        r.show(rows=0)
    with pytest.raises(UnknownNameError):
        r.show(experiment="nope")
    with pytest.raises(InputError, match="expected a path ending in .html"):
        v.save(run / "x.txt")
    assert v.save(run / "view.html").read_text(encoding="utf-8").startswith("<!doctype html>")


def test_write_html_into_another_directory(run, tmp_path):
    r = AblationResult.load(run)
    out = tmp_path / "elsewhere"
    r.write_report(out)
    assert (out / "report.html").is_file() and not (run / "report.html").exists()
    assert write_html(r, out).name == "report.html"


def test_attribute_run_matches_span_attribution_and_reuses_rows(qwen_pair, tmp_path):
    from nla_probe.surgery.scoring import span_attribution

    texts = ['Token "a" after "b". Then more.', 'Quote "c" here.', "No quotes. Two sentences."]
    fve = np.array([[0.5, 0.4, 0.3], [0.1, 0.3, 0.3]])
    r = AblationResult.load(make_run(tmp_path / "run", texts, fve, ["base", "cut"]))
    vecs = np.random.default_rng(0).normal(size=(3, qwen_pair.contract.d_model)).astype(np.float32)
    path = attribute_run(r, qwen_pair.ar, lambda ids: vecs[list(ids)], max_rows=2)
    got = load_attribution(r.root)
    assert path.name == "attribution.parquet"
    # half the cap: the largest drop under "cut" (sample 0, 0.4), then the first row not taken (1)
    assert got.unique("sample_id", keep="first").select("sample_id", "reason").sort("sample_id").rows() == [
        (0, "largest drop under cut"), (1, "first rows")]
    want = span_attribution(qwen_pair.ar, texts[:2], vecs[:2], denominator=DENOM, families=["quotes"],
                            sample_ids=[0, 1], on_overflow="truncate")
    cols = ["sample_id", "unit", "index", "start", "end", "family", "part"]
    key = ["sample_id", "unit", "index"]
    assert got.sort(key).select(cols).rows() == want.sort(key).select(cols).rows()
    assert got.sort(key)["delta_fve"].to_list() == pytest.approx(want.sort(key)["delta_fve"].to_list(), abs=1e-5)

    def no_model():
        raise AssertionError("the AR must not be needed when every row is stored")

    attribute_run(r, no_model, lambda ids: vecs[list(ids)], max_rows=2)
    assert load_attribution(r.root).sort("sample_id", "unit", "index").equals(got.sort("sample_id", "unit", "index"))
    with pytest.raises(InputError, match="attribution rows: expected an integer >= 0, found -3"):
        attribute_run(r, no_model, lambda ids: vecs[list(ids)], max_rows=-3)


def _cli(capsys, *args):
    import sys

    from nla_probe.cli import main

    old, sys.argv = sys.argv, ["nla-probe", *[str(a) for a in args]]
    try:
        with pytest.raises(SystemExit) as e:
            main()
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_report_and_merge_write_the_page_and_keep_attribution(run, tmp_path, capsys):
    code, out, err = _cli(capsys, "report", run)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == f"explorer (open in a browser): {(run / 'report.html').resolve()}"
    assert (run / "report.html").is_file()
    code, out, err = _cli(capsys, "merge", run, "--out", tmp_path / "merged")
    assert code == 0, err
    merged = tmp_path / "merged"
    assert out.strip().splitlines()[-1] == f"explorer (open in a browser): {(merged / 'report.html').resolve()}"
    assert load_attribution(merged).equals(load_attribution(run))
    saved = AblationResult.load(run).save(tmp_path / "saved")
    assert load_attribution(saved).equals(load_attribution(run))
