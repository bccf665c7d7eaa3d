"""The synthetic speech test set: espeak-ng synthesis, noise at an exact SNR, the on-disk cache and its errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from compiler.errors import DataError
from compiler.families.speech import testset
from compiler.families.speech.testset import (
    RATES_WPM,
    SAMPLE_RATE,
    SPEECH_PEAK,
    VOICES,
    Clip,
    build_testset,
    measured_snr_db,
    synthesize,
)
from compiler.shipped import shipped

# testset_digest is used as testset.testset_digest: imported by name, pytest would collect it as a test

SENTENCES = shipped("models/data/speech_sentences.txt")
SHORT = "Good morning."
LONG = "The committee met on the third of May to discuss the new timetable for buses and trains across the region."


@pytest.fixture
def sentence_file(tmp_path: Path) -> Path:
    path = tmp_path / "sentences.txt"
    path.write_text("Please close the door.\n\nWe meet at 5 on Friday.\nWhere is the station?\n", encoding="utf-8")
    return path


def test_sentence_file_is_large_varied_ascii() -> None:
    lines = SENTENCES.read_text(encoding="ascii").splitlines()
    assert len(lines) >= 150
    assert all(line.strip() == line and line for line in lines)
    assert len(set(lines)) == len(lines)
    words = [len(line.split()) for line in lines]
    assert min(words) <= 3 and max(words) >= 25
    assert sum(any(c.isdigit() for c in line) for line in lines) >= 5
    assert sum(line.endswith("?") for line in lines) >= 10


def test_synthesis_is_deterministic_whatever_came_before() -> None:
    first = synthesize(SHORT, "en-us+f3", 170)
    synthesize(LONG, "en+m3", 200)  # espeak keeps static state between utterances unless reloaded
    again = synthesize(SHORT, "en-us+f3", 170)
    assert np.array_equal(first, again)


@pytest.mark.parametrize("voice", VOICES)
def test_every_voice_speaks_16k_float32(voice: str) -> None:
    audio = synthesize(SHORT, voice, 170)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.4 < len(audio) / SAMPLE_RATE < 3.0
    assert float(np.abs(audio).max()) <= 1.0
    assert float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) > 0.02  # not silent


def test_resampling_keeps_frequencies() -> None:
    rate = 22050
    tone = (10000 * np.sin(2 * np.pi * 1000 * np.arange(rate) / rate)).astype(np.int16)
    audio = testset.to_16k(tone, rate)
    assert audio.dtype == np.float32 and len(audio) == SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(audio))
    assert int(np.argmax(spectrum)) == 1000  # 1 s at 16 kHz: bin k is k Hz


def test_duration_grows_with_length_and_falls_with_rate() -> None:
    short, long = synthesize(SHORT, "en-us", 170), synthesize(LONG, "en-us", 170)
    assert len(long) > 5 * len(short)
    slow, fast = synthesize(LONG, "en-us", 140), synthesize(LONG, "en-us", 200)
    assert len(slow) > 1.2 * len(fast)


def test_clips_order_labels_and_snr(sentence_file: Path, tmp_path: Path) -> None:
    clips = build_testset(sentence_file, tmp_path / "cache", snrs=(20, 10))
    assert [clip.id for clip in clips] == [
        f"s00{i}-{noise}" for i in (1, 2, 3) for noise in ("clean", "snr20", "snr10")
    ]
    assert [clip.voice for clip in clips[::3]] == list(VOICES[:3])
    assert {clip.rate_wpm for clip in clips} == {RATES_WPM[0]}
    assert clips[3].text == "We meet at 5 on Friday."
    by_id = {clip.id: clip for clip in clips}
    for clip in clips:
        assert clip.audio.dtype == np.float32 and float(np.abs(clip.audio).max()) <= 1.0
        clean = by_id[clip.id.split("-")[0] + "-clean"]
        assert clip.seconds == pytest.approx(len(clean.audio) / SAMPLE_RATE)
        if clip.noise == "clean":
            assert float(np.abs(clip.audio).max()) == pytest.approx(SPEECH_PEAK, rel=1e-6)
        else:
            snr = int(clip.noise.removeprefix("snr"))
            assert abs(measured_snr_db(clean.audio, clip.audio) - snr) < 0.5
            assert not np.array_equal(clip.audio, clean.audio)
    noise_a = by_id["s001-snr10"].audio - by_id["s001-clean"].audio
    noise_b = by_id["s001-snr20"].audio - by_id["s001-clean"].audio
    assert abs(np.corrcoef(noise_a, noise_b)[0, 1]) < 0.2  # each clip has its own noise


def test_noise_is_seeded_by_clip_id() -> None:
    clean = synthesize(SHORT, "en-us", 170)
    one = testset.add_noise(clean, 10, testset.clip_seed("s001-snr10"))
    same = testset.add_noise(clean, 10, testset.clip_seed("s001-snr10"))
    other = testset.add_noise(clean, 10, testset.clip_seed("s002-snr10"))
    assert np.array_equal(one, same) and not np.array_equal(one, other)
    assert measured_snr_db(clean, one) == pytest.approx(10.0, abs=0.01)


def test_cache_hit_is_identical_faster_and_synthesises_nothing(
    sentence_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    start = time.perf_counter()
    built = build_testset(sentence_file, cache)
    first = time.perf_counter() - start
    assert len(list(cache.glob("*.npz"))) == 1 and not list(cache.glob("*.tmp"))

    def fail(*_args: object) -> np.ndarray:
        raise AssertionError("cache hit must not synthesise")

    monkeypatch.setattr(testset, "synthesize", fail)
    start = time.perf_counter()
    cached = build_testset(sentence_file, cache)
    second = time.perf_counter() - start
    assert second < first
    assert [clip.id for clip in cached] == [clip.id for clip in built]
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(built, cached, strict=True))
    limited = build_testset(sentence_file, cache, limit=2)  # a prefix comes from the full set's entry
    assert [clip.id for clip in limited] == [clip.id for clip in built[:6]]
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(built, limited, strict=False))


def test_limit_takes_first_sentences_with_all_noise_copies(sentence_file: Path, tmp_path: Path) -> None:
    clips = build_testset(sentence_file, tmp_path / "cache", snrs=(15,), limit=1)
    assert [(clip.id, clip.noise) for clip in clips] == [("s001-clean", "clean"), ("s001-snr15", "snr15")]
    assert isinstance(clips[0], Clip) and clips[0].text == "Please close the door."


def test_digest_tracks_sentences_and_snrs(sentence_file: Path, tmp_path: Path) -> None:
    digest = testset.testset_digest(sentence_file, (20, 10))
    assert digest == testset.testset_digest(sentence_file, (20, 10))
    assert digest != testset.testset_digest(sentence_file, (20,))
    edited = tmp_path / "edited.txt"
    edited.write_text(sentence_file.read_text() + "One more.\n")
    assert digest != testset.testset_digest(edited, (20, 10))


def test_missing_or_empty_sentence_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        build_testset(tmp_path / "nope.txt", tmp_path / "cache")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="no sentences"):
        build_testset(empty, tmp_path / "cache")


def test_bad_snrs_and_limit_are_data_errors(sentence_file: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="SNRs"):
        build_testset(sentence_file, tmp_path / "cache", snrs=(10, 10))
    with pytest.raises(DataError, match="limit"):
        build_testset(sentence_file, tmp_path / "cache", limit=0)


def test_broken_espeak_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    library, data = testset._espeak_paths()
    monkeypatch.setattr(testset, "_espeak_paths", lambda: (tmp_path / "libespeak-ng.so", data))
    with pytest.raises(DataError, match="cannot load the espeak-ng library"):
        synthesize(SHORT, "en-us", 170)
    monkeypatch.setattr(testset, "_espeak_paths", lambda: (library, tmp_path))
    with pytest.raises(DataError, match="data directory"):
        synthesize(SHORT, "en-us", 170)
    monkeypatch.undo()
    with pytest.raises(DataError, match="no voice 'en-xx'"):
        synthesize(SHORT, "en-xx", 170)


def test_synthesis_is_identical_across_processes() -> None:
    """A female variant (breath, flutter: random numbers) gives the same samples in two fresh
    processes whose C library random state differs (before seeding, 60 of 178 sentences differed)."""
    import subprocess
    import sys

    code = (
        "import ctypes, hashlib, sys; libc = ctypes.CDLL(None); [libc.rand() for _ in range(int(sys.argv[1]))]; "
        "from compiler.families.speech.testset import synthesize; "
        "print(hashlib.sha256(synthesize('Could you send me the slides?', 'en-us+f3', 170).tobytes()).hexdigest())"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code, str(n)], capture_output=True, text=True, check=True).stdout
        for n in (0, 7)
    }
    assert len(digests) == 1
