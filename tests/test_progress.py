"""Progress that shows in logs: off a terminal, counted work and opaque steps print plain lines."""

from __future__ import annotations

import time

import pytest

from compiler import progress


def test_counted_work_prints_periodic_lines_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    bar = progress.progress_bar()
    assert isinstance(bar, progress.LogProgress)  # pytest's stderr is not a terminal
    bar.every_s = 0.0
    with bar:
        task = bar.add_task("calibrating", total=4)
        for _ in range(4):
            bar.advance(task)
    lines = [line for line in capsys.readouterr().err.splitlines() if "calibrating" in line]
    assert "calibrating: 1/4 (25%), running" in lines[0] and "calibrating: 4/4 (100%), done" in lines[-1]


def test_a_quiet_interval_prints_nothing_until_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.LogProgress(every_s=3600) as bar:
        task = bar.add_task("scoring", total=3)
        for _ in range(3):
            bar.advance(task)
    assert capsys.readouterr().err.count("scoring") == 1  # only the final line


def test_a_heartbeat_reports_an_opaque_step_while_it_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.heartbeat("tvm: tuning", lambda: "3 of 64 trials measured", every_s=0.05):
        time.sleep(0.3)
    err = capsys.readouterr().err
    assert "tvm: tuning: still running" in err and "3 of 64 trials measured" in err
    count = err.count("still running")
    time.sleep(0.2)
    assert capsys.readouterr().err.count("still running") == 0 and count >= 2  # it stops with the block
