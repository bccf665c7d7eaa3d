"""whisper-tiny-en through the whole pipeline on a small slice of the test set: desktop-int8 builds,
passes its WER gate, bundles both graphs with the tokenizer, generation and preprocessing
settings, and is small; an impossible budget fails the build; targets that cannot build speech
models and malformed speech recipes say so in one line."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli.main import main
from compiler.packaging.signing import DEV_PUBLIC, default_key_dir
from compiler.shipped import PACKAGES as ROOT

SMALL = {
    "snrs = [20, 10]": "snrs = [10]\nlimit = 3",
    'sentences = "data/speech_sentences.txt"': f'sentences = "{ROOT / "models" / "data" / "speech_sentences.txt"}"',
    "pass_clips = 24 ": "pass_clips = 2 ",
    "clips = 8\n": "clips = 2\n",
}


def small_recipe(directory: Path, **replacements: str) -> Path:
    """The shipped recipe on 3 sentences (clean + 10 dB: 6 clips), written to `directory`."""
    text = (ROOT / "models" / "whisper-tiny-en.toml").read_text()
    for old, new in {**SMALL, **replacements}.items():
        assert old in text, old
        text = text.replace(old, new)
    path = directory / "whisper-tiny-en.toml"
    path.write_text(text)
    return path


def build(recipe: Path, target: str, artifacts: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["build", "-t", target, "-m", str(recipe), "--artifacts", str(artifacts)])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def int8_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    recipe = small_recipe(tmp_path_factory.mktemp("recipe"))
    artifacts = tmp_path_factory.mktemp("speech-artifacts")
    code, output = build(recipe, "desktop-int8", artifacts)
    assert code == 0, output
    return {
        "recipe": recipe,
        "artifacts": artifacts,
        "dir": artifacts / "whisper-tiny-en" / "desktop-int8",
        "output": output,
    }


@pytest.mark.slow
def test_desktop_int8_passes_the_wer_gate_and_is_small(int8_build: dict) -> None:
    record = json.loads((int8_build["dir"] / "report.json").read_text())
    fidelity = record["metrics"]["fidelity"]
    assert fidelity["metric"] == "wer" and fidelity["within_budget"] is True
    assert fidelity["detail"]["clips"] == 6 and fidelity["detail"]["wer_increase"] <= 1.0
    assert {"wer_clean", "wer_snr10", "fp32_wer_clean"} <= set(fidelity["detail"])
    # Both graphs INT8 but the encoder's fc2 MatMuls (FP32), the tied embedding stored once: ~32%.
    assert record["metrics"]["size_ratio"] < 0.34
    assert record["metrics"]["latency"]["real_time_factor"] > 0
    passes = [(p["graph"], p["pass"]) for p in record["provenance"]["passes"]]
    assert ("encoder", "quantize-dynamic-int8") in passes and ("decoder", "quantize-dynamic-int8") in passes
    transcripts = record["stages"][0]["stats"]["ctranslate2_check"]
    assert transcripts["match"] is True


@pytest.mark.slow
def test_bundle_carries_both_graphs_and_everything_a_device_needs(int8_build: dict) -> None:
    bundle = int8_build["dir"] / "whisper-tiny-en-1.0.0-desktop-int8.tar"
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert {
        "encoder.onnx",
        "decoder.onnx",
        "tokenizer.json",
        "generation_config.json",
        "preprocessing.json",
        "README.md",
        "manifest.json",
        "signature.sig",
    } <= names
    speech = manifest["speech"]
    assert speech["graphs"] == {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
    assert speech["preprocessing"]["n_mels"] == 80 and speech["preprocessing"]["sample_rate"] == 16000
    assert set(speech["wer"]) >= {"wer", "fp32_wer", "wer_increase", "wer_clean", "wer_snr10"}
    roles = {f["name"]: f["role"] for f in manifest["files"]}
    assert roles["encoder.onnx"] == roles["decoder.onnx"] == "artifact" and roles["tokenizer.json"] == "config"
    inputs = {t["name"] for t in manifest["inputs"]}
    assert {"encoder.mel", "decoder.tokens", "decoder.position", "decoder.self_k"} <= inputs
    public_key = default_key_dir() / DEV_PUBLIC  # builds sign with the development key by default
    verified = CliRunner().invoke(main, ["verify", str(bundle), "--public-key", str(public_key)])
    assert verified.exit_code == 0, verified.output


@pytest.mark.slow
def test_rebuild_is_up_to_date(int8_build: dict) -> None:
    code, output = build(int8_build["recipe"], "desktop-int8", int8_build["artifacts"])
    assert code == 0 and "up to date" in output, output


@pytest.mark.slow
def test_impossible_wer_budget_fails_the_build_and_leaves_nothing(int8_build: dict, tmp_path: Path) -> None:
    recipe = small_recipe(tmp_path, **{"max_increase = 1.0": "max_increase = -50.0"})
    code, output = build(recipe, "desktop-int8", int8_build["artifacts"] / "strict")
    assert code == 3, output
    # The unmodified FP32 model cannot meet a budget of -50 points: the message says so, not "change the passes".
    assert "over budget already at import" in output and "check [metric]" in output and "Traceback" not in output
    assert not (int8_build["artifacts"] / "strict" / "whisper-tiny-en" / "desktop-int8").exists()


def test_a_target_without_a_speech_path_says_which_to_use(tmp_path: Path) -> None:
    code, output = build(small_recipe(tmp_path), "android-int8", tmp_path / "art")
    assert code == 2 and "does not build speech models" in output and "desktop-int8" in output, output


def test_malformed_speech_settings_name_the_field(tmp_path: Path) -> None:
    code, output = build(
        small_recipe(tmp_path, **{"max_tokens = 128": 'max_tokens = "many"'}), "desktop-int8", tmp_path / "art"
    )
    assert code == 2 and "data.max_tokens" in output and "Traceback" not in output, output
