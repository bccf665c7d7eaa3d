"""The numpy MIL interpreter against real Core ML conversions: small torch models converted by coremltools
to `.mlpackage`s, loaded back, executed and compared with torch (tight at FP32, by cosine at FP16),
int8 weight-compressed packages (constexpr ops decompressed by coremltools), per-op fp16 rounding,
single ops against coremltools' own value inference, and the errors for ops it cannot run."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from compiler.backends import mil_interpreter
from compiler.backends.mil_interpreter import UnsupportedOpError, load_program, op_types, run, unsupported_ops
from compiler.errors import DataError, ModelError

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402  (after the importorskip)

CNN_SHAPE = (4, 1, 11, 11)
SEQ = 16


class SmallCNN(nn.Module):
    """Conv (custom, 'same' with an even kernel, strided depthwise), relu, ceil-mode max pool, avg pool
    excluding padding, global mean, linear and gelu: the vision ops, with weights big enough to quantize."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 32, 4, padding="same")  # total pad 3: 1 before, 2 after
        self.pool = nn.MaxPool2d(2, ceil_mode=True)  # 11 -> 6
        self.depthwise = nn.Conv2d(32, 32, 3, stride=2, padding=2, dilation=2, groups=32)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv2(F.relu(self.conv1(x)))))
        x = self.avg(F.relu(self.depthwise(x)))
        return self.fc2(F.gelu(self.fc1(x.mean(dim=(2, 3)))))


class TinyEncoder(nn.Module):
    """One BERT-like layer: token + position embeddings (gather), additive attention mask from an int mask,
    multi-head softmax attention, layer norms, tanh and exact gelu, masked mean pooling, slicing, concat."""

    def __init__(self, vocab: int = 64, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(SEQ, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 4 * dim)
        self.ff2 = nn.Linear(4 * dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, seq = ids.shape
        dim = self.tok.embedding_dim
        head = dim // self.heads
        x = self.tok(ids.long()) + self.pos(torch.arange(seq))
        q, k, v = (t.view(batch, seq, self.heads, head).transpose(1, 2) for t in self.qkv(x).split(dim, dim=-1))
        keep = mask.to(torch.float32)
        bias = (1.0 - keep[:, None, None, :]) * -1e4
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head) + bias, dim=-1)
        y = (attention @ v).transpose(1, 2).reshape(batch, seq, dim)
        x = self.norm1(x + self.proj(y))
        x = self.norm2(x + self.ff2(F.gelu(self.ff1(x), approximate="tanh")))
        pooled = (x * keep[..., None]).sum(dim=1) / keep.sum(dim=1, keepdim=True)
        return torch.cat([F.gelu(x[:, 0]), pooled], dim=-1)


def _convert(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    inputs: list[Any],
    path: Path,
    precision: Any = None,
    target: Any = None,
) -> Path:
    """torch.export + default decompositions + ct.convert to an ML Program saved at `path`."""
    exported = torch.export.export(module.eval(), args, strict=False).run_decompositions()
    model = ct.convert(
        exported,
        convert_to="mlprogram",
        minimum_deployment_target=target or ct.target.iOS17,
        compute_precision=precision or ct.precision.FLOAT32,
        inputs=inputs,
        outputs=[ct.TensorType(name="out")],
    )
    model.save(str(path))
    return path


def _quantize_int8(package: Path, path: Path) -> Path:
    """coremltools' own int8 linear-symmetric weight quantization of a saved package."""
    import coremltools.optimize.coreml as cto

    model = ct.models.MLModel(str(package), skip_model_load=True)
    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8"))
    cto.linear_quantize_weights(model, config=config).save(str(path))
    return path


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64).reshape(len(a), -1), b.astype(np.float64).reshape(len(b), -1)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _assert_close_fp32(out: np.ndarray, ref: np.ndarray) -> None:
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


# ---------------------------------------------------------------------------------------------------
# Converted models


@pytest.fixture(scope="module")
def cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN().eval()


@pytest.fixture(scope="module")
def cnn_input() -> np.ndarray:
    return np.random.default_rng(0).random(CNN_SHAPE, dtype=np.float32)


@pytest.fixture(scope="module")
def cnn_ref(cnn: SmallCNN, cnn_input: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return cnn(torch.from_numpy(cnn_input)).numpy()


@pytest.fixture(scope="module")
def cnn_packages(tmp_path_factory: pytest.TempPathFactory, cnn: SmallCNN, cnn_input: np.ndarray) -> dict[str, Path]:
    """The CNN at FP32 for iOS 17 and iOS 18, each also with int8-quantized weights."""
    root = tmp_path_factory.mktemp("cnn")
    inputs = [ct.TensorType(name="image", shape=CNN_SHAPE, dtype=np.float32)]
    args = (torch.from_numpy(cnn_input),)
    packages = {}
    for name, target in (("ios17", ct.target.iOS17), ("ios18", ct.target.iOS18)):
        packages[name] = _convert(cnn, args, inputs, root / f"{name}.mlpackage", target=target)
        packages[f"{name}_int8"] = _quantize_int8(packages[name], root / f"{name}_int8.mlpackage")
    return packages


@pytest.fixture(scope="module")
def encoder_io() -> tuple[TinyEncoder, dict[str, np.ndarray], np.ndarray]:
    torch.manual_seed(0)
    encoder = TinyEncoder().eval()
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 64, size=(2, SEQ), dtype=np.int32)
    mask = np.ones((2, SEQ), dtype=np.int32)
    mask[1, 9:] = 0  # a padded row: masked keys and a masked mean
    with torch.no_grad():
        ref = encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    return encoder, {"ids": ids, "mask": mask}, ref


@pytest.fixture(scope="module")
def encoder_packages(
    tmp_path_factory: pytest.TempPathFactory, encoder_io: tuple[TinyEncoder, dict[str, np.ndarray], np.ndarray]
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoder")
    encoder, feeds, _ = encoder_io
    inputs = [ct.TensorType(name=name, shape=(2, SEQ), dtype=np.int32) for name in ("ids", "mask")]
    args = (torch.from_numpy(feeds["ids"]), torch.from_numpy(feeds["mask"]))
    return {
        name: _convert(encoder, args, inputs, root / f"{name}.mlpackage", precision=precision)
        for name, precision in (("fp32", ct.precision.FLOAT32), ("fp16", ct.precision.FLOAT16))
    }


def test_cnn_fp32_matches_torch(cnn_packages: dict[str, Path], cnn_input: np.ndarray, cnn_ref: np.ndarray) -> None:
    for target in ("ios17", "ios18"):
        program = load_program(cnn_packages[target])
        assert {"conv", "max_pool", "avg_pool", "linear", "gelu"} <= set(op_types(program))
        assert unsupported_ops(program) == []
        out = run(program, {"image": cnn_input})
        assert list(out) == ["out"]
        _assert_close_fp32(out["out"], cnn_ref)


@pytest.mark.parametrize(
    ("target", "constexpr"), [("ios17", "constexpr_affine_dequantize"), ("ios18", "constexpr_blockwise_shift_scale")]
)
def test_cnn_int8_weights_are_decompressed_and_stay_close(
    cnn_packages: dict[str, Path], cnn_input: np.ndarray, cnn_ref: np.ndarray, target: str, constexpr: str
) -> None:
    program = load_program(cnn_packages[f"{target}_int8"])
    assert constexpr in op_types(program)
    out = run(program, {"image": cnn_input})["out"]
    assert out.dtype == np.float32
    assert not np.allclose(out, cnn_ref, rtol=1e-6, atol=1e-7)  # the weights really are 8-bit
    assert np.all(_cosines(out, cnn_ref) > 0.999)
    assert np.abs(out - cnn_ref).max() < 0.05 * np.abs(cnn_ref).max()


def _dequantized(op: Any) -> np.ndarray:
    """The test's own arithmetic for an int8 constexpr op (independent of the interpreter's coremltools path)."""
    if op.op_type == "constexpr_affine_dequantize":
        data = op.quantized_data.val.astype(np.float64)
        shape = [1] * data.ndim
        shape[int(op.axis.val)] = -1
        zero, scale = (np.asarray(v.val, dtype=np.float64) for v in (op.zero_point, op.scale))
        return (data - (zero.reshape(shape) if zero.ndim else zero)) * (scale.reshape(shape) if scale.ndim else scale)
    data = op.data.val.astype(np.float64)
    scale = np.asarray(op.scale.val, dtype=np.float64)
    offset = np.zeros_like(scale) if op.offset is None else np.asarray(op.offset.val, dtype=np.float64)
    for axis, (size, blocks) in enumerate(zip(data.shape, scale.shape, strict=True)):
        scale, offset = (np.repeat(v, size // blocks, axis=axis) for v in (scale, offset))
    return (data - offset) * scale


@pytest.mark.parametrize("target", ["ios17", "ios18"])
def test_cnn_int8_equals_torch_with_the_dequantized_weights(
    cnn_packages: dict[str, Path], cnn: SmallCNN, cnn_input: np.ndarray, target: str
) -> None:
    program = load_program(cnn_packages[f"{target}_int8"])
    constexprs = [op for op in program.functions["main"].operations if op.op_type.startswith("constexpr_")]
    assert constexprs
    dequantized = copy.deepcopy(cnn)
    by_shape = {tuple(p.shape): p for name, p in dequantized.named_parameters() if name.endswith("weight")}
    with torch.no_grad():
        for op in constexprs:
            weight = _dequantized(op)
            by_shape[weight.shape].copy_(torch.from_numpy(weight))
        ref = dequantized(torch.from_numpy(cnn_input)).numpy()
    _assert_close_fp32(run(program, {"image": cnn_input})["out"], ref)


def _torch_conv(x: np.ndarray, w: np.ndarray, pads: tuple[int, int, int, int], stride: int, groups: int) -> np.ndarray:
    padded = F.pad(torch.from_numpy(x), pads)  # (left, right, top, bottom)
    return F.conv2d(padded, torch.from_numpy(w), stride=stride, groups=groups).numpy()


@pytest.mark.parametrize(
    ("pad_type", "pads"),
    [("valid", (0, 0, 0, 0)), ("same", (1, 2, 1, 2)), ("same_lower", (2, 1, 2, 1)), ("custom", (0, 2, 3, 1))],
)
def test_conv_pad_types_match_torch(pad_type: str, pads: tuple[int, int, int, int]) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 2, 4, 4)).astype(np.float32)
    custom = [pads[2], pads[3], pads[0], pads[1]]  # MIL: (before, after) per spatial dim, H first

    def build(x_in: Any) -> Any:
        extra = {"pad": custom} if pad_type == "custom" else {}
        return mb.conv(x=x_in, weight=w, strides=[2, 2], pad_type=pad_type, groups=2, **extra)

    (out,) = run(_program(build, mb.TensorSpec(shape=x.shape)), {"x": x}).values()
    expected = _torch_conv(x, w, pads, stride=2, groups=2)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("size", "pad"), [(5, 0), (5, 1), (6, 1)])
@pytest.mark.parametrize("kind", ["max", "avg_include_pad", "avg_exclude_pad"])
def test_ceil_mode_pools_match_torch(kind: str, size: int, pad: int) -> None:
    x = np.random.default_rng(4).standard_normal((1, 3, size, size)).astype(np.float32)
    common = {"kernel_sizes": [2, 2], "strides": [2, 2], "pad_type": "custom", "pad": [pad] * 4, "ceil_mode": True}

    def build(x_in: Any) -> Any:
        if kind == "max":
            return mb.max_pool(x=x_in, **common)
        return mb.avg_pool(x=x_in, exclude_padding_from_average=kind == "avg_exclude_pad", **common)

    (out,) = run(_program(build, mb.TensorSpec(shape=x.shape)), {"x": x}).values()
    t = torch.from_numpy(x)
    if kind == "max":
        expected = F.max_pool2d(t, 2, 2, padding=pad, ceil_mode=True)
    else:
        expected = F.avg_pool2d(t, 2, 2, padding=pad, ceil_mode=True, count_include_pad=kind == "avg_include_pad")
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-6, atol=1e-6)


def test_encoder_fp32_matches_torch(
    encoder_packages: dict[str, Path], encoder_io: tuple[TinyEncoder, dict[str, np.ndarray], np.ndarray]
) -> None:
    _, feeds, ref = encoder_io
    program = load_program(encoder_packages["fp32"])
    assert {"gather", "layer_norm", "softmax", "gelu", "matmul"} <= set(op_types(program))
    _assert_close_fp32(run(program, feeds)["out"], ref)


def test_encoder_fp16_computes_in_fp16_and_stays_close(
    encoder_packages: dict[str, Path], encoder_io: tuple[TinyEncoder, dict[str, np.ndarray], np.ndarray]
) -> None:
    _, feeds, ref = encoder_io
    program = load_program(encoder_packages["fp16"])
    out = run(program, feeds)["out"]
    declared = mil_interpreter._np_dtype(program.functions["main"].outputs[0].dtype)
    assert out.dtype == declared
    assert np.all(_cosines(out, ref) > 0.999)
    assert not np.allclose(out.astype(np.float32), ref, rtol=1e-5, atol=1e-6)  # fp16 storage is visible


# ---------------------------------------------------------------------------------------------------
# Programs built with the MIL builder


def _program(build: Callable[..., Any], *specs: Any, target: Any = None) -> Any:
    @mb.program(input_specs=list(specs), opset_version=target or ct.target.iOS17)
    def program(x: Any) -> Any:
        return build(x)

    return program


def test_fp16_ops_round_their_results_to_fp16() -> None:
    def build(x: Any) -> Any:
        half = mb.cast(x=x, dtype="fp16")
        return mb.cast(x=mb.add(x=half, y=np.float16(1e-4)), dtype="fp32")

    program = _program(build, mb.TensorSpec(shape=(3,)))
    out = run(program, {"x": np.array([1.0, 2048.0, 70000.0], dtype=np.float32)})
    (value,) = out.values()
    assert value.dtype == np.float32
    # 1 + 1e-4 is 1 in fp16, 2048 stays 2048, 70000 overflows to inf
    assert value[0] == 1.0 and value[1] == 2048.0 and np.isinf(value[2])


_RNG = np.random.default_rng(7)
_X = _RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
_POSITIVE = np.abs(_X) + 0.1
_INDICES = np.array([[2, 0, 1], [1, 1, 0]], dtype=np.int32)

VALUE_INFERENCE_CASES: dict[str, tuple[np.ndarray, Callable[[Any], Any]]] = {
    "gelu_exact": (_X, lambda x: mb.gelu(x=x, mode="EXACT")),
    "gelu_tanh": (_X, lambda x: mb.gelu(x=x, mode="TANH_APPROXIMATION")),
    "gelu_sigmoid": (_X, lambda x: mb.gelu(x=x, mode="SIGMOID_APPROXIMATION")),
    "softmax": (_X, lambda x: mb.softmax(x=x, axis=1)),
    "erf": (_X, lambda x: mb.erf(x=x)),
    "rsqrt": (_POSITIVE, lambda x: mb.rsqrt(x=x, epsilon=1e-3)),
    "log": (_POSITIVE, lambda x: mb.log(x=x, epsilon=1e-3)),
    "clip": (_X, lambda x: mb.clip(x=x, alpha=-0.5, beta=0.7)),
    "leaky_relu": (_X, lambda x: mb.leaky_relu(x=x, alpha=0.1)),
    "elu": (_X, lambda x: mb.elu(x=x, alpha=0.7)),
    "sigmoid": (_X, lambda x: mb.sigmoid(x=x)),
    "softplus": (_X, lambda x: mb.softplus(x=x)),
    "pow": (_POSITIVE, lambda x: mb.pow(x=x, y=1.5)),
    "real_div": (_X, lambda x: mb.real_div(x=x, y=np.float32(3.0))),
    "reduce_mean": (_X, lambda x: mb.reduce_mean(x=x, axes=[1, -1], keep_dims=True)),
    "reduce_sum": (_X, lambda x: mb.reduce_sum(x=x, axes=[2])),
    "reduce_max": (_X, lambda x: mb.reduce_max(x=x, axes=[0, 3])),
    "reduce_argmax": (_X, lambda x: mb.reduce_argmax(x=x, axis=2, keep_dims=True)),
    "reduce_log_sum_exp": (_X, lambda x: mb.reduce_log_sum_exp(x=x, axes=[3])),
    "layer_norm": (_X, lambda x: mb.layer_norm(x=x, axes=[-2, -1], epsilon=1e-5)),
    "transpose": (_X, lambda x: mb.transpose(x=x, perm=[2, 0, 3, 1])),
    "reshape": (_X, lambda x: mb.reshape(x=x, shape=[0, -1, 5])),
    "expand_dims": (_X, lambda x: mb.expand_dims(x=x, axes=[0, -1])),
    "squeeze": (_X[:, :1], lambda x: mb.squeeze(x=x, axes=[1])),
    "slice_by_index": (
        _X,
        lambda x: mb.slice_by_index(
            x=x,
            begin=[1, 0, 3, 1],
            end=[2, 3, 0, -1],
            stride=[1, 2, -1, 2],
            begin_mask=[False, True, False, False],
            end_mask=[False, False, True, False],
            squeeze_mask=[True, False, False, False],
        ),
    ),
    "slice_by_size": (_X, lambda x: mb.slice_by_size(x=x, begin=[0, 1, 1, 2], size=[-1, 2, 3, -1])),
    "concat": (_X, lambda x: mb.concat(values=[x, mb.mul(x=x, y=2.0)], axis=2)),
    "split": (_X, lambda x: mb.split(x=x, split_sizes=[1, 3, 1], axis=-1)[1]),
    "stack": (_X, lambda x: mb.stack(values=[x, x], axis=1)),
    "tile": (_X, lambda x: mb.tile(x=x, reps=[1, 2, 1, 3])),
    "pad_reflect": (_X, lambda x: mb.pad(x=x, pad=[1, 2, 2, 1], mode="reflect")),
    "pad_constant": (_X, lambda x: mb.pad(x=x, pad=[0, 1, 1, 0, 2, 2], mode="constant", constant_val=3.0)),
    "gather": (_X, lambda x: mb.gather(x=x, indices=_INDICES, axis=2)),
    "gather_batch_dims": (_X, lambda x: mb.gather(x=x, indices=_INDICES, axis=1, batch_dims=1)),
    "gather_along_axis": (
        _X,
        lambda x: mb.gather_along_axis(x=x, indices=np.argsort(_X, axis=3).astype(np.int32), axis=3),
    ),
    "matmul": (_X, lambda x: mb.matmul(x=x, y=x, transpose_y=True)),
    "matmul_transpose_x": (_X, lambda x: mb.matmul(x=x, y=x, transpose_x=True)),
    "select": (_X, lambda x: mb.select(cond=mb.greater(x=x, y=0.0), a=x, b=mb.mul(x=x, y=-3.0))),
    "shape": (_X, lambda x: mb.shape(x=x)),
}


def _value_inferred(build: Callable[[Any], Any], x: np.ndarray) -> np.ndarray:
    """What coremltools' own value inference computes for `build` applied to the constant `x`."""
    captured = {}

    @mb.program(input_specs=[mb.TensorSpec(shape=(1,))], opset_version=ct.target.iOS17)
    def program(dummy: Any) -> Any:
        captured["value"] = build(mb.const(val=x)).val
        return dummy

    assert captured["value"] is not None, "coremltools has no value inference for this case"
    return np.asarray(captured["value"])


@pytest.mark.parametrize("case", sorted(VALUE_INFERENCE_CASES))
def test_op_matches_coremltools_value_inference(case: str) -> None:
    x, build = VALUE_INFERENCE_CASES[case]
    expected = _value_inferred(build, x)
    program = _program(build, mb.TensorSpec(shape=x.shape))
    assert case.split("_")[0] in "".join(op_types(program))
    (out,) = run(program, {"x": x}).values()
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected.astype(out.dtype), rtol=1e-5, atol=1e-6)


# ops coremltools cannot value-infer here (gather_nd has none, exclusive cumsum's crashes): explicit references
EXPLICIT_CASES: dict[str, tuple[np.ndarray, Callable[[Any], Any], np.ndarray]] = {
    "gather_nd": (
        _X,
        lambda x: mb.gather_nd(x=x, indices=np.array([[[1, 2], [0, 0]]], dtype=np.int32)),
        np.stack([_X[1, 2], _X[0, 0]])[None],
    ),
    "gather_nd_batch_dims": (
        _X,
        lambda x: mb.gather_nd(x=x, indices=np.array([[[2, 1]], [[0, 3]]], dtype=np.int32), batch_dims=1),
        np.stack([_X[0, 2, 1], _X[1, 0, 3]])[:, None],
    ),
    "cumsum_exclusive_reverse": (
        _X,
        lambda x: mb.cumsum(x=x, axis=2, exclusive=True, reverse=True),
        np.stack([_X[:, :, i + 1 :].sum(axis=2) for i in range(_X.shape[2])], axis=2),
    ),
    "cumsum": (_X, lambda x: mb.cumsum(x=x, axis=-1), np.stack([_X[..., : i + 1].sum(-1) for i in range(5)], -1)),
}


@pytest.mark.parametrize("case", sorted(EXPLICIT_CASES))
def test_op_matches_explicit_reference(case: str) -> None:
    x, build, expected = EXPLICIT_CASES[case]
    (out,) = run(_program(build, mb.TensorSpec(shape=x.shape)), {"x": x}).values()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_concat_interleave_follows_the_spec_example() -> None:
    # coremltools' value inference ignores `interleave`, so this checks the MIL spec's own example
    program = _program(
        lambda x: mb.concat(values=[x, mb.add(x=x, y=6)], axis=0, interleave=True),
        mb.TensorSpec(shape=(3, 2), dtype=ct.converters.mil.mil.types.int32),
    )
    (out,) = run(program, {"x": np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int32)}).values()
    np.testing.assert_array_equal(out, [[1, 2], [7, 8], [3, 4], [9, 10], [5, 6], [11, 12]])


# ---------------------------------------------------------------------------------------------------
# Errors


def test_unknown_op_is_reported_by_name() -> None:
    program = _program(lambda x: mb.band_part(x=x, lower=1, upper=1), mb.TensorSpec(shape=(4, 4)))
    assert unsupported_ops(program) == ["band_part"]
    with pytest.raises(UnsupportedOpError, match="band_part") as error:
        run(program, {"x": np.eye(4, dtype=np.float32)})
    assert isinstance(error.value, ModelError)


def test_control_flow_is_unsupported() -> None:
    def build(x: Any) -> Any:
        positive = mb.greater(x=mb.reduce_sum(x=x), y=0.0)
        return mb.cond(pred=positive, _true_fn=lambda: mb.mul(x=x, y=2.0), _false_fn=lambda: mb.mul(x=x, y=3.0))

    program = _program(build, mb.TensorSpec(shape=(2,)))
    assert unsupported_ops(program) == ["cond"]
    with pytest.raises(UnsupportedOpError, match="cond"):
        run(program, {"x": np.ones(2, dtype=np.float32)})


def test_bad_inputs_are_data_errors() -> None:
    program = _program(lambda x: mb.relu(x=x), mb.TensorSpec(shape=(2, 3)))
    with pytest.raises(DataError, match="not given"):
        run(program, {})
    with pytest.raises(DataError, match="shape"):
        run(program, {"x": np.zeros((3, 2), dtype=np.float32)})
    with pytest.raises(DataError, match="unknown ML Program input 'y'"):
        run(program, {"x": np.zeros((2, 3), dtype=np.float32), "y": np.zeros(1)})
    indexed = _program(
        lambda i: mb.gather(x=np.eye(3, dtype=np.float32), indices=i),
        mb.TensorSpec(shape=(2,), dtype=ct.converters.mil.mil.types.int32),
    )
    with pytest.raises(DataError, match="out of range"):
        run(indexed, {"x": np.array([0, 3], dtype=np.int32)})


def test_load_program_rejects_a_missing_package(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such"):
        load_program(tmp_path / "absent.mlpackage")
