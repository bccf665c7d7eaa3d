"""A reference interpreter for Core ML ML Programs (MIL), in numpy, so that `.mlpackage`s run on Linux.

Core ML itself only executes models on macOS (coremltools' `predict` needs the Core ML framework), so
a Linux build cannot check a converted model against its FP32 reference with the real runtime. This
module loads the saved package back into coremltools' Python MIL representation (`load_program`) and
executes the `main` function op by op in program order (`run`), with one small numpy function per
op type (`OPS`). It is a reference, not a performance runtime: it models what the program says, not
how the Neural Engine or GPU computes it.

Precision model: every op computes in float32 (fp16 inputs are widened) and its result is then
stored in the dtype the program declares for that op's output, so an op typed fp16 rounds its
result to float16. That models fp16 *storage* precision between ops (including overflow to inf and
fp16 epsilons such as layer_norm's 1e-12 clamped to 6e-8), not fp16 accumulation inside an op.
Outputs come back in the dtype the program declares; IEEE results (inf, NaN) are kept, without
numpy warnings, as a device would produce them.

Compressed weights (`constexpr_*` ops: affine dequantize, blockwise shift-scale, LUT, sparse, cast)
are materialised by coremltools' own decompression (`materialized_val_inference` of the op class),
never by a reimplementation here. Control flow (ops with nested blocks: cond, while_loop) and any op
type missing from `OPS` raise `UnsupportedOpError`; `unsupported_ops` names them before running.

Converting the models this interpreter was checked on (coremltools 9.0, torch 2.13, transformers 5):
the digits CNN converts with `torch.export.export(model, (x,), strict=False).run_decompositions({})`.
MiniLM (a transformers 5 BERT, wrapped to return `last_hidden_state`, int32 token inputs cast to
int64 inside the wrapper) does *not* convert after `run_decompositions({})`: the exported mask code
leaves `aten.new_ones`, `aten.__and__` and `aten.where.ScalarOther`, which coremltools' torch frontend
does not know. It converts after the default (core ATen) decompositions:
`torch.export.export(wrapper, (ids, mask, types), strict=False).run_decompositions()` and then
`ct.convert(ep, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17, ...)` with
`ct.TensorType(..., dtype=np.int32)` inputs.

A pitfall this interpreter exposed: `linear_quantize_weights` (int8, linear_symmetric) on the FP32 MiniLM also
quantizes the broadcast attention-mask fill constant (-3.4e38, float32's lowest), its scale overflows to inf
and the dequantized constant is 0 * inf = NaN, so every input with padding gives NaN outputs. The FP16 model
is not affected (the constant is -inf there, which the quantizer skips); excluding consts that feed `select`
(`OptimizationConfig(..., op_type_configs={"select": None})`) avoids it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from compiler.errors import DataError, ModelError, did_you_mean

if TYPE_CHECKING:
    from coremltools.converters.mil.mil import Function, Operation, Program, Var

__all__ = ["OPS", "UnsupportedOpError", "load_program", "op_types", "run", "unsupported_ops"]

MAIN = "main"


class UnsupportedOpError(ModelError):
    """The program uses an op this interpreter cannot execute (the message names it)."""


# ---------------------------------------------------------------------------------------------------
# Loading


def load_program(package: Path) -> Program:
    """The pymil Program of a saved ML Program package (`.mlpackage`), weights included.

    Uses coremltools' own MIL proto loader; no Core ML framework is needed (the model is not compiled).
    """
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_to_pymil

    package = Path(package)
    if not package.exists():
        raise ModelError(f"{package}: no such Core ML package")
    try:
        model = ct.models.MLModel(str(package), skip_model_load=True)
    except Exception as error:  # coremltools raises bare Exceptions for unreadable packages
        raise ModelError(f"{package}: not a readable Core ML package ({error})") from error
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise ModelError(f"{package}: is a '{spec.WhichOneof('Type')}' model, not an ML Program (mlprogram)")
    return milproto_to_pymil(
        model_spec=spec, specification_version=spec.specificationVersion, file_weights_dir=model.weights_dir or ""
    )


def _main(program: Program) -> Function:
    if MAIN not in program.functions:
        raise ModelError(f"ML Program has no '{MAIN}' function; {did_you_mean(MAIN, program.functions)}")
    return program.functions[MAIN]


def op_types(program: Program) -> list[str]:
    """Sorted unique op types of the program's main function (const and constexpr ops included)."""
    return sorted({op.op_type for op in _main(program).operations})


def _is_constexpr(op: Operation) -> bool:
    return op.op_type.startswith("constexpr_") and hasattr(op, "materialized_val_inference")


def _supported(op: Operation) -> bool:
    if op.blocks:
        return False
    return op.op_type == "const" or _is_constexpr(op) or op.op_type in OPS


def unsupported_ops(program: Program) -> list[str]:
    """Sorted op types in main that `run` cannot execute (unknown types and control flow)."""
    return sorted({op.op_type for op in _main(program).operations if not _supported(op)})


# ---------------------------------------------------------------------------------------------------
# Values


@cache
def _np_dtype(builtin: type) -> np.dtype:
    from coremltools.converters.mil.mil import types

    return np.dtype(types.nptype_from_builtin(builtin))


def _declared_shape(var: Var) -> tuple[int, ...] | None:
    """The var's shape if every dimension is a known integer, else None."""
    shape = tuple(var.shape)
    return shape if all(isinstance(d, (int, np.integer)) for d in shape) else None


def _as_declared(var: Var, value: Any, op: Operation) -> np.ndarray:
    """`value` stored as `var` declares it: its dtype (fp16 rounding happens here) and, checked, its shape."""
    array = np.asarray(value)
    if array.dtype.kind in "US" or var.dtype is None:
        return array
    array = array.astype(_np_dtype(var.dtype), copy=False)
    shape = _declared_shape(var)
    if shape is not None and array.shape != shape:
        raise RuntimeError(
            f"MIL interpreter: op '{op.name}' ({op.op_type}) computed shape {array.shape} for "
            f"'{var.name}', the program declares {shape}"
        )
    return array


class Inputs:
    """One op's input values by parameter name; float16 tensors are widened to float32 for computing."""

    def __init__(self, op: Operation, env: dict[str, np.ndarray]) -> None:
        self.op = op
        self._env = env

    def _value(self, var: Var) -> np.ndarray:
        value = self._env.get(var.name)
        if value is None:
            value = var.val
        if value is None:
            raise RuntimeError(f"MIL interpreter: op '{self.op.name}' reads '{var.name}', which has no value yet")
        array = np.asarray(value)
        return array.astype(np.float32) if array.dtype == np.float16 else array

    def has(self, name: str) -> bool:
        return name in self.op.inputs

    def __call__(self, name: str, default: Any = None) -> Any:
        """The input's array (a list of arrays for tuple inputs such as concat's `values`), or `default`."""
        var = self.op.inputs.get(name)
        if var is None:
            return default
        if isinstance(var, (list, tuple)):
            return [self._value(v) for v in var]
        return self._value(var)

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self(name)
        return default if value is None else int(value)

    def integers(self, name: str, default: list[int] | None = None) -> list[int] | None:
        value = self(name)
        return default if value is None else [int(v) for v in np.ravel(value)]

    def number(self, name: str, default: float | None = None) -> float | None:
        value = self(name)
        return default if value is None else float(value)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self(name)
        return default if value is None else bool(value)

    def flags(self, name: str, count: int) -> list[bool]:
        value = self(name)
        return [False] * count if value is None else [bool(v) for v in np.ravel(value)]

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self(name)
        return default if value is None else str(value)


OpFn = Callable[[Inputs], Any]


# ---------------------------------------------------------------------------------------------------
# Elementwise ops


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> OpFn:
    return lambda a: fn(a("x"), a("y"))


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> OpFn:
    return lambda a: fn(a("x"))


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def _gelu(a: Inputs) -> np.ndarray:
    x, mode = a("x"), a.text("mode", "EXACT")
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    raise ModelError(f"MIL op '{a.op.name}' (gelu): unknown mode '{mode}'")


def _softmax(a: Inputs) -> np.ndarray:
    return _softmax_along(a("x"), a.integer("axis", -1))


def _softmax_along(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def _clamped_relu(a: Inputs) -> np.ndarray:
    x, alpha, beta = a("x"), a.number("alpha"), a.number("beta")
    return np.minimum(np.where(x >= 0, x, alpha * x), beta)


def _prelu(a: Inputs) -> np.ndarray:
    x, alpha = a("x"), a("alpha")
    alpha = alpha.reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(x >= 0, x, alpha * x)


def _with_alpha(fn: Callable[[np.ndarray, float], np.ndarray]) -> OpFn:
    return lambda a: fn(a("x"), a.number("alpha"))


def _with_alpha_beta(fn: Callable[[np.ndarray, float, float], np.ndarray]) -> OpFn:
    return lambda a: fn(a("x"), a.number("alpha"), a.number("beta"))


def _with_epsilon(fn: Callable[[np.ndarray], np.ndarray]) -> OpFn:
    return lambda a: fn(a("x") + a("epsilon", 0.0))


def _select(a: Inputs) -> np.ndarray:
    return np.where(a("cond").astype(bool), a("a"), a("b"))


def _cast(a: Inputs) -> np.ndarray:
    return a("x")  # the declared output dtype does the conversion (see _as_declared)


# ---------------------------------------------------------------------------------------------------
# Reductions and normalisation


def _axes(a: Inputs, rank: int, name: str = "axes") -> tuple[int, ...] | None:
    axes = a.integers(name)
    return None if axes is None else tuple(sorted(ax % rank if rank else 0 for ax in axes))


def _reduce(fn: Callable[..., np.ndarray]) -> OpFn:
    def apply(a: Inputs) -> np.ndarray:
        x = a("x")
        return fn(x, axis=_axes(a, x.ndim), keepdims=a.flag("keep_dims"))

    return apply


def _log_sum_exp(x: np.ndarray, axis: tuple[int, ...] | None, keepdims: bool) -> np.ndarray:
    peak = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    return out if keepdims else np.squeeze(out, axis=axis)


def _arg_reduce(fn: Callable[..., np.ndarray]) -> OpFn:
    def apply(a: Inputs) -> np.ndarray:
        x, axis = a("x"), a.integer("axis", -1)
        out = fn(x, axis=axis)
        return np.expand_dims(out, axis) if a.flag("keep_dims") else out

    return apply


_REDUCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "reduce_sum": np.sum,
    "reduce_mean": np.mean,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
    "reduce_l1_norm": lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
    "reduce_l2_norm": lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
    "reduce_sum_square": lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims),
    "reduce_log_sum": lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims)),
    "reduce_log_sum_exp": _log_sum_exp,
}


def _normalise(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> np.ndarray:
    mean = np.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    variance = np.mean(centred * centred, axis=axes, keepdims=True)
    return centred / np.sqrt(variance + epsilon)


def _layer_norm(a: Inputs) -> np.ndarray:
    x = a("x")
    axes = _axes(a, x.ndim) or tuple(range(x.ndim))
    y = _normalise(x, axes, a.number("epsilon", 1e-5))
    param_shape = [x.shape[d] if d in axes else 1 for d in range(x.ndim)]
    gamma, beta = a("gamma"), a("beta")
    if gamma is not None:
        y = y * gamma.reshape(param_shape)
    if beta is not None:
        y = y + beta.reshape(param_shape)
    return y


def _channel(v: np.ndarray, rank: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast over [N, C, *spatial]."""
    return v.reshape((1, -1) + (1,) * (rank - 2))


def _batch_norm(a: Inputs) -> np.ndarray:
    x = a("x")
    y = (x - _channel(a("mean"), x.ndim)) / np.sqrt(_channel(a("variance"), x.ndim) + a.number("epsilon", 1e-5))
    return _scale_shift(a, y)


def _instance_norm(a: Inputs) -> np.ndarray:
    x = a("x")
    return _scale_shift(a, _normalise(x, tuple(range(2, x.ndim)), a.number("epsilon", 1e-5)))


def _scale_shift(a: Inputs, y: np.ndarray) -> np.ndarray:
    """y * gamma + beta per channel, each only when the op has it."""
    if a.has("gamma"):
        y = y * _channel(a("gamma"), y.ndim)
    if a.has("beta"):
        y = y + _channel(a("beta"), y.ndim)
    return y


# ---------------------------------------------------------------------------------------------------
# Linear algebra, convolution and pooling


def _linear(a: Inputs) -> np.ndarray:
    y = np.matmul(a("x"), a("weight").T)
    bias = a("bias")
    return y if bias is None else y + bias


def _matmul(a: Inputs) -> np.ndarray:
    x, y = a("x"), a("y")
    if a.flag("transpose_x") and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if a.flag("transpose_y") and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _einsum(a: Inputs) -> np.ndarray:
    return np.einsum(a.text("equation"), *a("values"))


def _pads(
    pad_type: str, pad: list[int], size: tuple[int, ...], kernel: list[int], strides: list[int], dilations: list[int]
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim for pad_type valid / custom / same / same_lower.

    For same padding the total is `max(0, (ceil(d/s) - 1) * s + dilated_kernel - d)`; an odd total puts
    the extra element after (same) or before (same_lower).
    """
    if pad_type == "valid":
        return [(0, 0)] * len(kernel)
    if pad_type == "custom":
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(len(kernel))]
    if pad_type in ("same", "same_lower"):
        pads = []
        for d, k, s, dil in zip(size, kernel, strides, dilations, strict=True):
            total = max(0, (math.ceil(d / s) - 1) * s + (k - 1) * dil + 1 - d)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if pad_type == "same" else (large, small))
        return pads
    raise ModelError(f"unknown pad_type '{pad_type}'")


def _windows(x: np.ndarray, kernel: list[int], strides: list[int], dilations: list[int]) -> np.ndarray:
    """A strided view [N, C, *out, *kernel] of the sliding windows over x's spatial dims (no copy)."""
    spatial = len(kernel)
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    view = sliding_window_view(x, extent, axis=tuple(range(2, 2 + spatial)))
    index = (
        slice(None),
        slice(None),
        *(slice(None, None, s) for s in strides),
        *(slice(None, None, d) for d in dilations),
    )
    return view[index]


def _conv(a: Inputs) -> np.ndarray:
    x, weight = a("x"), a("weight")
    kernel = list(weight.shape[2:])
    spatial = len(kernel)
    strides = a.integers("strides", [1] * spatial)
    dilations = a.integers("dilations", [1] * spatial)
    groups = a.integer("groups", 1)
    pads = _pads(
        a.text("pad_type", "valid"), a.integers("pad", [0] * 2 * spatial), x.shape[2:], kernel, strides, dilations
    )
    windows = _windows(np.pad(x, [(0, 0), (0, 0), *pads]), kernel, strides, dilations)
    n, c_in = x.shape[:2]
    c_out, out = weight.shape[0], windows.shape[2 : 2 + spatial]
    c_group, out_group, patch = c_in // groups, c_out // groups, math.prod(kernel)
    # im2col: [groups, N * prod(out), C_in/groups * prod(kernel)] @ [groups, C_in/groups * prod(kernel), C_out/groups]
    cols = windows.reshape(n, groups, c_group, *out, *kernel)
    order = (1, 0, *range(3, 3 + spatial), 2, *range(3 + spatial, 3 + 2 * spatial))
    cols = cols.transpose(order).reshape(groups, n * math.prod(out), c_group * patch)
    kernels = weight.reshape(groups, out_group, c_group * patch).transpose(0, 2, 1)
    y = np.matmul(cols, kernels).reshape(groups, n, *out, out_group)
    y = y.transpose(1, 0, 2 + spatial, *range(2, 2 + spatial)).reshape(n, c_out, *out)
    bias = a("bias")
    return y if bias is None else y + _channel(bias, y.ndim)


def _pool_out_size(size: int, before: int, after: int, kernel: int, stride: int, ceil_mode: bool) -> int:
    """Output length of one pooled dim, as coremltools' type inference computes it."""
    total = before + after
    if not ceil_mode:
        return (size + total - kernel) // stride + 1
    out = (size + total - kernel + stride - 1) // stride + 1
    if (out - 1) * stride >= size + total / 2 and total > 0:
        out -= 1
    return out


def _pool_geometry(a: Inputs, shape: tuple[int, ...]) -> tuple[list[int], list[int], list[tuple[int, int]], list[int]]:
    """Kernel, strides, (before, after) padding, and the output size of a max_pool / avg_pool."""
    kernel = a.integers("kernel_sizes")
    spatial = len(kernel)
    strides = a.integers("strides", [1] * spatial)
    pad = a.integers("pad", [0] * 2 * spatial)
    pads = _pads(a.text("pad_type", "valid"), pad, shape[2:], kernel, strides, [1] * spatial)
    ceil_mode = a.flag("ceil_mode")
    out = [
        _pool_out_size(d, before, after, k, s, ceil_mode)
        for d, (before, after), k, s in zip(shape[2:], pads, kernel, strides, strict=True)
    ]
    return kernel, strides, pads, out


def _ceil_extra(
    shape: tuple[int, ...], kernel: list[int], strides: list[int], pads: list[tuple[int, int]], out: list[int]
) -> list[int]:
    """Padding needed after the padded input by windows that run past it (ceil_mode); never counted."""
    return [
        max(0, (o - 1) * s + k - (d + before + after))
        for o, s, k, d, (before, after) in zip(out, strides, kernel, shape[2:], pads, strict=True)
    ]


def _pooled(
    x: np.ndarray,
    kernel: list[int],
    strides: list[int],
    widths: list[tuple[int, int]],
    out: list[int],
    reduce: Callable[..., np.ndarray],
    fill: float = 0.0,
) -> np.ndarray:
    """`reduce` over each window of x padded by `widths` (per spatial dim) with `fill`, cropped to `out`."""
    padded = np.pad(x, [(0, 0), (0, 0), *widths], constant_values=fill)
    crop = (slice(None), slice(None), *(slice(0, o) for o in out))
    windows = _windows(padded, kernel, strides, [1] * len(kernel))[crop]
    return reduce(windows, axis=tuple(range(-len(kernel), 0)))


def _max_pool(a: Inputs) -> np.ndarray:
    x = a("x")
    kernel, strides, pads, out = _pool_geometry(a, x.shape)
    extra = _ceil_extra(x.shape, kernel, strides, pads, out)
    widths = [(before, after + e) for (before, after), e in zip(pads, extra, strict=True)]
    return _pooled(x, kernel, strides, widths, out, np.max, fill=-np.inf)


def _avg_pool(a: Inputs) -> np.ndarray:
    """Window sums over the count of input (and, unless excluded, explicit padding) elements in each window."""
    x = a("x")
    kernel, strides, pads, out = _pool_geometry(a, x.shape)
    extra = _ceil_extra(x.shape, kernel, strides, pads, out)
    widths = [(before, after + e) for (before, after), e in zip(pads, extra, strict=True)]
    sums = _pooled(x, kernel, strides, widths, out, np.sum)
    counted = np.ones((1, 1, *x.shape[2:]), dtype=np.float32)
    if not a.flag("exclude_padding_from_average"):
        counted = np.pad(counted, [(0, 0), (0, 0), *pads], constant_values=1.0)
        widths = [(0, e) for e in extra]
    return sums / _pooled(counted, kernel, strides, widths, out, np.sum)


def _sdpa(a: Inputs) -> np.ndarray:
    q, k, v = a("query"), a("key"), a("value")
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) / math.sqrt(q.shape[-1])
    mask = a("attn_mask")
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask
    return np.matmul(_softmax_along(scores, -1), v)


# ---------------------------------------------------------------------------------------------------
# Tensor shape, indexing and creation ops


def _reshape(a: Inputs) -> np.ndarray:
    """0 copies the input dim matched from the right (iOS 17; same as iOS 15 when the ranks agree)."""
    x, shape = a("x"), a.integers("shape")
    resolved = []
    for i, d in enumerate(shape):
        if d == 0:
            j = x.ndim - (len(shape) - i)
            d = x.shape[j] if j >= 0 else 1
        resolved.append(d)
    return x.reshape(resolved)


def _squeeze(a: Inputs) -> np.ndarray:
    x, axes = a("x"), a.integers("axes")
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(axes))


def _slice_by_index(a: Inputs) -> np.ndarray:
    x = a("x")
    rank = x.ndim
    begin, end = a.integers("begin"), a.integers("end")
    stride = a.integers("stride", [1] * rank)
    begin_mask, end_mask, squeeze_mask = (a.flags(m, rank) for m in ("begin_mask", "end_mask", "squeeze_mask"))
    index: list[int | slice] = []
    for i in range(rank):
        if squeeze_mask[i]:
            index.append(begin[i])
        else:
            index.append(slice(None if begin_mask[i] else begin[i], None if end_mask[i] else end[i], stride[i]))
    return x[tuple(index)]


def _slice_by_size(a: Inputs) -> np.ndarray:
    x, begin, size = a("x"), a.integers("begin"), a.integers("size")
    index = []
    for b, s, d in zip(begin, size, x.shape, strict=True):
        b = b % d if d else 0
        index.append(slice(b, None if s == -1 else b + s))
    return x[tuple(index)]


def _concat(a: Inputs) -> np.ndarray:
    values, axis = a("values"), a.integer("axis")
    if a.flag("interleave"):
        stacked = np.stack(values, axis=(axis % values[0].ndim) + 1)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


def _split(a: Inputs) -> tuple[np.ndarray, ...]:
    x, axis = a("x"), a.integer("axis")
    sizes = a.integers("split_sizes")
    if sizes is None:
        return tuple(np.split(x, a.integer("num_splits"), axis=axis))
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _pad(a: Inputs) -> np.ndarray:
    x, pad, mode = a("x"), a.integers("pad"), a.text("mode", "constant")
    padded = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - padded) + [(pad[2 * i], pad[2 * i + 1]) for i in range(padded)]
    if mode == "constant":
        return np.pad(x, widths, constant_values=a.number("constant_val", 0.0))
    if mode in ("reflect", "replicate"):
        return np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")
    raise ModelError(f"MIL op '{a.op.name}' (pad): unknown mode '{mode}'")


def _checked_indices(a: Inputs, indices: np.ndarray, size: int) -> np.ndarray:
    """Indices as intp; out-of-range ones are a data error (Core ML's result is undefined for them)."""
    indices = indices.astype(np.intp)
    if indices.size and (indices.min() < -size or indices.max() >= size):
        raise DataError(
            f"MIL op '{a.op.name}' ({a.op.op_type}): index out of range [{-size}, {size}) "
            f"(found {indices.min()}..{indices.max()})"
        )
    return indices


def _gather(a: Inputs) -> np.ndarray:
    x, axis, batch_dims = a("x"), a.integer("axis", 0), a.integer("batch_dims", 0)
    axis %= x.ndim
    indices = _checked_indices(a, a("indices"), x.shape[axis])
    if batch_dims == 0:
        return np.take(x, indices, axis=axis)
    batch = x.shape[:batch_dims]
    xs = x.reshape((-1, *x.shape[batch_dims:]))
    idx = indices.reshape((-1, *indices.shape[batch_dims:]))
    out = np.stack([np.take(xb, ib, axis=axis - batch_dims) for xb, ib in zip(xs, idx, strict=True)])
    return out.reshape(batch + out.shape[1:])


def _gather_along_axis(a: Inputs) -> np.ndarray:
    x, axis = a("x"), a.integer("axis", 0)
    indices = _checked_indices(a, a("indices"), x.shape[axis])
    return np.take_along_axis(x, indices, axis=axis)


def _gather_nd(a: Inputs) -> np.ndarray:
    x, batch_dims = a("x"), a.integer("batch_dims", 0)
    indices = a("indices").astype(np.intp)
    depth = indices.shape[-1]
    for i, size in enumerate(x.shape[batch_dims : batch_dims + depth]):
        _checked_indices(a, indices[..., i], size)
    if batch_dims == 0:
        return x[tuple(np.moveaxis(indices, -1, 0))]
    batch = x.shape[:batch_dims]
    xs = x.reshape((-1, *x.shape[batch_dims:]))
    idx = indices.reshape((-1, *indices.shape[batch_dims:]))
    out = np.stack([xb[tuple(np.moveaxis(ib, -1, 0))] for xb, ib in zip(xs, idx, strict=True)])
    return out.reshape(batch + out.shape[1:])


def _cumsum(a: Inputs) -> np.ndarray:
    x, axis = a("x"), a.integer("axis", 0)
    if a.flag("reverse"):
        x = np.flip(x, axis)
    out = np.cumsum(x, axis=axis)
    if a.flag("exclusive"):
        out = out - x
    return np.flip(out, axis) if a.flag("reverse") else out


def _flatten2d(a: Inputs) -> np.ndarray:
    x, axis = a("x"), a.integer("axis", 1)
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _range_1d(a: Inputs) -> np.ndarray:
    return np.arange(a("start"), a("end"), a("step"))


# ---------------------------------------------------------------------------------------------------
# The op table

OPS: dict[str, OpFn] = {
    # elementwise binary (numpy broadcasting, as MIL specifies)
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "real_div": _binary(np.true_divide),
    "floor_div": _binary(np.floor_divide),
    "mod": _binary(np.mod),
    "pow": _binary(np.power),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    "equal": _binary(np.equal),
    "not_equal": _binary(np.not_equal),
    "greater": _binary(np.greater),
    "greater_equal": _binary(np.greater_equal),
    "less": _binary(np.less),
    "less_equal": _binary(np.less_equal),
    "logical_and": _binary(np.logical_and),
    "logical_or": _binary(np.logical_or),
    "logical_xor": _binary(np.logical_xor),
    # elementwise unary
    "abs": _unary(np.abs),
    "acos": _unary(np.arccos),
    "asin": _unary(np.arcsin),
    "atan": _unary(np.arctan),
    "atanh": _unary(np.arctanh),
    "ceil": _unary(np.ceil),
    "cos": _unary(np.cos),
    "cosh": _unary(np.cosh),
    "erf": _unary(_erf),
    "exp": _unary(np.exp),
    "exp2": _unary(np.exp2),
    "floor": _unary(np.floor),
    "logical_not": _unary(np.logical_not),
    "round": _unary(np.round),
    "sign": _unary(np.sign),
    "sin": _unary(np.sin),
    "sinh": _unary(np.sinh),
    "sqrt": _unary(np.sqrt),
    "square": _unary(np.square),
    "tan": _unary(np.tan),
    "tanh": _unary(np.tanh),
    "identity": _unary(lambda x: x),
    "cast": _cast,
    "inverse": _with_epsilon(np.reciprocal),
    "log": _with_epsilon(np.log),
    "rsqrt": _with_epsilon(lambda x: 1.0 / np.sqrt(x)),
    "clip": _with_alpha_beta(lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi)),
    "threshold": _with_alpha(np.maximum),
    "select": _select,
    # activations
    "relu": _unary(lambda x: np.maximum(x, 0)),
    "relu6": _unary(lambda x: np.clip(x, 0, 6)),
    "sigmoid": _unary(_sigmoid),
    "silu": _unary(lambda x: x * _sigmoid(x)),
    "softplus": _unary(lambda x: np.logaddexp(x, 0)),
    "softsign": _unary(lambda x: x / (1 + np.abs(x))),
    "gelu": _gelu,
    "softmax": _softmax,
    "leaky_relu": _with_alpha(lambda x, alpha: np.where(x >= 0, x, alpha * x)),
    "elu": _with_alpha(lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))),
    "thresholded_relu": _with_alpha(lambda x, alpha: np.where(x >= alpha, x, 0)),
    "clamped_relu": _clamped_relu,
    "prelu": _prelu,
    "linear_activation": _with_alpha_beta(lambda x, alpha, beta: alpha * x + beta),
    "scaled_tanh": _with_alpha_beta(lambda x, alpha, beta: alpha * np.tanh(beta * x)),
    "sigmoid_hard": _with_alpha_beta(lambda x, alpha, beta: np.clip(alpha * x + beta, 0, 1)),
    # reductions and normalisation
    **{name: _reduce(fn) for name, fn in _REDUCTIONS.items()},
    "reduce_argmax": _arg_reduce(np.argmax),
    "reduce_argmin": _arg_reduce(np.argmin),
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "instance_norm": _instance_norm,
    # linear algebra, convolution, pooling, attention
    "linear": _linear,
    "matmul": _matmul,
    "einsum": _einsum,
    "conv": _conv,
    "max_pool": _max_pool,
    "avg_pool": _avg_pool,
    "scaled_dot_product_attention": _sdpa,
    # shapes, indexing, creation
    "reshape": _reshape,
    "transpose": lambda a: np.transpose(a("x"), a.integers("perm")),
    "expand_dims": lambda a: np.expand_dims(a("x"), tuple(a.integers("axes"))),
    "squeeze": _squeeze,
    "flatten2d": _flatten2d,
    "slice_by_index": _slice_by_index,
    "slice_by_size": _slice_by_size,
    "concat": _concat,
    "split": _split,
    "stack": lambda a: np.stack(a("values"), axis=a.integer("axis")),
    "tile": lambda a: np.tile(a("x"), a.integers("reps")),
    "reverse": lambda a: np.flip(a("x"), axis=_axes(a, a("x").ndim)),
    "pad": _pad,
    "gather": _gather,
    "gather_along_axis": _gather_along_axis,
    "gather_nd": _gather_nd,
    "cumsum": _cumsum,
    "shape": lambda a: np.array(a("x").shape, dtype=np.int32),
    "fill": lambda a: np.full(a.integers("shape"), a("value")),
    "fill_like": lambda a: np.full(a("ref_tensor").shape, a("value")),
    "range_1d": _range_1d,
}


# ---------------------------------------------------------------------------------------------------
# Running


def _bind_inputs(function: Function, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The caller's arrays as the function declares its inputs (dtype converted, shape checked)."""
    declared = function.inputs
    unknown = sorted(set(inputs) - set(declared))
    if unknown:
        raise DataError(f"unknown ML Program input '{unknown[0]}'; {did_you_mean(unknown[0], declared)}")
    missing = sorted(set(declared) - set(inputs))
    if missing:
        raise DataError(f"ML Program input(s) {', '.join(missing)} not given")
    env = {}
    for name, var in declared.items():
        array = np.asarray(inputs[name]).astype(_np_dtype(var.dtype), copy=False)
        shape = _declared_shape(var)
        if shape is not None and array.shape != shape:
            raise DataError(f"ML Program input '{name}': shape {array.shape}, the program declares {shape}")
        env[var.name] = array
    return env


def _execute(op: Operation, env: dict[str, np.ndarray]) -> None:
    if op.op_type == "const":
        env[op.outputs[0].name] = _as_declared(op.outputs[0], op.outputs[0].val, op)
        return
    if not _supported(op):
        kind = "control flow (nested blocks)" if op.blocks else "op"
        raise UnsupportedOpError(
            f"ML Program {kind} '{op.op_type}' (op '{op.name}') is not supported by the MIL interpreter"
        )
    # constexpr ops (compressed weights) are materialised by coremltools' own decompression
    result = op.materialized_val_inference() if _is_constexpr(op) else OPS[op.op_type](Inputs(op, env))
    results = result if isinstance(result, tuple) else (result,)
    if len(results) != len(op.outputs):
        raise RuntimeError(f"MIL interpreter: op '{op.name}' ({op.op_type}) gave {len(results)} outputs")
    for var, value in zip(op.outputs, results, strict=True):
        env[var.name] = _as_declared(var, value, op)


def run(program: Program, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute the program's main function on `inputs` (by input name); outputs by the program's output names.

    Raises UnsupportedOpError (naming the op types) before computing anything if the program has ops
    that cannot be executed, DataError for missing/unknown/misshaped inputs or out-of-range indices.
    """
    function = _main(program)
    unsupported = unsupported_ops(program)
    if unsupported:
        raise UnsupportedOpError(
            f"ML Program uses op(s) the MIL interpreter does not support: {', '.join(unsupported)}"
        )
    env = _bind_inputs(function, inputs)
    with np.errstate(all="ignore"):
        for op in function.operations:
            _execute(op, env)
    return {var.name: env[var.name] for var in function.outputs}
