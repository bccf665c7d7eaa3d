"""Microsoft Olive's `olive auto-opt` INT8 output for a model: the peer column of `edgebuild bench`.

Needs the `olive` extra (olive-ai, plus `requests`, which olive-ai imports without declaring it);
`make bench` installs it. Olive runs in a subprocess of this interpreter, fully offline: `auto-opt`
with INT8 precision on CPU is ONNX export (for a Hugging Face directory) + graph optimisation +
ONNX Runtime dynamic quantisation, none of which needs a dataset or the model hub.

Guarantees: `auto_opt_int8` returns the path of an existing .onnx file (its external data, if any,
lies next to it) or raises `UserError` with a one-line message; the full Olive log is kept in the
work directory.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from compiler.errors import ModelError, UserError

INSTALL_HINT = "run `make bench`, which installs the olive extra (or `pip install -e '.[olive]'`)"

# CI=1 makes Olive skip its telemetry heartbeat entirely: with OLIVE_DISABLE_TELEMETRY alone the
# heartbeat is still sent before the opt-out is read. The HF/ORT switches keep the run offline.
OFFLINE_ENV = {
    "CI": "1",
    "OLIVE_DISABLE_TELEMETRY": "1",
    "ORT_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}

# Olive reads a directory holding any *.onnx as an ONNX model, and one holding model_config.json as
# the output of an earlier Olive command: neither file is part of a Hugging Face checkpoint.
_OLIVE_MARKERS = ("*.onnx", "model_config.json")

# The last line of a Python traceback: "TypeError: ...", "google.protobuf.message.DecodeError: ...".
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Unsupported)\b.*:")


def olive_available() -> bool:
    """Whether olive-ai and its undeclared `requests` dependency are importable here (imports neither)."""
    try:
        importlib.metadata.version("olive-ai")
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("olive") is not None and importlib.util.find_spec("requests") is not None


def olive_command(model: Path, output: Path, *, is_onnx: bool, task: str = "feature-extraction") -> list[str]:
    """The `olive auto-opt` command line for an INT8 CPU build of `model` into `output`."""
    command = [
        sys.executable,
        "-m",
        "olive",
        "auto-opt",
        "--model_name_or_path",
        str(model),
        "--precision",
        "int8",
        "--device",
        "cpu",
        "--provider",
        "CPUExecutionProvider",
        "--output_path",
        str(output),
        "--log_level",
        "1",
        "--disable_telemetry",
    ]
    if not is_onnx:
        # Olive's default task is text-generation-with-past (a decoder with KV cache). Its default
        # TorchScript exporter fails on transformers 5 models ("BertModel.forward() got multiple
        # values for argument 'use_cache'"); the dynamo exporter passes inputs as keywords and works.
        command += ["--task", task, "--use_dynamo_exporter"]
    return command


def auto_opt_int8(
    source: Path, workdir: Path, *, is_onnx: bool, timeout_s: int = 900, task: str = "feature-extraction"
) -> Path:
    """Run `olive auto-opt` (INT8, CPU, CPUExecutionProvider) on `source` and return the output .onnx.

    `source` is a Hugging Face model directory (exported to ONNX by Olive for `task`), or an .onnx
    file when `is_onnx`. Everything Olive writes (output, its cache, `olive-auto-opt.log`) goes under
    `workdir`. Raises `UserError` (one line) when olive is not installed, the source is unusable,
    or Olive fails or times out (naming the last meaningful line of its log).
    """
    source = Path(source).resolve()
    if not source.exists():
        raise ModelError(f"olive peer: {source} does not exist; pass an .onnx file or a Hugging Face model directory")
    if is_onnx and not (source.is_file() and source.suffix == ".onnx"):
        raise ModelError(f"olive peer: {source} is not an .onnx file (is_onnx=True)")
    if not is_onnx and not (source / "config.json").is_file():
        raise ModelError(f"olive peer: {source} is not a Hugging Face model directory (no config.json)")
    if not olive_available():
        raise UserError(f"olive peer: olive-ai (with requests) is not installed in {sys.prefix}; {INSTALL_HINT}")

    workdir = Path(workdir).resolve()
    output = workdir / "olive-output"
    # Olive's cache is keyed on the input path, not its content, and it nests and merges outputs:
    # start clean so the model found below is this run's.
    for stale in (output, workdir / ".olive-cache"):
        shutil.rmtree(stale, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    model = source if is_onnx else _staged_hf_directory(source, workdir / "olive-input")

    log_path = workdir / "olive-auto-opt.log"
    command = olive_command(model, output, is_onnx=is_onnx, task=task)
    with log_path.open("w") as log:
        log.write(" ".join(command) + "\n\n")
        log.flush()
        try:
            # cwd=workdir: Olive puts its .olive-cache in the current directory.
            result = subprocess.run(
                command,
                cwd=workdir,
                env={**os.environ, **OFFLINE_ENV},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise UserError(
                f"olive peer: `olive auto-opt` took over {timeout_s} s on {source.name}; see {log_path}"
            ) from None
        finally:
            # Its cache holds every intermediate model (~3x the FP32 size) and is never reused (see above).
            shutil.rmtree(workdir / ".olive-cache", ignore_errors=True)
    if result.returncode != 0:
        raise UserError(
            f"olive peer: `olive auto-opt` failed on {source.name} (exit {result.returncode}): "
            f"{_last_meaningful_line(log_path)}; full log: {log_path}"
        )
    return _find_output_model(output, source.name, log_path)


def _staged_hf_directory(source: Path, staging: Path) -> Path:
    """A directory of symlinks to `source`'s files, without the files that would change Olive's reading of it."""
    if not any(next(source.glob(pattern), None) for pattern in _OLIVE_MARKERS):
        return source
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for entry in source.iterdir():
        if not any(entry.match(pattern) for pattern in _OLIVE_MARKERS):
            (staging / entry.name).symlink_to(entry)
    return staging


def _find_output_model(output: Path, source_name: str, log_path: Path) -> Path:
    """The .onnx model Olive produced under `output` (it may nest it in sub-folders)."""
    candidates = sorted(p for p in output.rglob("*.onnx") if p.is_file()) if output.is_dir() else []
    if len(candidates) > 1:
        # Several files (e.g. split models): the one Olive's model_config.json names is the output.
        named = _model_config_path(output)
        candidates = [p for p in candidates if named is not None and p.resolve() == named.resolve()] or candidates
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        found = ", ".join(str(p.relative_to(output)) for p in candidates)
        raise UserError(
            f"olive peer: `olive auto-opt` produced several models for {source_name} ({found}), "
            f"none named by its model_config.json; see {output}"
        )
    # A failing pass does not fail the command: Olive logs the traceback, then exits 0 with no model.
    raise UserError(
        f"olive peer: `olive auto-opt` produced no model for {source_name}: "
        f"{_last_meaningful_line(log_path)}; full log: {log_path}"
    )


def _model_config_path(output: Path) -> Path | None:
    for config_file in output.rglob("model_config.json"):
        config = json.loads(config_file.read_text()).get("config", {})
        path = Path(config.get("model_path") or "")
        if path.suffix != ".onnx" and config.get("onnx_file_name"):
            path = path / config["onnx_file_name"]
        if path.suffix == ".onnx":
            return path
    return None


def _last_meaningful_line(log_path: Path) -> str:
    """The last exception line of the log (`SomeError: why`) or, failing that, its last line that says something."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        return "(no log)"
    # Not blank, not a traceback's caret row, not a progress bar.
    meaningful = [line for line in lines if line and not re.fullmatch(r"[\^~\s]+", line) and "it/s]" not in line]
    exceptions = [line for line in meaningful if _EXCEPTION_LINE.match(line)]
    return (exceptions or meaningful or ["(empty log)"])[-1][:300]
