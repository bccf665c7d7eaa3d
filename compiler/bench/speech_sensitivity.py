"""Where quantization costs a speech model accuracy: each variant quantizes one graph, swaps it into
the FP32 pair and scores greedy transcripts against the FP32 PyTorch reference on evenly spaced
sentences (every noise copy). The figures in BUILD.md "Speech models" come from

    python -m compiler.bench.speech_sensitivity --clips 120

It reuses the build's cached import (run `make target=desktop-int8 model=whisper-tiny-en` first,
or it imports, about 6 minutes). A measurement tool, not a test: it prints a table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx

from compiler.backends.catalogue import backend_for
from compiler.bench.speech import by_sentence
from compiler.engine.cache import Cache
from compiler.engine.config import load_recipe, load_target
from compiler.families.speech.build import SpeechBuild
from compiler.families.speech.evaluate import THREADS, transcribe
from compiler.families.speech.generate import OrtParts
from passes.base import GraphPass, PassContext
from passes.quantize_dynamic_int8 import QuantizeDynamicInt8
from passes.quantize_int4_weights import QuantizeInt4Weights

LAYERS = [f"/encoder/layers.{i}" for i in range(4)]
FC2 = tuple(f"{layer}/fc2/MatMul" for layer in LAYERS)
VARIANTS: dict[str, tuple[str, list[GraphPass]]] = {
    "encoder: dynamic INT8, every MatMul": ("encoder", [QuantizeDynamicInt8()]),
    "encoder: fc2 in FP32": ("encoder", [QuantizeDynamicInt8(QuantizeDynamicInt8.Config(nodes_to_exclude=FC2))]),
    "encoder: fc1 in FP32": (
        "encoder",
        [QuantizeDynamicInt8(QuantizeDynamicInt8.Config(nodes_to_exclude=tuple(f"{x}/fc1/MatMul" for x in LAYERS)))],
    ),
    "encoder: q/k/v in FP32": (
        "encoder",
        [
            QuantizeDynamicInt8(
                QuantizeDynamicInt8.Config(
                    nodes_to_exclude=tuple(f"{x}/self_attn/{p}_proj/MatMul" for x in LAYERS for p in "qkv")
                )
            )
        ],
    ),
    "encoder: fc2 as INT4 weights": (
        "encoder",
        [
            QuantizeDynamicInt8(QuantizeDynamicInt8.Config(nodes_to_exclude=FC2)),
            QuantizeInt4Weights(QuantizeInt4Weights.Config(block_size=32)),
        ],
    ),
    "decoder: dynamic INT8": ("decoder", [QuantizeDynamicInt8()]),
    "decoder: INT4 weights": ("decoder", [QuantizeInt4Weights(QuantizeInt4Weights.Config(block_size=32))]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-tiny-en")
    parser.add_argument("--clips", type=int, default=120)
    args = parser.parse_args()
    recipe, cache = load_recipe(args.model), Cache()
    target = load_target("desktop-fp32")
    build = SpeechBuild(recipe, target, backend_for(target), cache)
    build.import_stage([])
    clips = by_sentence(build.clips, args.clips)
    with tempfile.TemporaryDirectory(prefix="edgebuild-sensitivity-") as tmp:
        context = PassContext(Path(tmp), "other", lambda: [], lambda _: None, "sensitivity")
        print(f"{len(clips)} clips; WER points over FP32 on the same clips, one graph swapped into the FP32 pair")
        for label, (part, passes) in VARIANTS.items():
            model = onnx.load(str(build.fp32[part]))
            for graph_pass in passes:
                model = graph_pass.run(model, context).model
            path = Path(tmp) / f"{part}.onnx"
            onnx.save(model, str(path))
            pair = {**build.fp32, part: path}
            tokens = transcribe(OrtParts(pair["encoder"], pair["decoder"], THREADS), clips, build.config).tokens
            fidelity = build.score(tokens, clips)
            print(f"{label:38s} {fidelity.detail['wer_increase']:+6.2f}   {path.stat().st_size / 1e6:6.1f} MB")
    cache.close()


if __name__ == "__main__":
    main()
