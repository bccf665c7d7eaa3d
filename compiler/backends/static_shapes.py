"""Static-shape artifacts (TVM, LiteRT, Core ML): fold a graph at fixed shapes before conversion,
and feed the compiled artifact smaller batches or sequences by padding.

Padding is right for what recipes feed: padded batch rows are independent, and padded tokens
carry attention mask 0, so the real rows' outputs are unchanged up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from compiler.backends.base import Feeds, Outputs, Predict
from compiler.errors import ModelError


def fold_static(model_path: Path, shapes: dict[str, list[int]], dest: Path) -> None:
    """Fold the graph again with every input shape fixed: TVM's Relax frontend and onnx2tf cannot
    import the Shape/Range/Expand chains a dynamic-shape BERT export keeps (measured on MiniLM),
    and one compiled artifact serves one shape anyway.

    onnxslim's EliminationTransposeAsReshape pattern is skipped: on Whisper tiny.en's FP32 KV-cache
    decoder (onnxslim 0.1.98) it removes a node whose output a Reshape still reads, and the folded
    graph no longer loads anywhere. A graph with any such dangling input is refused here, in one line,
    rather than by the next tool's frontend as a KeyError."""
    import onnx
    import onnxslim

    spec = [f"{name}:{','.join(str(dim) for dim in shape)}" for name, shape in shapes.items()]
    folded = onnxslim.slim(str(model_path), input_shapes=spec, skip_fusion_patterns=["EliminationTransposeAsReshape"])
    missing = dangling_inputs(folded)
    if missing:
        raise ModelError(
            f"folding {model_path.name} at fixed shapes left {len(missing)} node input(s) nothing produces "
            f"(first: '{missing[0]}'); use an ONNX Runtime target for this model, or report it with the file"
        )
    onnx.save(folded, str(dest))


def dangling_inputs(model: object) -> list[str]:
    """Names a node of the main graph reads that no graph input, initializer or earlier node gives."""
    graph = model.graph  # type: ignore[attr-defined]
    known = {item.name for item in graph.input} | {item.name for item in graph.initializer} | {""}
    missing = []
    for node in graph.node:
        missing += [name for name in node.input if name not in known]
        known.update(node.output)
    return missing


def pad(feeds: Feeds, shapes: dict[str, list[int]]) -> tuple[Feeds, dict[int, int]]:
    """Inputs zero-padded to `shapes` (in the order of `shapes`) and {padded size: real size}."""
    resized: dict[int, int] = {}
    full = {}
    for name, shape in shapes.items():
        array = feeds[name]
        if list(array.shape) == list(shape):
            full[name] = array
            continue
        if array.ndim != len(shape) or any(have > want for have, want in zip(array.shape, shape, strict=True)):
            raise ModelError(f"input '{name}' has shape {list(array.shape)}; the artifact was compiled for {shape}")
        for have, want in zip(array.shape, shape, strict=True):
            if have != want:
                resized[want] = have
        full[name] = np.pad(array, [(0, want - have) for have, want in zip(array.shape, shape, strict=True)])
    return full, resized


def cut(outputs: list[np.ndarray], resized: dict[int, int]) -> list[np.ndarray]:
    """Each output axis whose compiled size was padded, cut back to the real size."""
    return [out[tuple(slice(0, resized.get(size, size)) for size in out.shape)] for out in outputs]


def pad_to_static(run: Predict, shapes: dict[str, list[int]]) -> Predict:
    """`run` for a static-shape artifact, fed any smaller batch or sequence (see the module docstring)."""

    def padded(feeds: Feeds) -> list[np.ndarray]:
        full, resized = pad(feeds, shapes)
        return cut(run(full), resized)

    return padded


def run_static(shapes: dict[str, list[int]], batches: list[Feeds], run: Callable[[list[Feeds]], Outputs]) -> Outputs:
    """`run` on every batch padded to the compiled shapes, outputs cut back: the all-batches-at-once
    form of `pad_to_static`, for runners in another process (qemu, LiteRT, the MIL interpreter)."""
    padded = [pad(feeds, shapes) for feeds in batches]
    results = run([full for full, _ in padded])
    return [cut(outputs, resized) for outputs, (_, resized) in zip(results, padded, strict=True)]


__all__ = ["cut", "dangling_inputs", "fold_static", "pad", "pad_to_static", "run_static"]
