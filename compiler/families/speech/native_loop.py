"""The greedy loop as a native program, for graphs that run where this process cannot call them.

Under emulation every decoder step would cost a process start if each graph were run on its own,
so the whole greedy loop runs inside one process on the target: templates/whisper_runner.cc, the
C++ twin of generate.greedy, built and run by the backend (`Backend.run_program`) next to its
runtime; it also ships in those bundles as the device-side template.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compiler.families.speech.features import log_mel
from compiler.families.speech.generate import GenerationConfig
from compiler.families.speech.testset import Clip
from compiler.shipped import shipped

if TYPE_CHECKING:
    from compiler.backends.base import Backend

RUNNER_SOURCE = shipped("templates/whisper_runner.cc")


def write_settings(config: GenerationConfig, directory: Path) -> None:
    """The runner's settings as .npy files (see whisper_runner.cc)."""
    directory.mkdir(parents=True, exist_ok=True)
    mask, begin = config.suppress_mask()
    np.save(directory / "prompt.npy", np.array(config.prompt, dtype=np.int64))
    limits = [config.eos, config.max_tokens, config.layers, config.d_model]
    np.save(directory / "limits.npy", np.array(limits, dtype=np.int64))
    np.save(directory / "mask.npy", mask)
    np.save(directory / "begin_mask.npy", begin)


def transcribe_natively(
    backend: Backend,
    encoder: Path,
    decoder: Path,
    clips: Sequence[Clip],
    config: GenerationConfig,
    timeout_s: int = 7200,
) -> dict[str, list[int]]:
    """Greedy tokens for every clip, in one run of the native loop where the artifacts run."""
    with tempfile.TemporaryDirectory(prefix="edgebuild-speech-loop-") as tmp:
        settings, in_dir, out_dir = Path(tmp) / "settings", Path(tmp) / "in", Path(tmp) / "out"
        write_settings(config, settings)
        in_dir.mkdir()
        out_dir.mkdir()
        for index, clip in enumerate(clips):
            np.save(in_dir / f"{index}.npy", log_mel(clip.audio)[None].astype("<f4"))
        arguments = [str(encoder), str(decoder), str(settings), str(in_dir), str(out_dir)]
        backend.run_program(encoder, RUNNER_SOURCE, arguments, timeout_s)
        return {clip.id: np.load(out_dir / f"{i}.npy").astype(int).tolist() for i, clip in enumerate(clips)}


__all__ = ["RUNNER_SOURCE", "transcribe_natively", "write_settings"]
