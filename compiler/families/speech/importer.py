"""Importing a Whisper checkpoint: the transformers model, its exported graphs, the loop's settings
and the FP32 PyTorch reference transcripts that every build of it is scored against."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from compiler.engine.specs import ModelRecipe
from compiler.errors import ModelError
from compiler.families.speech.evaluate import transcribe
from compiler.families.speech.generate import GenerationConfig, OrtParts
from compiler.families.speech.testset import Clip
from compiler.progress import step


def generation_config(model: Any, max_tokens: int) -> GenerationConfig:
    """The loop's settings from the converted model (English-only: no language or task tokens)."""
    config, generation = model.config, model.generation_config
    no_timestamps = getattr(generation, "no_timestamps_token_id", None)
    if no_timestamps is None:
        raise ModelError("the Whisper model has no <|notimestamps|> token id in its generation config")
    eos = int(config.eos_token_id)
    specials = range(eos + 1, config.vocab_size)  # every special token but <|endoftext|>: no timestamps, no tasks
    suppress = sorted({*map(int, generation.suppress_tokens or []), *specials})
    return GenerationConfig(
        prompt=(int(config.decoder_start_token_id), int(no_timestamps)),
        eos=eos,
        suppress=tuple(suppress),
        suppress_at_begin=tuple(int(t) for t in (generation.begin_suppress_tokens or [])),
        max_tokens=max_tokens,
        layers=int(config.decoder_layers),
        d_model=int(config.d_model),
        vocab=int(config.vocab_size),
    )


class Decoder:
    """Token ids -> text with the model's tokenizer.json (what a device would ship)."""

    def __init__(self, tokenizer_json: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))

    def __call__(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True).strip()


def import_whisper(
    recipe: ModelRecipe, max_tokens: int, clips: list[Clip], directory: Path, threads: int = 1
) -> dict[str, Any]:
    """The import stage: convert, check against ctranslate2, export both graphs, write the FP32
    PyTorch reference transcripts of every clip, and check the export reproduces them on 8 clips."""
    from compiler.families.speech.ctranslate2_whisper import load_whisper, verify_against_ctranslate2
    from compiler.families.speech.export import export_parts
    from compiler.families.speech.features import PREPROCESSING, log_mel
    from compiler.families.speech.generate import TorchParts
    from compiler.families.speech.source import whisper_directory

    source = whisper_directory(recipe)
    step(f"importing {recipe.name} from {source}")
    model = load_whisper(source)
    meta: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    if (source / "model.bin").is_file():
        step("checking the conversion against ctranslate2's greedy tokens on 3 clips")
        check = verify_against_ctranslate2(model, source, [log_mel(clip.audio) for clip in clips[:3]])
        meta["ctranslate2_check"] = {k: v for k, v in check.items() if k in ("match", "clips", "encoder_max_abs_diff")}
    paths = export_parts(model, max_tokens, directory)
    config = generation_config(model, max_tokens)
    (directory / "generation_config.json").write_text(config.to_json())
    (directory / "preprocessing.json").write_text(json.dumps(PREPROCESSING, indent=1, sort_keys=True) + "\n")
    if not (source / "tokenizer.json").is_file():
        raise ModelError(f"{source}: no tokenizer.json; the bundle needs it to turn tokens into text")
    shutil.copyfile(source / "tokenizer.json", directory / "tokenizer.json")

    step(f"FP32 PyTorch reference: transcribing {len(clips)} clips")
    reference = transcribe(TorchParts(model), clips, config, "FP32 PyTorch")
    check_clips = clips[:8]
    exported = transcribe(OrtParts(paths["encoder"], paths["decoder"], threads), check_clips, config)
    differ = [clip.id for clip in check_clips if exported.tokens[clip.id] != reference.tokens[clip.id]]
    if differ:
        raise ModelError(f"the exported ONNX graphs transcribe {', '.join(differ)} differently from PyTorch FP32")
    (directory / "reference.json").write_text(json.dumps(reference.tokens, sort_keys=True) + "\n")
    meta["export_check"] = {"clips": len(check_clips), "identical_tokens": True}
    meta["reference_rtf"] = round(reference.real_time_factor, 4)
    return meta


__all__ = ["Decoder", "generation_config", "import_whisper"]
