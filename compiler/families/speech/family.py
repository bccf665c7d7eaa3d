"""The `speech` family: Whisper-style speech recognition, an encoder and a KV-cache decoder step.

Graphs: ("encoder", "decoder"); a target gives each its passes with `passes.speech-encoder` /
`passes.speech-decoder`, else `passes.speech`, else `passes.default`. Scored by word error rate
of the product's own greedy loop on a synthetic test set (espeak-ng), against the FP32 PyTorch
model's WER on the same clips. The recipe's tables:

- [source]: `whisper_package` (an installed package shipping the model) or `whisper_dir`;
- [data]: `sentences` (the test set's text, one sentence per line), `snrs` (noise copies, dB),
  `limit`, `max_tokens` (decoder cache capacity), `calibration_clips`, `pass_clips` (clips each
  pass row is scored on), `emulated_clips` (clips verified under emulation);
- [metric]: `kind = "wer"`, `max_increase` (WER points over FP32 a build may lose);
- [bench]: `clips` (clean clips timed for the real-time factor), `wer_clips` (for `make bench`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from compiler.families.base import FamilyBuild, ModelFamily
from compiler.tomlfile import Field, Schema, TomlTable

if TYPE_CHECKING:
    from compiler.backends.base import Backend
    from compiler.engine.cache import Cache
    from compiler.engine.specs import ModelRecipe, TargetSpec

DATA = Schema(
    (
        Field("sentences", str, required=True, doc="the test set's sentences, one per line"),
        Field("snrs", list, items=int, doc="noise copies at these signal-to-noise ratios (dB)"),
        Field("limit", int, minimum=1),
        Field("max_tokens", int, minimum=1),
        Field("calibration_clips", int, minimum=1),
        Field("pass_clips", int, minimum=1),
        Field("emulated_clips", int, minimum=1),
    )
)
METRIC = Schema((Field("kind", str, required=True, choices=("wer",)), Field("max_increase", float)))
BENCH = Schema((Field("clips", int, minimum=1), Field("wer_clips", int, minimum=1)))


class SpeechFamily(ModelFamily):
    """Speech to text: encoder + decoder step, greedy generation, WER gate."""

    name: ClassVar[str] = "speech"
    graphs: ClassVar[tuple[str, ...]] = ("encoder", "decoder")
    source_kinds: ClassVar[tuple[str, ...]] = ("whisper_package", "whisper_dir")
    requires: ClassVar[frozenset[str]] = frozenset({"stepwise"})
    bench: ClassVar[str | None] = "compiler.bench.speech:bench_recipe"
    counts_nodes: ClassVar[bool] = False

    def check_backend(self, backend: Backend) -> None:
        from compiler.errors import ConfigError

        if not self.requires <= backend.capabilities:
            raise ConfigError(
                f"target '{backend.target.name}' ({backend.runtime}) does not build speech models: its converter "
                "path is not built for encoder-decoder generation (BUILD.md 'Speech models'); use a target on "
                f"{', '.join(self.capable_runtimes())}, e.g. desktop-int8 or arm64-int8"
            )

    def check_recipe(self, recipe: ModelRecipe, top: TomlTable) -> None:
        DATA.check(top.table("data", required=True))
        METRIC.check(top.table("metric", required=True))
        BENCH.check(top.table("bench"))

    def source_files(self, recipe: ModelRecipe) -> list[Path]:
        from compiler.families.speech.source import whisper_directory

        return [whisper_directory(recipe)]

    def data_files(self, recipe: ModelRecipe) -> list[Path]:
        return [(recipe.path.parent / recipe.data["sentences"]).resolve()] if recipe.path is not None else []

    def start(self, recipe: ModelRecipe, target: TargetSpec, backend: Backend, cache: Cache) -> FamilyBuild:
        from compiler.families.speech.build import SpeechBuild

        return SpeechBuild(recipe, target, backend, cache)


__all__ = ["SpeechFamily"]
