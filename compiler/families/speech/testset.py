"""A synthetic English speech test set for verifying speech-to-text models (Whisper).

Every line of a sentence file (`models/data/speech_sentences.txt`) is spoken by espeak-ng, the
library and voice data shipped in the `espeakng-loader` wheel, so the set needs no system package,
no download and no recorded audio: the sentence itself is the reference transcript. Each sentence
gets a voice and a speaking rate from fixed tables (round-robin by position), is resampled from
espeak's 22050 Hz to Whisper's 16 kHz and peak-normalised, and is then copied with pink noise
added at each requested SNR. Everything is deterministic, so the set has a digest
(`testset_digest`) that can key downstream caches, and the synthesised audio is cached on disk.

espeak-ng keeps state in static variables (pitch flutter and noise positions) that survive
`espeak_Terminate`, so the same sentence spoken twice in one process comes out slightly different.
To make a clip depend only on its own text, voice and rate, every utterance loads the library
afresh, initialises it, speaks, terminates and unloads it (a few milliseconds); a lock serialises
this because the library is process-global.
"""

from __future__ import annotations

import _ctypes
import ctypes
import hashlib
import importlib.metadata
import math
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.fft import next_fast_len
from scipy.signal import resample_poly

from compiler.errors import DataError
from compiler.progress import step

SAMPLE_RATE = 16000
# espeak-ng voice names: a language file under espeak-ng-data/lang ("en-us" America, "en" Great Britain,
# "en-gb-scotland") plus an optional variant from espeak-ng-data/voices/!v ("+f3" female 3, "+m3" male 3).
VOICES = ("en-us", "en-us+f3", "en+m3", "en+f2", "en-us+m7", "en-gb-scotland+f4")
RATES_WPM = (140, 170, 200)
DEFAULT_SNRS = (20, 10)
SPEECH_PEAK = 0.5  # clean clips are scaled to this peak: level-independent, and headroom for added noise
NOISE_LOW_CUT_HZ = 50.0  # the pink noise has no energy below this (no DC drift or rumble)
CLEAN = "clean"
ESPEAK_SEED = 0  # espeak-ng's random numbers (voice variants' breath and flutter), reset per utterance

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report a bad data path as an error instead of calling exit()
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # a short pause after the last sentence, as the espeak-ng command line does
_POS_CHARACTER = 1
_PARAM_RATE = 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_ESPEAK_LOCK = threading.Lock()
_REINSTALL = "reinstall it: pip install --force-reinstall espeakng-loader==0.2.4"


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays with == is not a bool
class Clip:
    """One utterance of the test set: audio and the transcript a perfect recogniser would give."""

    id: str  # "s017-clean", "s017-snr10"
    text: str  # the reference transcript (the sentence)
    audio: np.ndarray  # float32 mono, SAMPLE_RATE Hz, in [-1, 1]
    noise: str  # "clean" or "snr20" / "snr10"
    voice: str
    rate_wpm: int

    @property
    def seconds(self) -> float:
        """Duration of the audio."""
        return len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True)
class Sentence:
    """A sentence with the voice and speaking rate it is synthesised with."""

    id: str  # "s017": 1-based position among the file's non-blank lines
    text: str
    voice: str
    rate_wpm: int


# ---------------------------------------------------------------------------------------------- sentences


def load_sentences(path: Path) -> list[str]:
    """The non-blank lines of a sentence file, stripped; a missing, unreadable or empty file is a DataError."""
    if not path.is_file():
        raise DataError(f"speech sentence file {path} not found: create it with one English sentence per line")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read speech sentence file {path} ({error}): save it as UTF-8 text") from error
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"speech sentence file {path} has no sentences: write one English sentence per line")
    return lines


def assign_voices(texts: Sequence[str]) -> list[Sentence]:
    """Give sentence i voice i mod |voices| and cycle the rate once per round of voices.

    Every voice meets every rate within len(VOICES) * len(RATES_WPM) sentences, and the assignment depends
    only on the position, so `limit` (a prefix of the file) never changes a sentence's voice.
    """
    return [
        Sentence(
            id=f"s{index + 1:03d}",
            text=text,
            voice=VOICES[index % len(VOICES)],
            rate_wpm=RATES_WPM[(index // len(VOICES)) % len(RATES_WPM)],
        )
        for index, text in enumerate(texts)
    ]


def noise_label(snr_db: int | None) -> str:
    """The `Clip.noise` label of a noise level: "clean" or "snr<dB>"."""
    return CLEAN if snr_db is None else f"snr{snr_db}"


def _checked_snrs(snrs: Sequence[int]) -> tuple[int, ...]:
    """SNRs as a tuple of distinct integers (they name clips, so 10 and 10.0 must not both appear)."""
    checked = tuple(snrs)
    if any(isinstance(snr, bool) or not isinstance(snr, int) for snr in checked) or len(set(checked)) != len(checked):
        raise DataError(f"speech test set SNRs {checked!r} must be distinct whole numbers of dB, e.g. (20, 10)")
    return checked


# ---------------------------------------------------------------------------------------------- espeak-ng


def _espeak_paths() -> tuple[Path, Path]:
    """The espeak-ng shared library and data directory shipped in espeakng-loader."""
    try:
        import espeakng_loader
    except ImportError as error:
        raise DataError(f"espeakng-loader is not installed, so speech cannot be synthesised: {_REINSTALL}") from error
    return Path(espeakng_loader.get_library_path()), Path(espeakng_loader.get_data_path())


def _bind(library: ctypes.CDLL) -> None:
    """Declare the signatures of the espeak functions used here (ctypes would guess int everywhere)."""
    library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    library.espeak_Initialize.restype = ctypes.c_int
    library.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    library.espeak_SetSynthCallback.restype = None
    library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    library.espeak_Synth.argtypes = [
        ctypes.c_char_p,  # text
        ctypes.c_size_t,  # size of the buffer, terminator included
        ctypes.c_uint,  # start position
        ctypes.c_int,  # position type
        ctypes.c_uint,  # end position (0: none)
        ctypes.c_uint,  # flags
        ctypes.c_void_p,  # unique identifier out-pointer
        ctypes.c_void_p,  # user data
    ]
    library.espeak_Synchronize.argtypes = []
    library.espeak_Terminate.argtypes = []
    library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    library.espeak_ng_SetRandSeed.restype = None


@contextmanager
def _espeak(library_path: Path, data_path: Path) -> Iterator[tuple[ctypes.CDLL, int]]:
    """A freshly loaded and initialised espeak-ng (library, sample rate), unloaded again on exit."""
    if not (data_path / "phontab").is_file():
        raise DataError(f"espeak-ng data directory {data_path} is missing or incomplete (no phontab): {_REINSTALL}")
    try:
        library = ctypes.CDLL(str(library_path))
    except OSError as error:
        raise DataError(f"cannot load the espeak-ng library {library_path} ({error}): {_REINSTALL}") from error
    try:
        _bind(library)
        rate = library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path).encode(), _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise DataError(f"espeak-ng {library_path} failed to initialise with data {data_path}: {_REINSTALL}")
        # Voice variants with breath or flutter draw random numbers: seed them, or the samples
        # depend on the process (measured: 60 of 178 sentences differed between two processes).
        library.espeak_ng_SetRandSeed(ESPEAK_SEED)
        try:
            yield library, rate
        finally:
            library.espeak_Terminate()
    finally:
        _ctypes.dlclose(library._handle)  # the next load starts from the library's initial static state


def _speak(library: ctypes.CDLL, text: str, voice: str, rate_wpm: int) -> np.ndarray:
    """The int16 samples espeak produces for `text` in `voice` at `rate_wpm` words per minute."""
    chunks: list[np.ndarray] = []

    def collect(wav: Any, count: int, _events: int | None) -> int:
        if wav and count > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # 0: continue synthesising

    callback = _SYNTH_CALLBACK(collect)  # referenced until espeak_Synchronize returns
    library.espeak_SetSynthCallback(callback)
    if library.espeak_SetVoiceByName(voice.encode()) != 0:
        raise DataError(f"espeak-ng has no voice '{voice}' (espeak-ng-data/lang and voices/!v): {_REINSTALL}")
    library.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0)
    encoded = text.encode("utf-8")
    flags = _CHARS_UTF8 | _ENDPAUSE
    status = library.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
    library.espeak_Synchronize()
    if status != 0 or not chunks:
        raise DataError(f"espeak-ng produced no audio for {text!r} (status {status}): {_REINSTALL}")
    return np.concatenate(chunks)


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """int16 samples at `rate` Hz as float32 in [-1, 1] at SAMPLE_RATE Hz (polyphase resampling)."""
    divisor = math.gcd(SAMPLE_RATE, rate)
    audio = samples.astype(np.float64) / 32768.0
    if rate != SAMPLE_RATE:
        audio = resample_poly(audio, SAMPLE_RATE // divisor, rate // divisor)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def synthesize(text: str, voice: str, rate_wpm: int) -> np.ndarray:
    """`text` spoken by espeak-ng: float32 mono at SAMPLE_RATE Hz in [-1, 1], identical on every call."""
    library_path, data_path = _espeak_paths()
    with _ESPEAK_LOCK, _espeak(library_path, data_path) as (library, rate):
        samples = _speak(library, text, voice, rate_wpm)
    return to_16k(samples, rate)


def clean_clip(sentence: Sentence) -> np.ndarray:
    """A sentence synthesised with its voice and rate, scaled to a peak of SPEECH_PEAK."""
    audio = synthesize(sentence.text, sentence.voice, sentence.rate_wpm)
    peak = float(np.abs(audio).max())
    if peak == 0.0:
        raise DataError(f"espeak-ng produced silence for sentence {sentence.id} {sentence.text!r}: reword it")
    return (audio * (SPEECH_PEAK / peak)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- noise


def clip_seed(clip_id: str) -> int:
    """A 64-bit seed derived from a clip id, so each noisy clip has its own, reproducible noise."""
    return int.from_bytes(hashlib.sha256(clip_id.encode()).digest()[:8], "little")


def pink_noise(length: int, seed: int) -> np.ndarray:
    """Unit-power pink (1/f power) noise, high-passed at NOISE_LOW_CUT_HZ, from a seeded numpy Generator."""
    size = next_fast_len(length, real=True)  # clip lengths are often prime-ish: an FFT of those is 10x slower
    white = np.random.default_rng(seed).standard_normal(size)
    frequencies = np.fft.rfftfreq(size, d=1.0 / SAMPLE_RATE)
    shape = np.zeros_like(frequencies)
    audible = frequencies >= NOISE_LOW_CUT_HZ
    shape[audible] = 1.0 / np.sqrt(frequencies[audible])
    noise = np.fft.irfft(np.fft.rfft(white) * shape, n=size)[:length]
    return noise / np.sqrt(np.mean(noise**2))


def add_noise(clean: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """`clean` plus pink noise whose power is exactly the clip's mean power (whole clip) minus `snr_db` dB.

    Should the sum peak above 1, speech and noise are scaled down together, which keeps the SNR.
    """
    speech = clean.astype(np.float64)
    speech_power = float(np.mean(speech**2))
    noise = pink_noise(len(speech), seed) * math.sqrt(speech_power / 10.0 ** (snr_db / 10.0))
    mixed = speech + noise
    peak = float(np.abs(mixed).max())
    if peak > 1.0:
        mixed *= 1.0 / peak
    return mixed.astype(np.float32)


def measured_snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """The SNR of `noisy` against the speech it was made from, in dB (for checks)."""
    speech = clean.astype(np.float64)
    noise = noisy.astype(np.float64) - speech
    return 10.0 * math.log10(float(np.mean(speech**2)) / float(np.mean(noise**2)))


# ---------------------------------------------------------------------------------------------- digest and cache


def _versions() -> str:
    """Versions of the packages whose output ends up in the audio."""
    names = ("espeakng-loader", "numpy", "scipy")
    return ";".join(f"{name}=={importlib.metadata.version(name)}" for name in names)


def testset_digest(sentences: Path, snrs: Sequence[int] = DEFAULT_SNRS) -> str:
    """sha256 over everything that determines the audio: the sentence file, the voice and rate tables, the SNRs,
    the sample rate and peak, the espeak/numpy/scipy versions and this module's source."""
    load_sentences(sentences)  # the same DataError as build_testset for a missing or empty file
    digest = hashlib.sha256()
    parts = (
        sentences.read_bytes(),
        repr((VOICES, RATES_WPM, _checked_snrs(snrs), SAMPLE_RATE, SPEECH_PEAK, NOISE_LOW_CUT_HZ)).encode(),
        _versions().encode(),
        Path(__file__).read_bytes(),
    )
    for part in parts:
        digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()


def _cache_file(cache_dir: Path, digest: str, count: int) -> Path:
    """Where the clean audio of the first `count` sentences of a test set is cached."""
    return cache_dir / f"speech-testset-{digest[:24]}-n{count}.npz"


def _load_cache(path: Path, ids: list[str]) -> list[np.ndarray] | None:
    """Clean audio for sentences `ids` (a prefix of what the file holds), or None if absent or unusable."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as cached:
            stored_ids = [str(name) for name in cached["ids"]]
            lengths, audio = cached["lengths"], cached["audio"]
    except (OSError, ValueError, KeyError):
        return None  # a damaged entry is rebuilt and replaced
    if stored_ids[: len(ids)] != ids:
        return None
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return [audio[offsets[i] : offsets[i + 1]].copy() for i in range(len(ids))]


def _store_cache(path: Path, ids: list[str], audio: list[np.ndarray]) -> None:
    """Write the clean audio to a temporary file in the cache directory and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(
                file,
                ids=np.array(ids),
                lengths=np.array([len(clip) for clip in audio], dtype=np.int64),
                audio=np.concatenate(audio).astype(np.float32),
            )
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a cache entry is shared like any other file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _clean_audio(plan: list[Sentence], total: int, cache_dir: Path, digest: str, levels: int) -> list[np.ndarray]:
    """Clean audio for `plan` from the cache (its own entry, or the whole set's), else synthesised and cached."""
    ids = [sentence.id for sentence in plan]
    for count in dict.fromkeys((len(plan), total)):
        cached = _load_cache(_cache_file(cache_dir, digest, count), ids)
        if cached is not None:
            return cached
    path = _cache_file(cache_dir, digest, len(plan))
    step(
        f"synthesising speech test set: {len(plan)} sentences x {levels} noise levels = {len(plan) * levels} clips "
        f"({len(VOICES)} voices, {len(RATES_WPM)} rates, espeak-ng) -> {path}"
    )
    audio = [clean_clip(sentence) for sentence in plan]
    _store_cache(path, ids, audio)
    return audio


# ---------------------------------------------------------------------------------------------- the test set


def _clips(sentence: Sentence, clean: np.ndarray, snrs: tuple[int, ...]) -> list[Clip]:
    """The clean clip of a sentence followed by one noisy copy per SNR."""
    clips = []
    for snr in (None, *snrs):
        clip_id = f"{sentence.id}-{noise_label(snr)}"
        audio = clean if snr is None else add_noise(clean, snr, clip_seed(clip_id))
        clips.append(Clip(clip_id, sentence.text, audio, noise_label(snr), sentence.voice, sentence.rate_wpm))
    return clips


def build_testset(
    sentences: Path, cache_dir: Path, snrs: tuple[int, ...] = DEFAULT_SNRS, limit: int | None = None
) -> list[Clip]:
    """The speech test set: for each sentence (the first `limit` if given) its clean clip, then a copy per SNR.

    Clean audio is cached under `cache_dir`, keyed by `testset_digest`; the noisy copies are derived from it on
    every call (cheap and deterministic), so the cache holds a third of the audio.
    """
    texts = load_sentences(sentences)
    checked = _checked_snrs(snrs)
    if limit is not None and limit < 1:
        raise DataError(f"speech test set limit {limit} must be at least 1 (or None for all {len(texts)} sentences)")
    plan = assign_voices(texts)[:limit]
    digest = testset_digest(sentences, checked)
    clean = _clean_audio(plan, len(texts), cache_dir, digest, levels=1 + len(checked))
    return [clip for sentence, audio in zip(plan, clean, strict=True) for clip in _clips(sentence, audio, checked)]
