"""Compare two build records (report.json) for what they say about the model, not how they were made.

Ignored: provenance (commit, tool versions, build command), the build key and every path into the
cache (they are digests of code and inputs), and timings (stage seconds, cache hits, latencies,
tuning wall time, the host's name). Everything else, from the stage table's sizes and fidelities to
the shipped files' sha256, must be equal. `edgebuild compare BEFORE AFTER` runs this on two
records or two directories of them (matched by relative path); the structural step of December
2026 was checked with it against records built at commit 89955bc.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

IGNORED_TOP = ("provenance", "build_key")
IGNORED_ROW = ("path", "seconds", "cached", "latency_ms", "latency_ratio")
TIMINGS = (
    "artifact_ms",
    "ort_fp32_ms",
    "ratio_vs_ort_fp32",
    "real_time_factor",
    "fp32_real_time_factor",
    "host",
    "gate",  # the speed gate's per-round CPU and wall times
)
TUNING_TIMES = ("wall_s", "seconds")  # inside stage stats: tuning and search wall times


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """`record` without what the module docstring says is ignored."""
    kept = {key: value for key, value in record.items() if key not in IGNORED_TOP}
    kept["stages"] = [
        {key: _drop(value, TUNING_TIMES) for key, value in row.items() if key not in IGNORED_ROW}
        for row in record.get("stages", [])
    ]
    metrics = dict(kept.get("metrics", {}))
    if "latency" in metrics:
        metrics["latency"] = {k: v for k, v in metrics["latency"].items() if k not in TIMINGS}
        note = metrics["latency"].get("note", "")
        metrics["latency"]["timed"] = "first measurement" in note  # whether it was timed, not the time
        metrics["latency"].pop("note", None)
    kept["metrics"] = metrics
    return kept


def _drop(value: Any, keys: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _drop(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_drop(v, keys) for v in value]
    return value


def differences(before: Any, after: Any, where: str = "") -> list[str]:
    """Every place two JSON values differ, as "path: before -> after" lines."""
    if isinstance(before, dict) and isinstance(after, dict):
        lines = []
        for key in sorted(set(before) | set(after)):
            here = f"{where}.{key}" if where else str(key)
            if key not in before:
                lines.append(f"{here}: only after ({_short(after[key])})")
            elif key not in after:
                lines.append(f"{here}: only before ({_short(before[key])})")
            else:
                lines += differences(before[key], after[key], here)
        return lines
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{where}: {len(before)} entries -> {len(after)}"]
        return [
            line
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            for line in differences(b, a, f"{where}[{i}]")
        ]
    return [] if before == after else [f"{where}: {_short(before)} -> {_short(after)}"]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "..."


def compare_records(before: Path, after: Path) -> list[str]:
    return differences(comparable(json.loads(before.read_text())), comparable(json.loads(after.read_text())))


def compare_paths(before: Path, after: Path) -> list[str]:
    """Differences between two records, or between every record of two directories (by relative path)."""
    if before.is_file() and after.is_file():
        return compare_records(before, after)
    if before.is_dir() and (before / "report.json").is_file() and after.is_dir():
        return compare_records(before / "report.json", after / "report.json")
    lines = []
    for path in sorted(before.rglob("*.json")):
        relative = path.relative_to(before)
        other = after / relative
        if not other.is_file():
            lines.append(f"{relative}: missing in {after}")
            continue
        lines += [f"{relative}: {line}" for line in compare_records(path, other)]
    return lines


__all__ = ["comparable", "compare_paths", "compare_records", "differences"]
