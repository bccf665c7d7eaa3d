"""Host real-time factor of a speech build: the compiled graphs and the FP32 ONNX pair transcribe the
same clean clips, interleaved (the machine's load hits both alike); the first measurement of these
model bytes on this host is kept in the measurement ledger, so a rebuild records the same figure."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from compiler.backends.base import CompiledGraph
from compiler.digests import sha256_file, tool_versions
from compiler.engine.fingerprint import code_digest
from compiler.engine.measurements import recall_or_measure
from compiler.families.speech.evaluate import THREADS, Transcripts, spaced, transcribe
from compiler.families.speech.generate import Parts
from compiler.families.speech.testset import Clip
from compiler.progress import step

if TYPE_CHECKING:
    from compiler.families.speech.build import SpeechBuild

VERIFYING = ("compiler.families.speech.evaluate", "compiler.families.speech.native_loop")


def timed_clips(build: SpeechBuild) -> list[Clip]:
    """The clean clips the real-time factor is measured on: `bench_clips` of them, evenly spaced."""
    clean = [clip for clip in build.clips if clip.noise == "clean"] or build.clips
    return [clean[i] for i in spaced(len(clean), build.settings.bench_clips)]


def real_time_factors(
    build: SpeechBuild, compiled: dict[str, CompiledGraph], runners: Callable[[], dict[str, Parts]]
) -> dict[str, Any]:
    """Real-time factor and ms per clip of each of `runners()` ("fp32": the FP32 ONNX pair,
    "artifact": the build), greedy on `bench_clips` clean clips, interleaved, through the host's
    measurement ledger (`runners` is called only when the ledger has no figure for these bytes)."""
    timed = timed_clips(build)
    subject = {
        "what": "speech-rtf",
        "models": [sha256_file(p) for p in (*build.fp32.values(), *(c.artifact for c in compiled.values()))],
        "clips": [clip.id for clip in timed],
        "threads": THREADS,
        "code": code_digest([*VERIFYING, __name__]) + build.backend.fingerprint(),
        "tools": tool_versions("onnxruntime", "numpy", *build.backend.tools),
    }

    def measure() -> dict[str, Any]:
        step(f"timing the FP32 pair and the build on {len(timed)} clips (real-time factor)")
        loaded = runners()
        runs: dict[str, list[Transcripts]] = {name: [] for name in loaded}
        for runner in loaded.values():
            transcribe(runner, timed[:1], build.config)  # warm-up
        for clip in timed:  # interleaved: the machine's load hits both alike
            for name, runner in loaded.items():
                runs[name].append(transcribe(runner, [clip], build.config))
        audio = sum(clip.seconds for clip in timed)
        return {
            name: {
                "rtf": sum(t.seconds for t in done) / audio,
                "ms_per_clip": 1000 * sum(t.seconds for t in done) / len(done),
            }
            for name, done in runs.items()
        }

    return recall_or_measure(subject, measure)


__all__ = ["VERIFYING", "real_time_factors", "timed_clips"]
