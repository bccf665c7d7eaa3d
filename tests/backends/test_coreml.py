"""iOS Core ML targets: digits-cnn converted from its PyTorch model by coremltools, INT8 weights on
weight ops only, executed on Linux by the MIL reference interpreter against the FP32 reference,
zipped reproducibly; a package producing NaN, or one newer than the declared iOS, fails."""

from __future__ import annotations

import hashlib
import json
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from compiler.backends import coreml, mil_interpreter
from compiler.backends.base import IO_RECORD
from compiler.cli.main import main
from compiler.errors import ModelError


def _build(target: str, artifacts: Path) -> Path:
    result = CliRunner().invoke(main, ["build", "-t", target, "-m", "digits-cnn", "--artifacts", str(artifacts)])
    assert result.exit_code == 0, result.output
    return artifacts / "digits-cnn" / target


@pytest.fixture(scope="module")
def int8_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build("ios-int8", tmp_path_factory.mktemp("ios"))


@pytest.mark.slow
def test_int8_weights_are_int8_and_the_interpreter_scored_the_package(int8_build: Path) -> None:
    record = json.loads((int8_build / "report.json").read_text())
    stats = record["stages"][-1]["stats"]
    fidelity = record["metrics"]["fidelity"]
    assert fidelity["within_budget"] and fidelity["value"] >= 99.5
    assert stats["tensor_dtypes"]["int8"] >= 3 and "constexpr_affine_dequantize" in stats["ops"]
    assert stats["converter"]["minimum_ios"] == "17" and stats["converter"]["spec_version"] == "8"
    assert record["metrics"]["size_ratio"] < 0.35 and record["metrics"]["latency"]["artifact_ms"] is None


@pytest.mark.slow
def test_bundle_carries_the_zipped_package_and_a_swift_snippet(int8_build: Path) -> None:
    with tarfile.open(int8_build / "digits-cnn-1.0.0-ios-int8.tar") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        readme = tar.extractfile("README.md").read().decode()  # type: ignore[union-attr]
        assert "digits-cnn.mlpackage.zip" in tar.getnames()
    assert manifest["target"]["runtime"] == "coreml" and manifest["target"]["runtime_min_version"] == "17"
    assert manifest["conversion"]["converter"]["route"].startswith("torch.export")
    assert "MLModel.compileModel(at:" in readme and '"image"' in readme
    with zipfile.ZipFile(int8_build / "digits-cnn.mlpackage.zip") as archive:
        names = archive.namelist()
        manifest_json = json.loads(archive.read("model.mlpackage/Manifest.json"))
    assert names == sorted(names) and "model.mlpackage/Data/com.apple.CoreML/model.mlmodel" in names
    assert all(key.isupper() or "-" in key for key in manifest_json["itemInfoEntries"])


@pytest.mark.slow
def test_package_is_byte_identical_from_another_cache(int8_build: Path, tmp_path: Path) -> None:
    again = _build("ios-int8", tmp_path)  # retrains, re-exports and reconverts from scratch

    def digest(build: Path) -> str:
        return hashlib.sha256((build / "digits-cnn.mlpackage.zip").read_bytes()).hexdigest()

    assert digest(again) == digest(int8_build)


class _MaskedHead(torch.nn.Module):
    """A linear layer plus a large folded constant that is not a weight (like an attention mask)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(64, 4096)
        mask = torch.zeros(1, 4096)
        mask[:, ::2] = -1e4
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1) + self.mask  # after softmax: no pass folds it away


class _Nan(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x - 10.0)  # every input here is below 10


def _convert(module: torch.nn.Module, shape: tuple[int, ...]) -> object:
    import coremltools as ct

    exported = torch.export.export(module.eval(), (torch.zeros(shape),), strict=False).run_decompositions()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ct.convert(
            exported,
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS17,
            inputs=[ct.TensorType(name="x", shape=shape)],
            outputs=[ct.TensorType(name="y")],
            skip_model_load=True,
        )


def _saved(model: object, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    package = directory / "model.mlpackage"
    model.save(str(package))  # type: ignore[attr-defined]
    coreml.canonicalise(package)
    return package


def test_weight_compression_leaves_non_weight_constants_alone(tmp_path: Path) -> None:
    package = _saved(coreml.quantize_weights(_convert(_MaskedHead(), (1, 64))), tmp_path)
    program = mil_interpreter.load_program(package)
    ops = program.functions["main"].operations
    compressed = [op for op in ops if op.op_type.startswith("constexpr_")]
    assert len(compressed) == 1 and compressed[0].outputs[0].shape == (4096, 64)  # the linear weight only
    mask = [op for op in ops if op.op_type == "const" and op.outputs[0].shape == (1, 4096)]
    assert mask and np.isfinite(mask[0].outputs[0].val).all()
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    y = mil_interpreter.run(program, {"x": x})["y"].astype(np.float32)
    with torch.no_grad():
        expected = _MaskedHead()(torch.from_numpy(x)).numpy()
    assert np.isfinite(y).all() and np.abs(y - expected).max() < 1.0  # FP16 compute, INT8 weights


def test_a_package_producing_nan_fails_verification(tmp_path: Path) -> None:
    package = _saved(_convert(_Nan(), (2, 3)), tmp_path / "pkg")
    archive = tmp_path / "out" / coreml.ARTIFACT_NAME
    archive.parent.mkdir()
    coreml.zip_package(package, archive)
    io = {"inputs": [{"name": "x", "dtype": "float32", "shape": [2, 3]}], "input_shapes": {"x": [2, 3]}}
    archive.with_name(IO_RECORD).write_text(json.dumps({**io, "outputs": [], "onnx_outputs": ["y"]}))
    with pytest.raises(ModelError, match=r"produces NaN/inf in output 'y' \(6 values, batch 0\)"):
        coreml.outputs_for(archive, [{"x": np.ones((2, 3), np.float32)}], ["y"])


def test_a_package_newer_than_the_declared_ios_is_refused(tmp_path: Path) -> None:
    package = _saved(_convert(_Nan(), (2, 3)), tmp_path)
    coreml.check_deployment(package, "17")
    with pytest.raises(ModelError, match=r"spec version 8 \(iOS 17\+\), newer than the target's minimum iOS 16"):
        coreml.check_deployment(package, "16")
