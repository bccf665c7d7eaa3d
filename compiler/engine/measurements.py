"""Host measurements (latency) remembered per model bytes and host, outside the build cache.

A latency is a fact about a model file on a host, not a product of the build: timing the same
bytes again gives a slightly different number every time. If every build re-measured, the figure
recorded in a bundle's manifest would change the bundle's bytes from one build to the next, and
"same inputs -> byte-identical bundle" could not hold. So the first measurement of a set of model
files on a host is kept in a ledger under $XDG_STATE_HOME/edgebuild/measurements (default
~/.local/state/...), keyed by the files' sha256, the measuring setup and a host fingerprint, and
reused by every later build on that host, including builds from an empty cache. Another host (or
a changed runtime version) measures afresh. `edgebuild cache clear --measurements` forgets them.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from compiler.digests import canonical_json, sha256_bytes


def ledger_dir() -> Path:
    """$XDG_STATE_HOME/edgebuild/measurements, else ~/.local/state/edgebuild/measurements."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edgebuild" / "measurements"


@cache
def host_fingerprint() -> dict[str, Any]:
    """What makes timings on this host comparable: CPU model, logical CPUs, machine, kernel."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "machine": platform.machine(), "system": platform.system()}


def recall_or_measure(subject: dict[str, Any], measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The ledger's record for `subject` on this host, else `measure()` recorded then returned.

    `subject` names what is measured and how (model digests, shapes, threads, runtime version); it
    must be JSON-serialisable. The record is written atomically; a corrupt record is re-measured.
    """
    key = sha256_bytes(canonical_json({"subject": subject, "host": host_fingerprint()}).encode())
    path = ledger_dir() / f"{key}.json"
    try:
        recorded: dict[str, Any] = json.loads(path.read_text())["values"]
        return recorded
    except (OSError, ValueError, KeyError, TypeError):
        pass
    values = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{key}-", dir=path.parent)
    with os.fdopen(handle, "w") as file:
        json.dump({"subject": subject, "host": host_fingerprint(), "values": values}, file, indent=1, sort_keys=True)
    os.replace(temp, path)
    return values


def forget_all() -> int:
    """Delete every recorded measurement; returns how many were removed."""
    removed = 0
    for path in ledger_dir().glob("*.json"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
