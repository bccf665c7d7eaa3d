"""Word error rate of speech-to-text output against reference transcripts, the way Whisper is scored.

Both sides go through Whisper's English text normaliser first (lower case, no punctuation, numbers as
digits, British spellings and titles spelled one way), so "5" against "five" or "Mr." against "mister" is
not an error; jiwer then aligns the word sequences. WER is corpus-level: total substitutions, deletions
and insertions over total reference words, in percent, so long and short utterances weigh by length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

ALL = "all"


@lru_cache(maxsize=1)
def _normalizer() -> EnglishTextNormalizer:
    """One normaliser per process: building it loads a spelling table from JSON."""
    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    """Whisper's English normalisation of `text`, whitespace collapsed, without tokens that hold no letter or digit.

    The normaliser keeps "." next to digits ("3.5") and so leaves a lone "." from a trailing "..." ("the end ...");
    such a token is punctuation, not a word, and would count as an insertion.
    """
    return " ".join(word for word in _normalizer()(text).split() if any(char.isalnum() for char in word))


@dataclass(frozen=True)
class WerCounts:
    """Alignment counts over a set of utterances; `wer` is in percent."""

    substitutions: int
    deletions: int
    insertions: int
    hits: int
    utterances: int

    @property
    def reference_words(self) -> int:
        """Words in the normalised references (every one is a hit, a substitution or a deletion)."""
        return self.hits + self.substitutions + self.deletions

    @property
    def errors(self) -> int:
        """Substitutions + deletions + insertions."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """errors / reference words, in percent; with no reference words, 0 if nothing was inserted else 100."""
        if self.reference_words == 0:
            return 0.0 if self.insertions == 0 else 100.0
        return 100.0 * self.errors / self.reference_words


def _check_lengths(references: Sequence[str], hypotheses: Sequence[str], groups: Sequence[str] | None = None) -> None:
    """Every reference needs exactly one hypothesis (and one group): a mismatch is a bug in the caller."""
    sizes = {len(references), len(hypotheses)} | ({len(groups)} if groups is not None else set())
    if len(sizes) != 1:
        raise ValueError(
            f"WER needs one hypothesis per reference: got {len(references)} references, {len(hypotheses)} hypotheses"
            + (f", {len(groups)} groups" if groups is not None else "")
        )


def wer_counts(references: Sequence[str], hypotheses: Sequence[str]) -> WerCounts:
    """Substitutions, deletions, insertions and hits of normalised `hypotheses` against normalised `references`.

    An utterance whose reference normalises to nothing contributes its hypothesis words as insertions.
    """
    _check_lengths(references, hypotheses)
    if not references:
        return WerCounts(0, 0, 0, 0, 0)
    output = jiwer.process_words([normalize(text) for text in references], [normalize(text) for text in hypotheses])
    return WerCounts(output.substitutions, output.deletions, output.insertions, output.hits, len(references))


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate in percent (see `WerCounts.wer` for references with no words)."""
    return wer_counts(references, hypotheses).wer


def wer_counts_by_group(
    references: Sequence[str], hypotheses: Sequence[str], groups: Sequence[str]
) -> dict[str, WerCounts]:
    """`wer_counts` per group (e.g. noise level), in order of first appearance, plus ALL over every utterance."""
    _check_lengths(references, hypotheses, groups)
    if ALL in groups:
        raise ValueError(f"'{ALL}' is reserved for the overall figure; rename that group")
    result: dict[str, WerCounts] = {}
    for group in dict.fromkeys(groups):
        members = [i for i, name in enumerate(groups) if name == group]
        result[group] = wer_counts([references[i] for i in members], [hypotheses[i] for i in members])
    result[ALL] = wer_counts(references, hypotheses)
    return result


def wer_by_group(references: Sequence[str], hypotheses: Sequence[str], groups: Sequence[str]) -> dict[str, float]:
    """WER in percent per group (e.g. "clean", "snr20", "snr10") plus "all"."""
    return {group: counts.wer for group, counts in wer_counts_by_group(references, hypotheses, groups).items()}
