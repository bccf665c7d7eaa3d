"""Word error rate with Whisper's English normaliser: equivalences, hand-counted errors and per-group figures."""

from __future__ import annotations

import pytest

from compiler.families.speech.wer import normalize, wer_by_group, wer_counts, word_error_rate


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("I have 5 apples.", "i have five apples"),
        ("Hello, WORLD!", "hello world"),
        ("Mr. Smith met Dr. Jones.", "mister smith met doctor jones"),
        ("It opened in 2024.", "It opened in twenty twenty four"),
        ("The colour is grey", "the color is gray"),
        ("The end...", "the end"),
    ],
)
def test_normaliser_equivalences(written: str, spoken: str) -> None:
    assert normalize(written) == normalize(spoken)
    assert word_error_rate([written], [spoken]) == 0.0


def test_normaliser_output() -> None:
    assert normalize("  Where is   the STATION?? ") == "where is the station"
    assert normalize("...") == ""
    assert normalize("twenty-five people") == "25 people"


def test_substitution_deletion_insertion_counts() -> None:
    counts = wer_counts(["the cat sat on the mat"], ["the cat sit on mat"])
    assert (counts.substitutions, counts.deletions, counts.insertions, counts.hits) == (1, 1, 0, 4)
    assert counts.reference_words == 6 and counts.errors == 2
    assert counts.wer == pytest.approx(100 * 2 / 6)
    assert word_error_rate(["the cat sat"], ["the big black cat sat"]) == pytest.approx(100 * 2 / 3)
    assert word_error_rate(["please close the door"], [""]) == 100.0
    assert word_error_rate(["red blue"], ["green pink gold grey"]) == 200.0  # WER is not capped at 100


def test_corpus_wer_weighs_by_reference_words() -> None:
    references = ["a b c d e f g h i j", "k l"]  # 10 + 2 words
    hypotheses = ["a b c d e f g h i j", "k m"]  # 1 substitution
    assert word_error_rate(references, hypotheses) == pytest.approx(100 / 12)  # not the mean of 0% and 50%


def test_empty_references() -> None:
    assert word_error_rate([], []) == 0.0
    assert word_error_rate([""], [""]) == 0.0
    assert word_error_rate(["..."], ["okay"]) == 100.0  # nothing to say, something said
    counts = wer_counts(["", "good morning"], ["hi", "good morning"])
    assert (counts.insertions, counts.reference_words, counts.utterances) == (1, 2, 2)
    assert counts.wer == 50.0


def test_wer_by_group() -> None:
    references = ["I have 5 apples.", "Mr. Smith went home", "the cat sat", "close the door"]
    hypotheses = ["i have five apples", "mister smith went", "the dog sat down", "close the door"]
    groups = ["clean", "snr10", "snr10", "snr20"]
    figures = wer_by_group(references, hypotheses, groups)
    assert list(figures) == ["clean", "snr10", "snr20", "all"]
    assert figures["clean"] == 0.0
    assert figures["snr10"] == pytest.approx(100 * 3 / 7)  # deletion of "home", "cat"->"dog", inserted "down"
    assert figures["snr20"] == 0.0
    assert figures["all"] == pytest.approx(100 * 3 / 14)


def test_mismatched_lengths_and_reserved_group_are_rejected() -> None:
    with pytest.raises(ValueError, match="one hypothesis per reference"):
        word_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="groups"):
        wer_by_group(["a"], ["a"], ["clean", "snr10"])
    with pytest.raises(ValueError, match="reserved"):
        wer_by_group(["a"], ["a"], ["all"])
