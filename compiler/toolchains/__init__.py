"""Pinned toolchain environments: converters that cannot share the main environment run in their own.

What: a toolchain is a lock file, `compiler/toolchains/<name>.lock` (every package pinned with
`==`, transitive dependencies included, as `pip freeze` writes them), turned on first use into a
virtualenv under the git-ignored `.toolchains/<name>-<sha256 of the lock, 12 hex>/`. A backend runs
a worker script inside it (`run`), as a subprocess with a timeout; the two sides exchange files and
one JSON result, never Python objects, so the toolchain's numpy/onnx/protobuf never meet ours.

Any backend declares its toolchain the same way: a lock file plus `Toolchain("<name>")`. The
lock's digest and its pins (`versions()`) go into the backend's cache key and the manifest.

Guarantees: an environment is used only once complete (a stamp file is written last; a half-built
one from a killed process is removed and rebuilt); two builds creating the same toolchain wait on
one lock; a failure to create or run it is one `UserError` line naming the toolchain, the step and
what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from compiler.errors import UserError
from compiler.progress import heartbeat, step

LOCK_DIR = Path(__file__).parent
STAMP = ".edgebuild-complete"
INSTALL_TIMEOUT_S = 3600


def read_pins(lock: Path, what: str) -> list[str]:
    """The `name==version` lines of a lock file (comments and blank lines dropped); every line must pin."""
    if not lock.is_file():
        raise UserError(f"{what}: no lock file {lock}")
    lines = [line.split("#", 1)[0].strip() for line in lock.read_text().splitlines()]
    pins = [line for line in lines if line]
    loose = [line for line in pins if "==" not in line]
    if loose:
        raise UserError(f"{lock}: every line must pin an exact version (name==version); not: {loose[0]}")
    return pins


@dataclass(frozen=True)
class Toolchain:
    """One pinned environment: `name` selects compiler/toolchains/<name>.lock."""

    name: str
    home_dir: Path | None = None  # default: the current workspace's .toolchains/
    lock_dir: Path = LOCK_DIR

    @property
    def home(self) -> Path:
        if self.home_dir is not None:
            return self.home_dir
        from compiler import workspace

        return workspace.current().toolchains

    @property
    def lock(self) -> Path:
        return self.lock_dir / f"{self.name}.lock"

    def pins(self) -> list[str]:
        """The lock's requirement lines (comments and blank lines dropped)."""
        return read_pins(self.lock, f"toolchain '{self.name}'")

    def versions(self) -> dict[str, str]:
        """{package: version} from the lock: what the cache key and the manifest record."""
        return dict(line.split("==", 1) for line in self.pins())

    def digest(self) -> str:
        return hashlib.sha256(self.lock.read_bytes()).hexdigest()

    @property
    def directory(self) -> Path:
        return self.home / f"{self.name}-{self.digest()[:12]}"

    @property
    def python(self) -> Path:
        return self.directory / "bin" / "python"

    def ready(self) -> bool:
        return (self.directory / STAMP).is_file()

    def ensure(self) -> Path:
        """The toolchain's Python, creating the environment first if needed (minutes, once)."""
        pins = self.pins()
        if self.ready():
            return self.python
        self.home.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.home / f".{self.name}.lock")):
            if self.ready():  # another build finished it while we waited
                return self.python
            if self.directory.exists():  # debris of an interrupted creation
                shutil.rmtree(self.directory)
            step(f"creating the pinned '{self.name}' toolchain in {self.directory} (first use only)")
            started = time.perf_counter()
            try:
                self._create(pins)
            except BaseException:
                shutil.rmtree(self.directory, ignore_errors=True)
                raise
            step(f"toolchain '{self.name}' ready ({time.perf_counter() - started:.0f} s)")
        return self.python

    def _create(self, pins: list[str]) -> None:
        self._check([sys.executable, "-m", "venv", str(self.directory)], "create the virtualenv", timeout=300)
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        # --no-deps: the lock is complete, so pip installs exactly it and resolves nothing.
        install = [str(self.python), "-m", "pip", "install", "--quiet", "--no-deps", "-r", str(self.lock)]
        self._check(install, f"install {len(pins)} pinned packages", timeout=INSTALL_TIMEOUT_S, env=env)
        self._check([str(self.python), "-m", "pip", "check"], "check the installed dependencies", timeout=300, env=env)
        (self.directory / STAMP).write_text(json.dumps({"lock_sha256": self.digest(), "pins": pins}, indent=1))

    def _check(self, command: list[str], what: str, timeout: int, env: dict[str, str] | None = None) -> None:
        try:
            with heartbeat(f"toolchain '{self.name}': {what}"):
                result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired as error:
            raise UserError(f"toolchain '{self.name}': could not {what} within {timeout} s") from error
        if result.returncode != 0:
            lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if "WARNING" not in line]
            tail = " | ".join(lines[-2:]) or f"exit {result.returncode}"
            raise UserError(
                f"toolchain '{self.name}': could not {what} ({tail}); check network access to the package "
                f"index, then rerun (the lock is {self.lock})"
            )

    def search_path(self, path: str) -> str:
        """PATH for the worker: this toolchain's bin first, no other virtualenv's bin.

        Converters run tools by name (onnx2tf runs `onnxsim`): with the main venv active, its
        onnxsim (other onnx) ran instead and gave another MiniLM graph; with no venv active, none
        ran. Both were measured on 2026-11-29; only the pinned tool is right.
        """
        entries = [entry for entry in path.split(os.pathsep) if entry]
        kept = [entry for entry in entries if not (Path(entry).parent / "pyvenv.cfg").is_file()]
        return os.pathsep.join([str(self.directory / "bin"), *kept])

    def run(self, worker: Path, request: dict[str, Any], timeout_s: int, cwd: Path | None = None) -> dict[str, Any]:
        """Run `worker` (a script importing only this toolchain's packages) on `request`; return its
        JSON result. The worker gets the request file's path as its only argument and writes its
        result to request["result"]; a worker error is a UserError with its last line."""
        python = self.ensure()
        with tempfile.TemporaryDirectory(prefix=f"edgebuild-{self.name}-") as tmp:
            request_path, result_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
            request_path.write_text(json.dumps({**request, "result": str(result_path)}))
            env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
            env.update({"ORT_DISABLE_TELEMETRY": "1", "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"})
            env["PATH"] = self.search_path(env.get("PATH", os.defpath))
            command = [str(python), str(worker), str(request_path)]
            try:
                with heartbeat(f"{worker.stem} in toolchain '{self.name}' ({request.get('command', 'run')})"):
                    result = subprocess.run(
                        command, capture_output=True, text=True, timeout=timeout_s, cwd=cwd or tmp, env=env, check=False
                    )
            except subprocess.TimeoutExpired as error:
                raise UserError(
                    f"{worker.stem} in toolchain '{self.name}' did not finish within {timeout_s} s"
                ) from error
            if result.returncode != 0 or not result_path.is_file():
                lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
                raise UserError(
                    f"{worker.stem} in toolchain '{self.name}' failed (exit {result.returncode}): "
                    f"{lines[-1] if lines else 'no output'}"
                )
            return json.loads(result_path.read_text())
