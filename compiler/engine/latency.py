"""Side-by-side latency on the build host: runners timed round-robin, medians compared.

The machine is shared and noisy, so models are timed interleaved (each repeat runs every model
once) and compared by median: ratios measured together are the figures to quote.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np

from compiler.progress import progress_bar


def measure_latency(
    runners: Mapping[str, Callable[[], object]], repeats: int = 50, warmup: int = 5, label: str = "benchmarking"
) -> dict[str, float]:
    """Median seconds per call of each runner, measured interleaved."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    with progress_bar() as bar:
        task = bar.add_task(label, total=repeats)
        for _ in range(repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
            bar.advance(task)
    return {name: float(np.median(values)) for name, values in times.items()}


__all__ = ["measure_latency"]
