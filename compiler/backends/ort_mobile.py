"""ONNX Runtime Mobile backend for Android: ONNX -> `.ort` (ORT format) + the reduced-build op config.

`python -m onnxruntime.tools.convert_onnx_models_to_ort` writes the ORT-format model (a
FlatBuffer that ORT Mobile's minimal build loads without the ONNX protobuf machinery) and the
`required_operators_and_types` config that `build.sh --include_ops_by_config` uses to build an
onnxruntime-android library holding only those kernels. Options used: the "Runtime"
optimisation style (basic optimisations applied now, the rest recorded and replayed on the
device, so NNAPI/XNNPACK can still claim nodes), the "arm" target platform and type reduction.

Reproducibility: the converter writes its kernel-type table (`kernel_type_str_resolver`) from a
hash map seeded by addresses, so two conversions of the same model differ in the first few
kilobytes although they hold the same entries in the same logical order (measured 2026-11-29:
1,944 differing bytes in MiniLM's 23 MB). `canonical_ort` rebuilds that head region in a fixed
order and keeps the model's bytes as they are; the op config's comment lines name temp paths and
are rewritten. Verification runs the `.ort` itself in this host's onnxruntime.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import flatbuffers
import onnxruntime as ort
from flatbuffers import encode, number_types
from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import ArgTypeAndIndex as ArgEntry
from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (
    InferenceSession,
    KernelTypeStrArgsEntry,
    KernelTypeStrResolver,
    OpIdKernelTypeStrArgsEntry,
)

from compiler.backends.base import Backend, CompiledGraph, CompileRequest, Predict
from compiler.errors import ModelError
from compiler.progress import heartbeat, step

ARTIFACT_NAME = "model.ort"
OPS_CONFIG = "required_operators_and_types.config"
CONVERT_TIMEOUT_S = 1800
_IDENTIFIER = b"ORTM"
_SESSION_FIELDS = {"ort_version": 4, "model": 6, "kernel_type_str_resolver": 10}  # vtable offsets


class OrtMobileBackend(Backend):
    """`runtime = { name = "onnxruntime-mobile" }`: an .ort file plus its reduced-build operator config."""

    runtime: ClassVar[str] = "onnxruntime-mobile"
    tools: ClassVar[tuple[str, ...]] = ("onnxruntime", "onnx", "flatbuffers")
    capabilities: ClassVar[frozenset[str]] = frozenset({"stepwise"})
    bench_note: ClassVar[str] = "latency: host ORT running the .ort file (Runtime-style, x86), not a phone figure"

    def key_config(self, request: CompileRequest) -> dict[str, Any]:
        return {"runtime": self.runtime, "precision": self.target.precision, "style": "Runtime", "platform": "arm"}

    def compile(self, request: CompileRequest, directory: Path) -> dict[str, Any]:
        return compile_model(request.model, directory)

    def predictor(self, artifact: Path, threads: int = 1) -> Predict:
        """The .ort file as on the phone: its recorded optimisations replayed."""
        from compiler.ort_session import predictor

        return predictor(artifact, threads, saved_optimizations=True)

    def signature(self, compiled: CompiledGraph) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        from compiler.backends.ort import signature_of

        return signature_of(compiled.artifact)


def compile_model(model_path: Path, directory: Path) -> dict[str, Any]:
    """Write `directory/model.ort` and `directory/required_operators_and_types.config`."""
    with tempfile.TemporaryDirectory(prefix="edgebuild-ort-mobile-") as tmp:
        source = Path(tmp) / "model.onnx"
        source.write_bytes(model_path.read_bytes())
        step("ort-mobile: converting to ORT format (Runtime optimisation style, arm platform, type reduction)")
        command = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(source)]
        command += ["--optimization_style", "Runtime", "--target_platform", "arm", "--enable_type_reduction"]
        env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
        try:
            with heartbeat("ort-mobile: converting"):
                done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=CONVERT_TIMEOUT_S)
        except subprocess.TimeoutExpired as error:
            raise ModelError(f"ORT format conversion took over {CONVERT_TIMEOUT_S} s") from error
        converted = sorted(Path(tmp).glob("*.with_runtime_opt.ort"))
        configs = sorted(Path(tmp).glob("*.with_runtime_opt.config"))
        if done.returncode != 0 or not converted or not configs:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ModelError(f"ONNX Runtime could not convert the model to ORT format: {last[0]}")
        (directory / ARTIFACT_NAME).write_bytes(canonical_ort(converted[0].read_bytes()))
        config = canonical_ops_config(configs[0].read_text())
        (directory / OPS_CONFIG).write_text(config)
    return {
        "artifact": ARTIFACT_NAME,
        "extra_files": {OPS_CONFIG: "config"},  # for ORT's reduced build: build.sh --include_ops_by_config
        "runtime": "onnxruntime-mobile",
        "runtime_version": ort.__version__,
        "converter": {
            "tool": "onnxruntime.tools.convert_onnx_models_to_ort",
            "onnxruntime": ort.__version__,
            "optimization_style": "Runtime",
            "target_platform": "arm",
        },
        "ops": operator_list(config),
        "tensor_dtypes": initializer_dtypes((directory / ARTIFACT_NAME).read_bytes()),
    }


def initializer_dtypes(data: bytes) -> dict[str, int]:
    """How many initializers of each ONNX dtype the .ort holds (proof that INT8 weights are INT8)."""
    import onnx

    graph = InferenceSession.InferenceSession.GetRootAs(data, 0).Model().Graph()
    counts: dict[str, int] = {}
    for i in range(graph.InitializersLength()):
        name = onnx.helper.tensor_dtype_to_np_dtype(graph.Initializers(i).DataType()).name
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def canonical_ops_config(text: str) -> str:
    """The op config without the converter's comment lines (they name temp paths)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return (
        "# Generated by edgebuild from model.ort (onnxruntime.tools.convert_onnx_models_to_ort)\n"
        + "\n".join(lines)
        + "\n"
    )


def operator_list(config: str) -> list[str]:
    """'domain:OpType' for every operator in the config (its lines are `domain;opset;Op{types},Op,...`)."""
    ops = set()
    for line in config.splitlines():
        if line.startswith("#") or ";" not in line:
            continue
        domain, _, entries = line.split(";", 2)
        depth, name = 0, ""
        for char in entries + ",":
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
            elif char == "," and depth == 0:
                ops.add(f"{domain}:{name.strip()}")
                name = ""
            elif depth == 0:
                name += char
    return sorted(ops)


def canonical_ort(data: bytes) -> bytes:
    """`data` with the session table and kernel-type table rebuilt in a fixed order.

    A FlatBuffer is written back to front: the model (everything below the session) sits at the
    end of the file and is kept byte for byte at the same distance from the end, so its internal
    offsets and alignment stay valid; what precedes it is re-serialised here from its content.
    """
    if data[4:8] != _IDENTIFIER:
        raise ModelError("not an ORT-format model (missing the ORTM identifier)")
    session = InferenceSession.InferenceSession.GetRootAs(data, 0)
    model_pos = _field_target(session, "model")
    if model_pos is None:
        raise ModelError("the ORT-format model has no model table")
    vtable_pos = model_pos - encode.Get(number_types.SOffsetTFlags.packer_type, data, model_pos)
    tail_start = min(model_pos, vtable_pos)
    tail_start -= tail_start % 8  # keep the 8-byte alignment the tail was written with
    version_pos = _field_target(session, "ort_version")
    tail = data[tail_start:]

    builder = flatbuffers.Builder(len(data) + 65536)
    builder.head = len(builder.Bytes) - len(tail)
    builder.Bytes[builder.head :] = tail
    builder.minalign = 8

    def from_end(pos: int) -> int:
        return len(data) - pos

    resolver = _write_resolver(builder, session.KernelTypeStrResolver())
    if version_pos is not None and version_pos >= tail_start:
        version = from_end(version_pos)
    else:
        version = builder.CreateString(session.OrtVersion() or b"")
    InferenceSession.Start(builder)
    InferenceSession.AddOrtVersion(builder, version)
    InferenceSession.AddModel(builder, from_end(model_pos))
    if resolver is not None:
        InferenceSession.AddKernelTypeStrResolver(builder, resolver)
    builder.Finish(InferenceSession.End(builder), file_identifier=_IDENTIFIER)
    return bytes(builder.Output())


def _field_target(session: Any, field: str) -> int | None:
    """Absolute position of the object a session field points to (None if the field is unset)."""
    offset = session._tab.Offset(_SESSION_FIELDS[field])
    return session._tab.Indirect(offset + session._tab.Pos) if offset else None


def _write_resolver(builder: flatbuffers.Builder, resolver: Any) -> int | None:
    """The kernel-type table, written entry by entry in its (sorted) logical order."""
    if resolver is None:
        return None
    entries = []
    for i in range(resolver.OpKernelTypeStrArgsLength()):
        entry = resolver.OpKernelTypeStrArgs(i)
        kernel_args = []
        for j in range(entry.KernelTypeStrArgsLength()):
            kernel = entry.KernelTypeStrArgs(j)
            args = []
            for k in range(kernel.ArgsLength()):
                arg = kernel.Args(k)
                ArgEntry.Start(builder)
                ArgEntry.AddArgType(builder, arg.ArgType())
                ArgEntry.AddIndex(builder, arg.Index())
                args.append(ArgEntry.End(builder))
            args_vector = _vector(builder, KernelTypeStrArgsEntry.StartArgsVector, args)
            name = builder.CreateString(kernel.KernelTypeStr())
            KernelTypeStrArgsEntry.Start(builder)
            KernelTypeStrArgsEntry.AddKernelTypeStr(builder, name)
            KernelTypeStrArgsEntry.AddArgs(builder, args_vector)
            kernel_args.append(KernelTypeStrArgsEntry.End(builder))
        kernels_vector = _vector(builder, OpIdKernelTypeStrArgsEntry.StartKernelTypeStrArgsVector, kernel_args)
        op_id = builder.CreateString(entry.OpId())
        OpIdKernelTypeStrArgsEntry.Start(builder)
        OpIdKernelTypeStrArgsEntry.AddOpId(builder, op_id)
        OpIdKernelTypeStrArgsEntry.AddKernelTypeStrArgs(builder, kernels_vector)
        entries.append(OpIdKernelTypeStrArgsEntry.End(builder))
    entries_vector = _vector(builder, KernelTypeStrResolver.StartOpKernelTypeStrArgsVector, entries)
    KernelTypeStrResolver.Start(builder)
    KernelTypeStrResolver.AddOpKernelTypeStrArgs(builder, entries_vector)
    return KernelTypeStrResolver.End(builder)


def _vector(builder: flatbuffers.Builder, start: Any, offsets: list[int]) -> int:
    start(builder, len(offsets))
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()
