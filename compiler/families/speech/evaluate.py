"""Word error rate of a build against the FP32 PyTorch model, on the same synthetic clips.

A candidate is a pair of graphs (encoder, decoder) or compiled artifacts, run by the product's
own generation loop (`generate.greedy`) on every clip's log-mel; its transcripts are scored with
jiwer after Whisper's English normaliser. The budget is the WER *increase* over the FP32 PyTorch
model's transcripts of the same clips, in points (`[metric] max_increase`). The headline value is
word accuracy (100 - WER), so that, as for every other metric, higher is better.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.families.speech.features import log_mel
from compiler.families.speech.generate import GenerationConfig, Parts, greedy
from compiler.families.speech.testset import Clip
from compiler.families.speech.wer import wer_by_group
from compiler.progress import progress_bar
from passes.base import Fidelity

Decode = Callable[[list[int]], str]
THREADS = 1  # verification and timing: fixed, so transcripts (and the manifest) do not depend on the host


@dataclass
class Transcripts:
    tokens: dict[str, list[int]]  # clip id -> generated tokens
    seconds: float  # encode + decode, all clips
    audio_seconds: float
    steps: int

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.audio_seconds


def transcribe(parts: Parts, clips: Sequence[Clip], config: GenerationConfig, label: str = "") -> Transcripts:
    """Greedy transcripts of `clips` (the product's loop; preprocessing is log_mel for every runner).
    With a `label`, a progress bar counts the clips (on a terminal)."""
    tokens: dict[str, list[int]] = {}
    seconds, steps = 0.0, 0
    with progress_bar() as bar:
        task = bar.add_task(label or "transcribing", total=len(clips), visible=bool(label))
        for clip in clips:
            result = greedy(parts, log_mel(clip.audio), config)
            tokens[clip.id] = result.tokens
            seconds += result.encode_seconds + result.decode_seconds
            steps += result.steps
            bar.advance(task)
    return Transcripts(tokens, seconds, sum(clip.seconds for clip in clips), steps)


def score_wer(
    metric: dict[str, Any],
    clips: Sequence[Clip],
    candidate: dict[str, list[int]],
    reference: dict[str, list[int]],
    decode: Decode,
) -> Fidelity:
    """Fidelity of `candidate` transcripts: WER vs the sentences, compared with the reference's WER."""
    texts = [clip.text for clip in clips]
    groups = [clip.noise for clip in clips]
    ours = wer_by_group(texts, [decode(candidate[clip.id]) for clip in clips], groups)
    fp32 = wer_by_group(texts, [decode(reference[clip.id]) for clip in clips], groups)
    increase = ours["all"] - fp32["all"]
    budget = float(metric.get("max_increase", 1.0))
    same = sum(candidate[clip.id] == reference[clip.id] for clip in clips)
    by_noise = ", ".join(f"{group} {ours[group]:.1f}" for group in ours if group != "all")
    detail: dict[str, float] = {"wer": ours["all"], "fp32_wer": fp32["all"], "wer_increase": increase}
    detail.update({f"wer_{group}": value for group, value in ours.items() if group != "all"})
    detail.update({f"fp32_wer_{group}": value for group, value in fp32.items() if group != "all"})
    detail.update({"clips": float(len(clips)), "identical_transcripts": float(same)})
    return Fidelity(
        "wer",
        100.0 - ours["all"],
        increase <= budget,
        f"WER {ours['all']:.2f}% vs FP32 {fp32['all']:.2f}% ({increase:+.2f} points; budget +{budget}) on "
        f"{len(clips)} clips ({by_noise}); {same}/{len(clips)} transcripts identical to FP32",
        detail,
    )


def spaced(count: int, limit: int | None) -> list[int]:
    """`limit` evenly spaced indices out of `count` (all of them when limit is None or larger)."""
    if limit is None or count <= limit:
        return list(range(count))
    return sorted({round(float(i)) for i in np.linspace(0, count - 1, limit)})


__all__ = ["THREADS", "Transcripts", "score_wer", "spaced", "transcribe"]
