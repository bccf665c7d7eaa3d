"""Constant folding and graph simplification (onnxslim, onnxsim as fallback), size-limited and checked."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from compiler import onnx_io
from compiler.errors import DataError, PassError
from passes.base import Feeds, GraphPass, PassContext, PassResult

# What ORT raises when it cannot load or run a model; they share no base class but Exception.
_ORT_ERRORS = (
    ort_state.Fail,
    ort_state.InvalidGraph,
    ort_state.InvalidArgument,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
    ort_state.EPFail,
)
# onnxslim optimizations that rewrite the attention, embedding and GELU subgraphs into shapes
# onnxruntime.transformers' fusions no longer recognise (measured on a BERT export: 2 Attention
# and 1 EmbedLayerNormalization fused before, none after). "fold" skips them.
_FUSION_HOSTILE = ["graph_fusion", "dead_node_elimination"]
_RANDOM_FEED_DIM = 2  # the size given to symbolic dims (batch, seq) in generated feeds
_MB = 1 << 20

Signature = list[tuple[str, int, tuple[int | str | None, ...]]]


class FoldConstants(GraphPass):
    """Fold constant subgraphs and simplify the graph with onnxslim (onnxsim if onnxslim fails).

    What it does: evaluates every subgraph that depends only on constants (shape arithmetic,
    ConstantOfShape, weight transposes), stores the results as initializers and merges common
    subexpressions ("fold"); "full" also applies onnxslim's pattern rewrites (Conv+BN, Gemm,
    reshape/transpose chains) and dead-node elimination. "auto" is "fold" for transformers (architecture "attention"),
    because the full rewrites stop the later `fuse` pass from finding attention, else "full".
    No single folded tensor may exceed `max_constant_mb`, and if the model as a whole grows by
    more than that the input is kept unchanged (stats say so).

    Needs: nothing; uses the calibration batches for its check when the recipe has them, else
    feeds generated from the input signature (floats random, integers 1, symbolic dims 2).

    Guarantees: graph inputs and outputs keep their names, element types and dims (symbolic axes
    stay symbolic); ORT outputs of input and output agree (cosine >= `min_cosine` per output,
    integer outputs exactly), else PassError.
    """

    name: ClassVar[str] = "fold-constants"
    tools: ClassVar[tuple[str, ...]] = ("onnx", "onnxslim", "onnxsim", "onnxruntime")
    must_precede: ClassVar[tuple[str, ...]] = (
        "fuse",
        "quantize-dynamic-int8",
        "quantize-static-int8",
        "convert-fp16",
        "quantize-int4-weights",
        "prune-magnitude",
    )

    @dataclass(frozen=True)
    class Config:
        level: Literal["auto", "fold", "full"] = "auto"
        max_constant_mb: float = 64.0  # largest folded tensor, and largest allowed growth of the model
        min_cosine: float = 0.9999  # numeric check: per output, per batch
        check_batches: int = 4  # calibration batches used by the check

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        config = self.config
        level = config.level if config.level != "auto" else ("fold" if ctx.architecture == "attention" else "full")
        limit_bytes = int(config.max_constant_mb * _MB)
        stats: dict[str, Any] = {"level": level}
        try:
            folded = _slim(model, level, limit_bytes)
            stats["backend"] = "onnxslim"
        # onnxslim raises whatever its graph surgeon or shape inference hits; any failure there
        # is a reason to try the other tool, and onnxsim's own failure is reported below.
        except Exception as error:
            stats["onnxslim_error"] = f"{type(error).__name__}: {str(error)[:300]}"
            try:
                folded = _simplify(model, level, config.max_constant_mb)
            except Exception as fallback_error:  # same: any onnxsim failure
                raise PassError(
                    f"onnxslim failed ({stats['onnxslim_error']}) and onnxsim failed too "
                    f"({type(fallback_error).__name__}: {str(fallback_error)[:300]})"
                ) from fallback_error
            stats["backend"] = "onnxsim"

        growth = onnx_io.tensor_bytes(folded) - onnx_io.tensor_bytes(model)
        if growth > limit_bytes:
            stats["kept_input"] = (
                f"folding grew the model by {growth / _MB:.1f} MB, over max_constant_mb={config.max_constant_mb}"
            )
            folded = _copy(model)
        resolved = _check_signature(model, folded, ctx.dynamic_axes)
        if resolved:
            stats["resolved_output_dims"] = resolved  # exporter-invented names folding made concrete
        stats["check"] = _check_numerics(
            model, folded, _check_feeds(model, ctx, config.check_batches), config.min_cosine, ctx.workdir
        )
        stats.update(
            nodes_before=len(model.graph.node),
            nodes_after=len(folded.graph.node),
            initializers_before=len(model.graph.initializer),
            initializers_after=len(folded.graph.initializer),
            bytes_before=onnx_io.tensor_bytes(model),
            bytes_after=onnx_io.tensor_bytes(folded),
        )
        return PassResult(folded, stats)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _slim(model: onnx.ModelProto, level: str, limit_bytes: int) -> onnx.ModelProto:
    import onnxslim

    skip = _FUSION_HOSTILE if level == "fold" else None
    # onnxslim edits the model it is given: hand it a copy. size_threshold is per folded tensor.
    folded = onnxslim.slim(_copy(model), skip_optimizations=skip, size_threshold=limit_bytes)
    if folded is None:  # only happens with model_check, which we do not ask for; be explicit anyway
        raise RuntimeError("onnxslim returned no model")
    return folded


def _simplify(model: onnx.ModelProto, level: str, max_constant_mb: float) -> onnx.ModelProto:
    import onnxsim

    # check_n=0: our own check below uses real data; onnxsim's would use random token ids.
    folded, _ = onnxsim.simplify(
        _copy(model), check_n=0, perform_optimization=level == "full", tensor_size_threshold=f"{max_constant_mb}MB"
    )
    return folded


def _signature(model: onnx.ModelProto) -> Signature:
    initializers = {init.name for init in model.graph.initializer}
    values = [v for v in model.graph.input if v.name not in initializers] + list(model.graph.output)
    return [
        (
            v.name,
            v.type.tensor_type.elem_type,
            tuple(
                d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in v.type.tensor_type.shape.dim
            ),
        )
        for v in values
    ]


def _check_signature(
    before: onnx.ModelProto, after: onnx.ModelProto, declared: frozenset[str] | None
) -> dict[str, int | str | None]:
    """Folding must not rename, retype or fix the dims of graph inputs and outputs, except that an
    output dim with a symbolic name nobody declared (`declared`: the recipe's dynamic axes; None:
    every name is declared) may be resolved: the exporter invented it for a dim that is static.
    Returns those resolutions, "output[axis]: old name" -> new value."""
    old, new = _signature(before), _signature(after)
    if [name for name, _, _ in old] != [name for name, _, _ in new]:
        raise PassError(
            f"folding changed the graph's inputs/outputs from {[n for n, _, _ in old]} to {[n for n, _, _ in new]}"
        )
    outputs = {output.name for output in before.graph.output}
    resolved: dict[str, int | str | None] = {}
    for (name, old_type, old_dims), (_, new_type, new_dims) in zip(old, new, strict=True):
        if old_type == new_type and (not old_dims or old_dims == new_dims):
            continue
        invented = [
            (axis, dim)
            for axis, dim in enumerate(old_dims)
            if declared is not None and (dim is None or (isinstance(dim, str) and dim not in declared))
        ]
        if (
            name in outputs
            and old_type == new_type
            and len(old_dims) == len(new_dims)
            and all(o == n or (axis, o) in invented for axis, (o, n) in enumerate(zip(old_dims, new_dims, strict=True)))
        ):
            resolved.update(
                {f"{name}[{axis}]: {dim}": new_dims[axis] for axis, dim in invented if new_dims[axis] != dim}
            )
            continue
        raise PassError(
            f"folding changed '{name}' from type {old_type} dims {list(old_dims)} to "
            f"type {new_type} dims {list(new_dims)} (dynamic axes must stay symbolic: "
            f"declared {sorted(declared) if declared is not None else 'all'})"
        )
    return resolved


def _check_feeds(model: onnx.ModelProto, ctx: PassContext, limit: int) -> tuple[str, list[Feeds]]:
    try:
        batches = ctx.calibration()[:limit]
    except DataError:
        batches = []
    return ("calibration", batches) if batches else ("generated", [_generated_feeds(model)])


def _generated_feeds(model: onnx.ModelProto) -> Feeds:
    rng = np.random.default_rng(0)
    feeds: Feeds = {}
    initializers = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        shape = tuple(d.dim_value if d.HasField("dim_value") else _RANDOM_FEED_DIM for d in tensor_type.shape.dim)
        # Integer inputs are token ids, masks or indices: 1 is valid for all, random values are not.
        feeds[value.name] = (
            rng.standard_normal(shape).astype(dtype)
            if np.issubdtype(dtype, np.floating)
            else np.ones(shape, dtype=dtype)
        )
    return feeds


def _session(model: onnx.ModelProto, which: str, workdir: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        if onnx_io.tensor_bytes(model) < onnx_io.EXTERNAL_ABOVE:
            return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        with tempfile.TemporaryDirectory(dir=workdir, prefix="fold-check-") as tmp:  # over 2 GB: from a file
            onnx_io.save(model, Path(tmp) / "model.onnx")
            return ort.InferenceSession(str(Path(tmp) / "model.onnx"), options, providers=["CPUExecutionProvider"])
    except _ORT_ERRORS as error:
        raise PassError(
            f"cannot check folding: ONNX Runtime cannot load the {which} model: {str(error).strip()[:400]}"
        ) from error


def _run(session: ort.InferenceSession, feeds: Feeds, which: str) -> list[np.ndarray]:
    try:
        return session.run(None, feeds)
    except _ORT_ERRORS as error:
        raise PassError(
            f"cannot check folding: ONNX Runtime cannot run the {which} model: {str(error).strip()[:400]}"
        ) from error


def _check_numerics(
    before: onnx.ModelProto,
    after: onnx.ModelProto,
    feeds: tuple[str, list[Feeds]],
    min_cosine: float,
    workdir: Path,
) -> dict[str, Any]:
    source, batches = feeds
    worst = 1.0
    names = [output.name for output in before.graph.output]
    reference, candidate = _session(before, "input", workdir), _session(after, "folded", workdir)
    for batch in batches:
        for name, expected, actual in zip(
            names, _run(reference, batch, "input"), _run(candidate, batch, "folded"), strict=True
        ):
            if expected.shape != actual.shape:
                raise PassError(f"folded model's output '{name}' has shape {actual.shape}, expected {expected.shape}")
            if not np.issubdtype(expected.dtype, np.floating):
                if not np.array_equal(expected, actual):
                    raise PassError(f"folded model's integer output '{name}' differs from the input model's")
                continue
            score = _cosine(expected, actual)
            worst = min(worst, score)
            if not score >= min_cosine:  # also catches NaN
                raise PassError(
                    f"folded model's output '{name}' diverges: cosine {score:.6f} < min_cosine {min_cosine}"
                )
    return {"feeds": source, "batches": len(batches), "min_cosine": round(worst, 8)}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two outputs, robust to what operator tests feed: NaN and infinities
    must sit in the same places with the same values (then the finite rest is compared), and
    values near the float64 limits are scaled first so the dot product cannot overflow."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    finite_a, finite_b = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(finite_a, finite_b) or not np.array_equal(a[~finite_a], b[~finite_b], equal_nan=True):
        return 0.0
    a, b = a[finite_a], b[finite_b]
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
    if scale == 0.0:  # two all-zero outputs agree
        return 1.0
    a, b = a / scale, b / scale
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-300))
