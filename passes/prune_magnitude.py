"""Unstructured magnitude pruning of Conv/MatMul/Gemm weights (saves space only under compression)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.errors import ConfigError, PassError
from passes.base import GraphPass, PassContext, PassResult

# Which inputs of each op are weights: never biases (Gemm's C), which are few and matter more.
_WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "MatMul": (0, 1), "Gemm": (0, 1)}
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
_NOTE = "dense ONNX: zeros are stored; only compressed size shrinks"


class PruneMagnitude(GraphPass):
    """Zero the smallest-magnitude weights of Conv/MatMul/Gemm to a target sparsity.

    What it does: picks the weight initializers of Conv, ConvTranspose, MatMul and Gemm (not
    biases, not tensors with fewer than `min_size` values, not initializers that are also graph
    inputs) and sets the `sparsity` fraction with the smallest |w| to zero, per tensor or over
    all of them at once ("global": layers with small weights lose more). Exactly that many values
    are zeroed (ties broken by position), so the achieved sparsity is the target, give or take
    zeros the weights already had.

    Needs: float weight initializers (run it before fusion and quantization, which repack them).
    No fine-tuning happens here: accuracy loss is whatever the verify stage measures.

    Guarantees, stated plainly in the stats: a dense ONNX file stores the zeros, so neither its
    size nor its speed changes; only a compressed copy (zlib shown) shrinks. For a real size and
    speed gain remove whole channels instead (structured pruning, a PyTorch pass).
    """

    name: ClassVar[str] = "prune-magnitude"
    tools: ClassVar[tuple[str, ...]] = ("onnx", "numpy")
    must_precede: ClassVar[tuple[str, ...]] = (
        "fuse",
        "quantize-dynamic-int8",
        "quantize-static-int8",
        "convert-fp16",
        "quantize-int4-weights",
    )

    @dataclass(frozen=True)
    class Config:
        sparsity: float = 0.5  # fraction of the selected weights set to zero
        scope: Literal["per-tensor", "global"] = "per-tensor"
        min_size: int = 1024  # tensors with fewer values are left alone

        def __post_init__(self) -> None:
            if not 0.0 <= self.sparsity < 1.0:
                raise ConfigError(f"prune-magnitude: option 'sparsity' must be in [0, 1), got {self.sparsity}")

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        pruned = onnx.ModelProto()
        pruned.CopyFrom(model)
        targets = _weight_initializers(pruned, self.config.min_size)
        if not targets:
            raise PassError(
                f"no Conv/ConvTranspose/MatMul/Gemm weight initializer with at least "
                f"min_size={self.config.min_size} float values to prune"
            )
        weights = {init.name: numpy_helper.to_array(init) for init in targets}
        if self.config.scope == "global":
            masks = _global_masks(weights, self.config.sparsity)
        else:
            masks = {
                name: _smallest(np.abs(w).ravel(), self.config.sparsity).reshape(w.shape) for name, w in weights.items()
            }
        per_tensor = {}
        for init in targets:
            values = np.where(masks[init.name], 0, weights[init.name]).astype(weights[init.name].dtype)
            init.CopyFrom(numpy_helper.from_array(values, init.name))
            per_tensor[init.name] = round(float(np.mean(values == 0)), 4)
        total = sum(w.size for w in weights.values())
        zeros = sum(int(np.sum(masks[name] | (w == 0))) for name, w in weights.items())
        before_bytes, after_bytes = model.SerializeToString(), pruned.SerializeToString()
        stats: dict[str, Any] = {
            "scope": self.config.scope,
            "tensors_pruned": len(targets),
            "weights_considered": total,
            "sparsity_target": self.config.sparsity,
            "sparsity_achieved": round(zeros / total, 4),
            "per_tensor_sparsity": per_tensor,
            "raw_bytes_before": len(before_bytes),
            "raw_bytes_after": len(after_bytes),
            "zlib_bytes_before": len(zlib.compress(before_bytes)),
            "zlib_bytes_after": len(zlib.compress(after_bytes)),
            "note": _NOTE,
        }
        return PassResult(pruned, stats)


def _weight_initializers(model: onnx.ModelProto, min_size: int) -> list[onnx.TensorProto]:
    """The weight initializers to prune, each once even when several nodes share it."""
    graph_inputs = {value.name for value in model.graph.input}
    by_name = {init.name: init for init in model.graph.initializer if init.name not in graph_inputs}
    chosen: dict[str, onnx.TensorProto] = {}
    for node in model.graph.node:
        for index in _WEIGHT_INPUTS.get(node.op_type, ()):
            init = by_name.get(node.input[index]) if index < len(node.input) else None
            if init is not None and init.data_type in _FLOAT_TYPES and np.prod(init.dims) >= min_size:
                chosen[init.name] = init
    return list(chosen.values())


def _smallest(magnitudes: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of exactly round(fraction * n) smallest entries (stable: ties by position)."""
    count = int(round(fraction * magnitudes.size))
    mask = np.zeros(magnitudes.size, dtype=bool)
    if count:
        mask[np.argsort(magnitudes, kind="stable")[:count]] = True
    return mask


def _global_masks(weights: dict[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
    flat = np.concatenate([np.abs(w).astype(np.float64).ravel() for w in weights.values()])
    mask = _smallest(flat, fraction)
    masks, offset = {}, 0
    for name, w in weights.items():
        masks[name] = mask[offset : offset + w.size].reshape(w.shape)
        offset += w.size
    return masks
