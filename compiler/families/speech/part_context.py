"""What a graph pass sees of a speech model: calibration inputs for one graph (encoder or decoder)
and a WER evaluation with a candidate of that graph swapped into the FP32 pair."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from compiler.families.speech.evaluate import THREADS, score_wer, spaced, transcribe
from compiler.families.speech.generate import GenerationConfig, OrtParts, Parts
from compiler.families.speech.importer import Decoder
from compiler.families.speech.testset import Clip
from passes.base import Fidelity


class PartContext:
    """Calibration feeds and a WER evaluation for one graph, the other graph staying FP32."""

    def __init__(
        self,
        part: str,
        fp32: dict[str, Path],
        clips: list[Clip],
        reference: dict[str, list[int]],
        config: GenerationConfig,
        calibration_clips: int,
        pass_clips: int,
        metric: dict[str, Any],
        decode: Decoder,
        workdir: Path,
    ) -> None:
        self.part, self.fp32, self.clips, self.reference = part, fp32, clips, reference
        self.config, self.metric, self.decode, self.workdir = config, metric, decode, workdir
        self.calibration_clips = calibration_clips
        self.scored = [clips[i] for i in spaced(len(clips), pass_clips)]

    def score(self, candidate: Path) -> Fidelity:
        paths = {**self.fp32, self.part: candidate}
        parts = OrtParts(paths["encoder"], paths["decoder"], THREADS)
        result = transcribe(parts, self.scored, self.config, f"scoring {self.part}")
        fidelity = score_wer(self.metric, self.scored, result.tokens, self.reference, self.decode)
        return replace(fidelity, summary=f"{fidelity.summary} ({self.part} swapped into the FP32 pair)")

    def evaluate(self, model: onnx.ModelProto) -> Fidelity:
        path = self.workdir / f"candidate-{self.part}.onnx"
        onnx.save(model, str(path))
        return self.score(path)

    def calibration(self) -> list[dict[str, np.ndarray]]:
        from compiler.families.speech.features import log_mel

        clean = [clip for clip in self.clips if clip.noise == "clean"] or self.clips
        chosen = [clean[i] for i in spaced(len(clean), self.calibration_clips)]
        if self.part == "encoder":
            return [{"mel": log_mel(clip.audio)[None]} for clip in chosen]
        recorder = RecordingParts(OrtParts(self.fp32["encoder"], self.fp32["decoder"], THREADS))
        transcribe(recorder, chosen, self.config)
        return recorder.feeds[::4]


class RecordingParts:
    """Wraps parts and keeps every decoder call's inputs (the decoder's calibration data)."""

    def __init__(self, parts: Parts) -> None:
        self.parts, self.feeds = parts, []

    def encode(self, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.parts.encode(mel)

    def step(self, tokens, position, self_k, self_v, cross_k, cross_v):  # noqa: ANN001, ANN201 (Parts)
        names = ("tokens", "position", "self_k", "self_v", "cross_k", "cross_v")
        self.feeds.append(dict(zip(names, (tokens, position, self_k, self_v, cross_k, cross_v), strict=True)))
        return self.parts.step(tokens, position, self_k, self_v, cross_k, cross_v)


__all__ = ["PartContext", "RecordingParts"]
