"""The progress line of a guest working through batches: done count, time per batch, time left."""

from __future__ import annotations

import time
from pathlib import Path

from compiler.toolchains.arm64 import BatchProgress


def test_progress_says_how_many_batches_and_estimates_what_is_left(tmp_path: Path) -> None:
    progress_file = tmp_path / "progress"
    progress = BatchProgress(progress_file, 16)
    assert progress().startswith("0/16 batches (the guest is starting")  # no file yet
    progress.started = time.monotonic() - 40.0  # 4 batches in 40 s: 10 s each, 12 left
    progress_file.write_text("4")
    line = progress()
    assert line.startswith("4/16 batches, 10 s each, about ")
    assert line.endswith(" left") and ("2 min" in line or "1 min 59 s" in line)


def test_a_half_written_count_reads_as_none_done(tmp_path: Path) -> None:
    progress_file = tmp_path / "progress"
    progress_file.write_text("")
    assert BatchProgress(progress_file, 3)().startswith("0/3 batches")
