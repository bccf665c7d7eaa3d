"""The speed gate's measurement: artifact and reference alternately in rounds, CPU and wall time."""

from __future__ import annotations

import time

import numpy as np
import pytest

from compiler.engine.latency import measure_rounds, round_ratios, spread, synthetic_feeds
from compiler.engine.specs import TensorSpec


def _busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_rounds_alternate_and_measure_cpu_time() -> None:
    order: list[str] = []

    def candidate() -> None:
        order.append("c")
        _busy(0.002)

    def reference() -> None:
        order.append("r")
        _busy(0.001)

    measured = measure_rounds(candidate, reference, rounds=4, block_s=0.004, warmup=1)
    calls = measured["calls_per_round"]
    assert calls == 2  # 4 ms blocks of a 2 ms call
    timed = order[2 + 6 :]  # after one warm-up call each and three probe calls each
    first = [["c", "r"], ["r", "c"]]  # who goes first alternates from round to round
    assert timed == [who for index in range(4) for who in first[index % 2] for _ in range(calls)]
    ratios = round_ratios(measured, "cpu")
    assert len(ratios) == 4 and all(1.6 < r < 2.5 for r in ratios), ratios  # twice the CPU time per call
    assert len(measured["candidate_wall_s"]) == 4


def test_spread_and_synthetic_inputs() -> None:
    assert spread([1.0, 2.0, 3.0, 4.0, 5.0]) == {"median": 3.0, "q1": 2.0, "q3": 4.0, "min": 1.0, "max": 5.0}
    specs = (TensorSpec("image", "float32", ("batch", 1, 8, 8)), TensorSpec("mask", "int64", ("batch", "seq")))
    feeds = synthetic_feeds(specs, {"image": [2, 1, 8, 8], "mask": [2, 5]})
    assert feeds is not None
    assert feeds["image"].shape == (2, 1, 8, 8) and feeds["image"].dtype == np.float32
    assert feeds["mask"].dtype == np.int64 and (feeds["mask"] == 1).all()
    assert synthetic_feeds(specs, {"image": [2, 1, 8, 8]}) is None  # no bench shape for "mask"


@pytest.mark.parametrize("clock", ["cpu", "wall"])
def test_round_ratios(clock: str) -> None:
    measured = {f"candidate_{clock}_s": [2.0, 3.0], f"reference_{clock}_s": [1.0, 2.0]}
    assert round_ratios(measured, clock) == [2.0, 1.5]
