"""Builds of models nobody here wrote: ONNX's own zoo and operator files, and modern exports.

Each case runs `edgebuild build --onnx FILE --name NAME` through the CLI, as a user would, and
asserts exit 0 with fidelity within the budget (a user error would be exit 2 and one line; a
traceback is a failure). One artifacts directory per module, so each model imports once for its
targets.

- light/ (ONNX model-zoo CNNs at IR 3, opset 9) on desktop-fp32, desktop-fp16 and desktop-int8:
  squeezenet in `make test`; all nine (about 15 minutes on 2 cores) under
  `-m conformance` (`make conformance`);
- a representative set of pytorch-converted/ (opset 6) on the same targets (zoo.REPRESENTATIVE);
- tests/conformance/exports.py's modern exports (ViT, BERT-like, GPT-2-like, CNN blocks, a detection
  head, a dynamo export with external data) on desktop-fp32/-fp16/-int8 and android-ort-int8, and
  the CNNs on arm64-int8 (ONNX Runtime for AArch64 under qemu: slow, so one CNN).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli.main import main
from tests.conformance.exports import EXPORTS
from tests.conformance.zoo import CONVERTED, LIGHT, REPRESENTATIVE, name_of

DESKTOP = ("desktop-fp32", "desktop-fp16", "desktop-int8")
IN_MAKE_TEST = ("light_squeezenet",)


def build(path: Path, name: str, target: str, artifacts: Path) -> dict:
    """Build through the CLI; the record. Exit 0 is required: a failure shows the build's output."""
    arguments = ["build", "-t", target, "--onnx", str(path), "--name", name, "--artifacts", str(artifacts)]
    result = CliRunner().invoke(main, [*arguments, "--no-package"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 0, result.output
    record: dict = json.loads((artifacts / name / target / "report.json").read_text())
    assert record["metrics"]["fidelity"]["within_budget"], record["metrics"]["fidelity"]["summary"]
    return record


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo-artifacts")


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("exports")
    return {name: export(directory) for name, export in EXPORTS.items()}


def light_case(path: Path) -> object:
    marks = [pytest.mark.slow] + ([] if path.stem in IN_MAKE_TEST else [pytest.mark.conformance])
    return pytest.param(path, marks=marks, id=path.stem)


@pytest.mark.parametrize("target", DESKTOP)
@pytest.mark.parametrize("path", [light_case(path) for path in LIGHT])
def test_model_zoo_file_builds(path: Path, target: str, artifacts: Path) -> None:
    record = build(path, path.stem, target, artifacts)
    changes = record["provenance"]["import_changes"]
    assert any("upgraded to 17" in change for change in changes)  # IR 3 / opset 9 files are normalized
    assert any("graph inputs" in change for change in changes)


@pytest.mark.slow
@pytest.mark.parametrize("target", DESKTOP)
@pytest.mark.parametrize("path", [p for p in CONVERTED if p.parent.name in REPRESENTATIVE], ids=name_of)
def test_operator_file_builds(path: Path, target: str, artifacts: Path) -> None:
    build(path, name_of(path), target, artifacts)


@pytest.mark.slow
@pytest.mark.parametrize("target", [*DESKTOP, "android-ort-int8"])
@pytest.mark.parametrize("name", list(EXPORTS))
def test_modern_export_builds(name: str, target: str, exports: dict[str, Path], artifacts: Path) -> None:
    record = build(exports[name], name, target, artifacts)
    if name == "vit":  # the exporter named static output dims; folding may resolve them
        assert record["model"]["family"] == "generic"
    if name == "dynamo_external_data":
        assert (exports[name].parent / f"{exports[name].name}.data").is_file()
        assert record["model"]["source"]["digest"]


@pytest.mark.slow
def test_modern_cnn_builds_for_an_arm_board(exports: dict[str, Path], artifacts: Path) -> None:
    record = build(exports["resnet_blocks"], "resnet_blocks", "arm64-int8", artifacts)
    assert record["metrics"]["latency"]["instructions"]["integer_mac"] > 0
