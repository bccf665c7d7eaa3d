"""Benchmarks (`edgebuild bench`, `make bench`): tables measured side by side, never tests.

Each model family names its bench (`ModelFamily.bench`, a "module:function" here): desktop.py
times every desktop target of a one-graph recipe against PyTorch, ONNX Runtime, Olive (olive_peer.py)
and TVM; speech.py transcribes with every build against PyTorch and faster-whisper
(speech_sensitivity.py measures INT8 sensitivity per layer). delivery.py and install_kills.py
measure the OTA side (verification speed, deltas, metadata size, kill -9 during install);
model_update.py makes the fine-tuned model a delta is measured on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BenchOptions:
    repeats: int = 50  # timed runs per configuration (interleaved)
    olive: bool = True  # include Olive auto-opt as a peer
    tvm_trials: tuple[int, ...] = (64, 256)  # desktop-tvm budgets beside the untuned row
    workdir: Path = field(default_factory=Path)  # scratch files until the timing is done


def run_bench(models: list[str], options: BenchOptions, json_path: Path | None = None) -> dict[str, Any]:
    """Each recipe's family bench, one after another; the results by recipe (also as JSON)."""
    import numpy as np

    from compiler.dotted import resolve
    from compiler.engine import config
    from compiler.engine.cache import Cache
    from compiler.families.catalogue import family

    results: dict[str, Any] = {}
    scratch = Cache()
    try:
        for name in models:
            entry = family(config.load_recipe(name).family).bench
            if entry is None:
                continue
            bench = resolve(entry)
            run = BenchOptions(options.repeats, options.olive, options.tvm_trials, scratch.scratch())
            results[name] = bench(name, run)
    finally:
        scratch.close()
    if json_path is not None:
        json_path.write_text(
            json.dumps(results, indent=2, default=lambda v: float(v) if isinstance(v, np.floating) else v)
        )
    return results


__all__ = ["BenchOptions", "run_bench"]
