"""Whisper's log-mel front end in plain numpy: 16 kHz mono audio -> `[80, 3000]` float32.

This is the exact preprocessing of OpenAI Whisper (and of transformers' `WhisperFeatureExtractor`
and faster-whisper's `FeatureExtractor`): pad or trim to 30 s with zeros, centred STFT (reflect
padding, n_fft 400, hop 160, periodic Hann window), power spectrum, 80-band Slaney mel filterbank
(Slaney scale and area normalisation, 0-8 kHz), log10 of max(mel, 1e-10), clamp to (max - 8),
then (x + 4) / 4. The last STFT frame is dropped so 480000 samples give exactly 3000 frames.

It is written here rather than imported so the bundle's preprocessing has no torch or transformers
dependency and is fast (one batched rfft). The STFT and filterbank run in float64 and the result is
cast to float32, which keeps it within float32 rounding of the torch/transformers implementations.
`PREPROCESSING` records the parameters for a bundle manifest, so device code can reproduce them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from compiler.errors import DataError

SAMPLE_RATE = 16000
N_MELS = 80
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0

PREPROCESSING: dict[str, object] = {
    "kind": "whisper_log_mel",
    "sample_rate": SAMPLE_RATE,
    "channels": 1,
    "chunk_seconds": CHUNK_SECONDS,
    "n_samples": N_SAMPLES,
    "pad": "zeros at the end, or trim, to n_samples",
    "n_fft": N_FFT,
    "hop_length": HOP_LENGTH,
    "window": "hann (periodic), length n_fft",
    "center": True,
    "center_pad_mode": "reflect",
    "power": 2.0,
    "n_mels": N_MELS,
    "mel_scale": "slaney",
    "mel_norm": "slaney",
    "f_min": 0.0,
    "f_max": SAMPLE_RATE / 2,
    "drop_last_frame": True,
    "n_frames": N_FRAMES,
    "log": "log10(max(mel, 1e-10))",
    "clamp": "max(x, x.max() - 8.0)",
    "normalize": "(x + 4.0) / 4.0",
    "output_shape": [N_MELS, N_FRAMES],
    "dtype": "float32",
}


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa's htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3.0
    mel = hz / f_sp
    min_log_hz, min_log_mel, log_step = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    above = hz >= min_log_hz
    mel[above] = min_log_mel + np.log(hz[above] / min_log_hz) / log_step
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of `_hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3.0
    hz = mel * f_sp
    min_log_hz, min_log_mel, log_step = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    above = mel >= min_log_mel
    hz[above] = min_log_hz * np.exp(log_step * (mel[above] - min_log_mel))
    return hz


@lru_cache(maxsize=1)
def mel_filters() -> np.ndarray:
    """The `[n_mels, n_fft // 2 + 1]` Slaney filterbank (float64), identical to librosa.filters.mel."""
    fft_freqs = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)
    mel_points = np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([SAMPLE_RATE / 2]))[0], N_MELS + 2)
    hz_points = _mel_to_hz(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=1)
def _hann_window() -> np.ndarray:
    """Periodic Hann window of length n_fft (torch.hann_window's default)."""
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)
    window.setflags(write=False)
    return window


def pad_or_trim(audio: np.ndarray) -> np.ndarray:
    """Exactly `N_SAMPLES` samples: zeros appended, or the tail cut off."""
    if audio.shape[0] >= N_SAMPLES:
        return audio[:N_SAMPLES]
    return np.pad(audio, (0, N_SAMPLES - audio.shape[0]))


def _checked_audio(audio: np.ndarray) -> np.ndarray:
    """1-D finite float64 samples, or a DataError saying what was passed instead."""
    array = np.asarray(audio)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1 or array.size == 0:
        raise DataError(
            f"log_mel: expected mono audio as a 1-D array of {SAMPLE_RATE} Hz samples, got shape {array.shape}; "
            "downmix and resample before computing features"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"log_mel: expected float samples in [-1, 1], got dtype {array.dtype}; convert PCM first")
    if not np.all(np.isfinite(array)):
        raise DataError("log_mel: the audio contains NaN or infinite samples; clean the input clip")
    return array.astype(np.float64, copy=False)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Whisper log-mel features `[80, 3000]` float32 of 16 kHz mono `audio` (padded/trimmed to 30 s)."""
    samples = pad_or_trim(_checked_audio(audio))
    padded = np.pad(samples, N_FFT // 2, mode="reflect")
    frames = sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:N_FRAMES]  # the last (3001st) frame is dropped
    spectrum = np.fft.rfft(frames * _hann_window(), axis=-1)
    power = spectrum.real**2 + spectrum.imag**2  # [3000, 201]
    mel = mel_filters() @ power.T  # [80, 3000]
    log_spec = np.log10(np.maximum(mel, LOG_FLOOR))
    log_spec = np.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)
