"""TVM-compiled Whisper graphs: on this host through TVM's Relax VM, or for AArch64 under qemu.

Under emulation every decoder step would cost a process start if run through tvm_runner, so the
whole greedy loop runs inside one emulated process: templates/whisper_runner.cc, the C++ twin of
generate.greedy that also ships in ARM64 speech bundles as the device-side template.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from compiler.config import ROOT
from compiler.speech.features import log_mel
from compiler.speech.generate import GenerationConfig
from compiler.speech.testset import Clip

RUNNER_SOURCE = ROOT / "templates" / "whisper_runner.cc"
DECODER_INPUTS = ["tokens", "position", "self_k", "self_v", "cross_k", "cross_v"]


class TvmParts:
    """A host-ISA encoder.so and decoder.so (desktop-tvm) as generation `Parts`."""

    def __init__(self, encoder: Path, decoder: Path, threads: int = 1) -> None:
        from compiler.backends import tvm as tvm_backend

        self.encoder = tvm_backend.load_runner(encoder, ["mel"], threads)
        self.decoder = tvm_backend.load_runner(decoder, DECODER_INPUTS, threads)

    def encode(self, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cross_k, cross_v = self.encoder({"mel": mel})
        return cross_k, cross_v

    def step(self, tokens, position, self_k, self_v, cross_k, cross_v):  # noqa: ANN001, ANN201 (Parts)
        values = (tokens, position, self_k, self_v, cross_k, cross_v)
        logits, k, v = self.decoder(dict(zip(DECODER_INPUTS, values, strict=True)))
        return logits, k, v


def write_settings(config: GenerationConfig, directory: Path) -> None:
    """The runner's settings as .npy files (see whisper_runner.cc)."""
    directory.mkdir(parents=True, exist_ok=True)
    mask, begin = config.suppress_mask()
    np.save(directory / "prompt.npy", np.array(config.prompt, dtype=np.int64))
    limits = [config.eos, config.max_tokens, config.layers, config.d_model]
    np.save(directory / "limits.npy", np.array(limits, dtype=np.int64))
    np.save(directory / "mask.npy", mask)
    np.save(directory / "begin_mask.npy", begin)


def transcribe_under_qemu(
    encoder: Path, decoder: Path, clips: Sequence[Clip], config: GenerationConfig, timeout_s: int = 7200
) -> dict[str, list[int]]:
    """Greedy tokens for every clip from AArch64 libraries, in one qemu-aarch64 process."""
    from compiler.backends import aarch64

    tools = aarch64.ensure_cross_toolchain()
    runner = aarch64.build_runner(source=RUNNER_SOURCE)
    with tempfile.TemporaryDirectory(prefix="edgebuild-whisper-qemu-") as tmp:
        settings, in_dir, out_dir = Path(tmp) / "settings", Path(tmp) / "in", Path(tmp) / "out"
        write_settings(config, settings)
        in_dir.mkdir()
        out_dir.mkdir()
        for index, clip in enumerate(clips):
            np.save(in_dir / f"{index}.npy", log_mel(clip.audio)[None].astype("<f4"))
        arguments = [str(encoder), str(decoder), str(settings), str(in_dir), str(out_dir)]
        aarch64.run_runner(tools, runner, encoder, in_dir, out_dir, timeout_s, arguments)
        return {clip.id: np.load(out_dir / f"{i}.npy").astype(int).tolist() for i, clip in enumerate(clips)}


__all__ = ["RUNNER_SOURCE", "TvmParts", "transcribe_under_qemu", "write_settings"]
