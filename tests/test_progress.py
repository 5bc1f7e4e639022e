"""Progress reporting when output is not a terminal: plain periodic lines with chunk, rows/s and ETA."""

import io
import os
import re
import subprocess
import sys

import numpy as np
import polars as pl

from nla_probe.progress import ProgressLines


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_lines_give_chunk_conditions_rate_and_eta_hand_computed():
    buf, clock = io.StringIO(), FakeClock()
    p = ProgressLines(buf, interval=10.0, clock=clock)
    p.start("quote_ban", expected_rows=1400, n_chunks=7)
    clock.t += 20.0
    assert p.update(1, 200, ["no_ban", "ban_double", "ban_single", "no_ban"])
    clock.t += 5.0  # within the interval: throttled
    assert not p.update(2, 400, ["no_ban"])
    clock.t += 5.0  # 30 s in: 600 rows -> 20.0 rows/s, ETA 30 * 800 / 600 = 40 s
    assert p.update(3, 600, ["ban_all"])
    clock.t += 95.0
    p.finish(1400)
    lines = buf.getvalue().splitlines()
    assert lines == [
        "[ablate] quote_ban: started, 1400 rows expected in 7 chunk(s)",
        # 200 rows in 20 s = 10.0 rows/s; ETA 20 * 1200 / 200 = 120 s
        "[ablate] quote_ban: chunk 1/7, conditions no_ban, ban_double (+1), 200/1400 rows (14%), 10.0 rows/s, "
        "elapsed 0:20, ETA 2:00",
        "[ablate] quote_ban: chunk 3/7, condition ban_all, 600/1400 rows (43%), 20.0 rows/s, elapsed 0:30, ETA 0:40",
        "[ablate] quote_ban: done, 1400 rows in 2:05",
    ]


def test_eta_is_not_invented_when_a_kind_writes_more_rows_than_expected():
    buf, clock = io.StringIO(), FakeClock()
    p = ProgressLines(buf, clock=clock)
    p.start("x", expected_rows=10, n_chunks=1)
    clock.t += 4.0
    p.update(1, 12, [])
    assert buf.getvalue().splitlines()[-1] == "[ablate] x: chunk 1/1, 12/10 rows (120%), 3.0 rows/s, elapsed 0:04, ETA n/a"


def test_lines_only_when_stdout_is_not_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdout", Tty())
    assert ProgressLines.for_stdout() is None
    log = io.StringIO()
    monkeypatch.setattr(sys, "stdout", log)
    p = ProgressLines.for_stdout()
    assert p is not None and p.stream is log


def test_cli_ablate_into_a_pipe_prints_progress_lines(fixture_pairs, tmp_path):
    """The real command with stdout captured (a pipe, not a terminal): lines appear, with every field."""
    av, ar = fixture_pairs["qwen2"]
    rng = np.random.default_rng(0)
    acts = tmp_path / "acts.parquet"
    pl.DataFrame({"doc_id": [f"d{i // 2}" for i in range(8)], "position": list(range(8))}).with_columns(
        pl.Series("activation_vector", rng.normal(size=(8, 64)).astype(np.float32), dtype=pl.Array(pl.Float32, 64))
    ).write_parquet(acts)
    spec = tmp_path / "red.toml"
    spec.write_text('seed = 1\n[experiment]\nname = "red"\nkind = "redaction"\n[sampling]\nmax_new_tokens = 4\n'
                    '[metrics]\nn_boot = 50\n[[conditions]]\nname = "unedited"\n'
                    '[[conditions]]\nname = "prose"\ntransforms = [{name = "prose_only"}]\n')
    out = subprocess.run(
        [sys.executable, "-m", "nla_probe", "ablate", str(spec), "--av", str(av), "--ar", str(ar), "--data", str(acts),
         "--out", str(tmp_path / "run"), "--batch-size", "4", "--no-report", "--attribution-rows", "0",
         "--threads", "1"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    lines = [s for s in out.stdout.splitlines() if s.startswith("[ablate] ")]
    assert lines[0] == "[ablate] red: started, 16 rows expected in 2 chunk(s)"
    first = re.fullmatch(r"\[ablate\] red: chunk 1/2, conditions unedited, prose, 8/16 rows \(50%\), "
                         r"(\d+\.\d) rows/s, elapsed (\d+:\d\d), ETA (\d+:\d\d)", lines[1])
    assert first, lines[1]
    assert re.fullmatch(r"\[ablate\] red: done, 16 rows in \d+:\d\d", lines[-1]), lines[-1]


def test_kinds_that_write_after_their_last_chunk_still_report_chunks():
    buf, clock = io.StringIO(), FakeClock()
    p = ProgressLines(buf, interval=10.0, clock=clock)
    p.start("copying", expected_rows=128, n_chunks=4)
    clock.t += 5.0
    assert not p.chunk_done(1)  # throttled: 5 s after the start line
    clock.t += 25.0  # 30 s for 2 of 4 chunks -> ETA 30 s
    assert p.chunk_done(2)
    assert buf.getvalue().splitlines()[-1] == ("[ablate] copying: chunk 2/4 processed (rows are written after the "
                                               "last chunk), elapsed 0:30, ETA 0:30")
    clock.t += 20.0
    p.update(4, 64, ["free"])
    clock.t += 20.0
    assert not p.chunk_done(3)  # rows are being written: the row lines take over
