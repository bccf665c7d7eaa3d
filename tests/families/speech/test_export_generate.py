"""The exported Whisper graphs and the generation loop, on the real tiny.en weights and espeak-ng clips:
the static KV cache gives the same tokens as recomputing everything, the ONNX graphs give the same
tokens as PyTorch, the tied embedding is stored once, and beam search with one beam is greedy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.families.speech.ctranslate2_whisper import load_whisper, whisper_package_dir
from compiler.families.speech.evaluate import score_wer, transcribe
from compiler.families.speech.export import export_parts
from compiler.families.speech.features import log_mel
from compiler.families.speech.generate import (
    GenerationConfig,
    OrtNoCache,
    OrtParts,
    TorchParts,
    beam_search,
    greedy,
    greedy_nocache,
)
from compiler.families.speech.importer import Decoder, generation_config
from compiler.families.speech.testset import build_testset
from compiler.shipped import PACKAGES as ROOT

pytestmark = pytest.mark.slow  # end-to-end builds of real models (minutes)

SENTENCES = ROOT / "models" / "data" / "speech_sentences.txt"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    directory = tmp_path_factory.mktemp("whisper-export")
    model = load_whisper(whisper_package_dir())
    paths = export_parts(model, 64, directory)
    clips = build_testset(SENTENCES, tmp_path_factory.mktemp("speech-cache"), (10,), limit=3)
    decode = Decoder(whisper_package_dir() / "tokenizer.json")
    return {"model": model, "paths": paths, "clips": clips, "config": generation_config(model, 64), "decode": decode}


def test_kv_cache_decoder_gives_the_no_cache_decoders_tokens(exported: dict) -> None:
    paths, config = exported["paths"], exported["config"]
    parts = OrtParts(paths["encoder"], paths["decoder"])
    nocache = OrtNoCache(paths["decoder_nocache"])
    for clip in exported["clips"]:
        mel = log_mel(clip.audio)
        cached, full = greedy(parts, mel, config), greedy_nocache(parts, nocache, mel, config)
        assert cached.tokens == full.tokens, clip.id
        assert cached.tokens and all(t < config.eos for t in cached.tokens)


def test_onnx_graphs_reproduce_pytorch_and_transcribe_the_sentences(exported: dict) -> None:
    paths, config, clips = exported["paths"], exported["config"], exported["clips"]
    onnx_tokens = transcribe(OrtParts(paths["encoder"], paths["decoder"]), clips, config).tokens
    torch_tokens = transcribe(TorchParts(exported["model"]), clips, config).tokens
    assert onnx_tokens == torch_tokens
    fidelity = score_wer({"max_increase": 1.0}, clips, onnx_tokens, torch_tokens, exported["decode"])
    assert fidelity.detail["wer_increase"] == 0.0 and fidelity.detail["identical_transcripts"] == len(clips)
    assert fidelity.detail["wer_clean"] < 20.0  # tiny.en understands espeak-ng's clean speech


def test_tied_embedding_is_stored_once(exported: dict) -> None:
    decoder = onnx.load(str(exported["paths"]["decoder"]))
    tables = [init for init in decoder.graph.initializer if 51864 in init.dims]
    assert len(tables) == 1 and list(tables[0].dims) == [384, 51864]


def test_beam_search_with_one_beam_is_greedy_and_wider_beams_finish(exported: dict) -> None:
    paths, config = exported["paths"], exported["config"]
    parts = OrtParts(paths["encoder"], paths["decoder"])
    clip = exported["clips"][0]
    mel = log_mel(clip.audio)
    assert beam_search(parts, mel, config, beam_size=1).tokens == greedy(parts, mel, config).tokens
    wide = beam_search(parts, mel, config, beam_size=4)
    assert wide.tokens and all(t < config.eos for t in wide.tokens)
    assert exported["decode"](wide.tokens).strip()


def test_generation_config_round_trips_and_masks_special_tokens(exported: dict) -> None:
    config = exported["config"]
    assert GenerationConfig.from_json(config.to_json()) == config
    assert config.prompt == (50257, 50362) and config.eos == 50256
    always, begin = config.suppress_mask()
    assert np.isneginf(always[50257:]).all() and always[config.eos] == 0.0  # eos may end a transcript
    assert np.isneginf(begin[[220, config.eos]]).all()  # but not begin it


def test_export_refuses_a_cache_longer_than_the_models_positions(tmp_path: Path, exported: dict) -> None:
    from compiler.errors import ModelError

    with pytest.raises(ModelError, match="exceeds the model's 448 positions"):
        export_parts(exported["model"], 449, tmp_path)
