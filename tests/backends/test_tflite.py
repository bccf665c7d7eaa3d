"""Android LiteRT targets end to end with the real toolchain: digits-cnn converted by onnx2tf in the
pinned 'tflite' environment (created on first use), run in LiteRT's interpreter against the FP32
reference, packaged with its op list and tensor dtypes; the conversion is byte-reproducible."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from compiler.backends import tflite
from compiler.cli.main import main
from compiler.errors import UserError

pytestmark = pytest.mark.slow  # end-to-end builds of real models (minutes)


def _build(target: str, artifacts: Path) -> Path:
    result = CliRunner().invoke(
        main, ["build", "-t", target, "-m", "digits-cnn", "--artifacts", str(artifacts)], catch_exceptions=False
    )
    if result.exit_code != 0 and "toolchain 'tflite': could not" in result.output:
        pytest.skip(f"the tflite toolchain cannot be created here: {result.output.strip().splitlines()[-1]}")
    assert result.exit_code == 0, result.output
    return artifacts / "digits-cnn" / target


@pytest.fixture(scope="module")
def int8_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build("android-int8", tmp_path_factory.mktemp("android"))


def test_int8_is_int8_and_meets_the_budget(int8_build: Path) -> None:
    record = json.loads((int8_build / "report.json").read_text())
    stats = record["stages"][-1]["stats"]
    assert record["metrics"]["fidelity"]["within_budget"] and record["metrics"]["fidelity"]["value"] >= 99.5
    assert stats["tensor_dtypes"]["int8"] > stats["tensor_dtypes"].get("float32", 0)  # weights and activations
    assert "CONV_2D" in stats["ops"] and not [op for op in stats["ops"] if op.startswith("Flex") or op == "CUSTOM"]
    assert stats["converter"]["onnx2tf"] == "1.29.24" and len(stats["toolchain"]["lock_sha256"]) == 64
    assert record["metrics"]["size_ratio"] < 0.35
    assert record["metrics"]["latency"]["artifact_ms"] is None  # a phone's speed is not measured here


def test_bundle_describes_the_litert_model(int8_build: Path) -> None:
    with tarfile.open(int8_build / "digits-cnn-1.0.0-android-int8.tar") as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        readme = tar.extractfile("README.md").read().decode()  # type: ignore[union-attr]
    assert "digits-cnn.tflite" in names
    assert manifest["target"]["runtime"] == "litert" and manifest["target"]["os"] == "android"
    assert manifest["inputs"][0]["layout"] == "NHWC" and manifest["inputs"][0]["shape"][-1] == 1
    assert manifest["conversion"]["tensor_dtypes"]["int8"] > 0 and "QUANTIZE" in manifest["conversion"]["ops"]
    assert 'getSignatureRunner("serving_default")' in readme and "NHWC" in readme
    shown = CliRunner().invoke(main, ["inspect", str(int8_build)])
    assert shown.exit_code == 0 and "latency: not measured at build time" in shown.output, shown.output


def test_fp16_halves_the_size_and_the_conversion_is_reproducible(int8_build: Path, tmp_path: Path) -> None:
    fp16 = _build("android-fp16", tmp_path / "a")
    record = json.loads((fp16 / "report.json").read_text())
    assert 0.45 < record["metrics"]["size_ratio"] < 0.55 and record["metrics"]["fidelity"]["within_budget"]
    again = _build("android-int8", tmp_path / "b")  # another cache: import, passes and conversion redone

    def digest(build: Path) -> str:
        return hashlib.sha256((build / "digits-cnn.tflite").read_bytes()).hexdigest()

    assert digest(again) == digest(int8_build)


def test_int8_scheme_follows_the_inputs_and_bad_precision_is_refused(tmp_path: Path) -> None:
    assert tflite.int8_mode({"image": np.zeros((4, 1, 8, 8), np.float32)}) == "full-integer"
    ids = {"input_ids": np.zeros((4, 16), np.int64), "attention_mask": np.ones((4, 16), np.int64)}
    assert tflite.int8_mode(ids) == "dynamic-range"  # token ids: INT8 weights, float activations
    with pytest.raises(UserError, match="fp32, fp16 or int8"):
        tflite.compile_model(tmp_path / "model.onnx", "int4", {}, {}, tmp_path)


MAKER = """
import json, sys
from pathlib import Path
import numpy as np
import tensorflow as tf

request = json.loads(Path(sys.argv[1]).read_text())
spec = tf.TensorSpec([1, 8], tf.float32)
if request["kind"] == "flex":  # Erf is not a LiteRT builtin here: only the Flex (TensorFlow) op set has it
    fn = tf.function(lambda x: tf.math.erf(x) + 1.0, input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
else:  # 16x8 quantization: int16 activations, int8 weights
    dense = tf.keras.layers.Dense(4)
    dense.build((1, 8))
    fn = tf.function(lambda x: tf.nn.relu(dense(x)), input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([np.full((1, 8), i / 8, np.float32)] for i in range(8))
    ops = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    converter.target_spec.supported_ops = [ops]
Path(request["output"]).write_bytes(converter.convert())
Path(request["result"]).write_text("{}")
"""


@pytest.mark.parametrize(
    ("kind", "message"),
    [("flex", "Flex or custom ops that LiteRT's builtin set cannot run: FlexErf"), ("int16", "int16-activation")],
)
def test_inspection_refuses_flex_ops_and_int16_activations(kind: str, message: str, tmp_path: Path) -> None:
    maker = tmp_path / "make_tflite.py"
    maker.write_text(MAKER)
    model = tmp_path / f"{kind}.tflite"
    tflite.TOOLCHAIN.run(maker, {"kind": kind, "output": str(model)}, timeout_s=600)
    with pytest.raises(UserError, match=message):
        tflite.TOOLCHAIN.run(tflite.WORKER, {"command": "inspect", "model": str(model)}, timeout_s=600)
