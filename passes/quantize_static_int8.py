"""quantize-static-int8: QDQ INT8 with activation ranges calibrated on representative data (CNNs)."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
from onnxruntime.quantization.shape_inference import quant_pre_process

from compiler import onnx_io
from compiler.errors import DataError, PassError
from compiler.progress import progress_bar
from passes.base import Feeds, GraphPass, PassContext, PassResult, nothing_to_do
from passes.mixed_precision import (
    MixedPrecisionOptions,
    check_exclusions,
    quantization_stats,
    quiet_preprocess_hint,
    search_if_enabled,
)

_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class QuantizeStaticInt8(GraphPass):
    """Quantize weights and activations to INT8 in QDQ form, with calibrated activation ranges.

    What it does: runs `quant_pre_process` (symbolic shape inference, auto_merge=True; if it fails
    the pass goes on without it and says so in its stats), then onnxruntime `quantize_static` in
    QDQ format: activation ranges come from running up to `calibration_samples` representative
    inputs (uint8 activations), weights are int8 per output channel. That is what CPU kernels are
    fast at: on a digits CNN it keeps accuracy and runs ~1.9x faster than FP32. Transformers want
    quantize-dynamic-int8: outlier activations (the feed-forward output) do not fit one calibrated
    range (fused all-MiniLM-L6-v2: mean cosine 0.937 static, 0.992 dynamic).

    Needs: calibration data (`ctx.calibration()`; DataError when there is none); `ctx.evaluate`
    when `mixed_precision` is on (see passes/mixed_precision.py).

    Guarantees: a new model (the input is untouched) in which at least one node reads
    DequantizeLinear outputs, otherwise PassError naming the op types the model has.
    """

    name: ClassVar[str] = "quantize-static-int8"
    tools: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime")
    needs: ClassVar[frozenset[str]] = frozenset({"calibration"})
    conflicts_with: ClassVar[tuple[str, ...]] = ("quantize-dynamic-int8", "convert-fp16", "quantize-int4-weights")

    @dataclass(frozen=True)
    class Config(MixedPrecisionOptions):
        per_channel: bool = True
        activation_type: Literal["uint8", "int8"] = "uint8"
        weight_type: Literal["int8", "uint8"] = "int8"
        calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
        calibration_samples: int = 128  # representative inputs (calibration entries) used at most
        nodes_to_exclude: tuple[str, ...] = ()
        op_types_to_quantize: tuple[str, ...] = ()  # empty: every op type ORT's QDQ quantizer knows
        reduce_range: bool = False  # 7-bit weights: for x86 CPUs without VNNI (saturation)
        preprocess: bool = True

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        config = self.config
        if config.target_fidelity is not None and not config.mixed_precision:
            raise PassError(
                f"option target_fidelity = {config.target_fidelity} needs mixed_precision = true "
                "(the mixed-precision search is what raises fidelity)"
            )
        if config.calibration_samples < 1:
            raise PassError(f"option calibration_samples = {config.calibration_samples} must be at least 1")
        check_exclusions(model, config.nodes_to_exclude)
        feeds = _calibration_feeds(model, ctx, config.calibration_samples)
        stats: dict[str, Any] = {"calibration_samples": len(feeds), "calibrate_method": config.calibrate_method}

        with quiet_preprocess_hint(), tempfile.TemporaryDirectory(dir=ctx.workdir, prefix="quantize-static-") as tmp:
            source = Path(tmp) / "input.onnx"
            onnx_io.save(model, source)  # ORT reads files; saving also keeps `model` itself untouched
            large = onnx_io.tensor_bytes(model) > onnx_io.EXTERNAL_ABOVE  # ORT then writes external data
            base = model
            if config.preprocess:
                source, stats["preprocess"] = _preprocess(source, Path(tmp) / "preprocessed.onnx")
                base = onnx_io.load(source)
                names = {node.name for node in base.graph.node}
                for name in config.nodes_to_exclude:
                    if name not in names:  # ORT would silently quantize what replaced it
                        raise PassError(
                            f"nodes_to_exclude names '{name}', which quant_pre_process merged "
                            "away; set preprocess = false to keep the graph as it is"
                        )
            # Calibration is the slow part: ORT stores the ranges here and reuses them whenever
            # the mixed-precision search re-quantizes with other nodes excluded.
            ranges = Path(tmp) / "calibration.json"

            def quantize(excluded: tuple[str, ...], reader: _FeedReader | None = None) -> onnx.ModelProto:
                target = Path(tmp) / "quantized.onnx"
                with contextlib.redirect_stdout(sys.stderr):  # ORT's calibrators print; stdout is for data
                    quantize_static(
                        source,
                        target,
                        reader,
                        quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(config.op_types_to_quantize) or None,
                        per_channel=config.per_channel,
                        reduce_range=config.reduce_range,
                        activation_type=_TYPES[config.activation_type],
                        weight_type=_TYPES[config.weight_type],
                        nodes_to_exclude=[*config.nodes_to_exclude, *excluded],
                        calibrate_method=_METHODS[config.calibrate_method],
                        calibration_cache_path=ranges,
                        use_external_data_format=large,
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                    )
                return onnx_io.load(target)

            # Only this first call calibrates, so only it shows a bar (rich allows one at a time,
            # and the mixed-precision search shows its own).
            with progress_bar() as bar:
                task = bar.add_task("calibrating", total=len(feeds))
                quantized = quantize((), _FeedReader(feeds, lambda: bar.advance(task)))
            # An excluded node can still read a DequantizeLinear output (its producer is quantized)
            excluded = set(config.nodes_to_exclude)
            candidates = [
                name for name in _quantized_nodes(base, quantized, config.op_types_to_quantize) if name not in excluded
            ]
            if not candidates:
                present = sorted({node.op_type for node in base.graph.node})
                wanted = "/".join(config.op_types_to_quantize) or "quantizable"
                return nothing_to_do(
                    model, f"no {wanted} node outside nodes_to_exclude; the model has {', '.join(present)}"
                )
            quantized, candidates, search = search_if_enabled(config, base, quantize, quantized, candidates, ctx)
            stats.update(search)

        return PassResult(
            quantized, quantization_stats(base, model, quantized, candidates, config.nodes_to_exclude, stats)
        )


class _FeedReader(CalibrationDataReader):
    """Hands ORT's calibrator one representative input at a time, reporting progress."""

    def __init__(self, feeds: list[Feeds], advance: Callable[[], object]) -> None:
        self._feeds = iter(feeds)
        self._advance = advance

    def get_next(self) -> Feeds | None:
        feed = next(self._feeds, None)
        if feed is not None:
            self._advance()
        return feed


def _calibration_feeds(model: onnx.ModelProto, ctx: PassContext, limit: int) -> list[Feeds]:
    """The first `limit` calibration inputs, restricted to the model's inputs (DataError if none)."""
    feeds = ctx.calibration()  # raises DataError itself when the recipe names no data
    if not feeds:
        raise DataError("quantize-static-int8 needs calibration data: the recipe's data.representative is empty")
    constants = {init.name for init in model.graph.initializer}
    names = [value.name for value in model.graph.input if value.name not in constants]
    missing = [name for name in names if name not in feeds[0]]
    if missing:
        raise DataError(
            f"quantize-static-int8: calibration data lacks model input(s) {missing}; it has {sorted(feeds[0])}"
        )
    return [{name: feed[name] for name in names} for feed in feeds[:limit]]


def _preprocess(source: Path, target: Path) -> tuple[Path, str]:
    """ORT's recommended pre-processing, when it works on this model (it is an optimisation only)."""
    try:
        # auto_merge: symbolic shape inference otherwise gives up on dims that differ per branch
        quant_pre_process(source, target, auto_merge=True)
    except Exception as error:  # third-party shape inference fails in many ways; the step is optional
        return source, f"skipped: {type(error).__name__}: {str(error).strip()[:200]}"
    return target, "done"


def _quantized_nodes(base: onnx.ModelProto, quantized: onnx.ModelProto, op_types: tuple[str, ...]) -> list[str]:
    """Names of `base`'s nodes (of a quantized op type) reading DequantizeLinear outputs in `quantized`.

    QDQ keeps node names. The op-type filter matters: a float Add after a quantized MatMul reads
    a DequantizeLinear output too, yet runs in FP32.
    """
    types = set(op_types or (*QLinearOpsRegistry, *QDQRegistry))  # ORT's own default when empty
    dequantized = {out for node in quantized.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    names = {node.name for node in base.graph.node if node.name}
    return [
        node.name
        for node in quantized.graph.node
        if node.name in names and node.op_type in types and any(name in dequantized for name in node.input)
    ]
