"""Builds of models nobody here wrote: ONNX's own zoo and operator files, and modern exports.

Each case runs `edgebuild build --onnx FILE --name NAME` through the CLI, as a user would, and
asserts exit 0 with fidelity within the budget (a user error would be exit 2 and one line; a
traceback is a failure). One artifacts directory per module, so each model imports once for its
targets.

- light/ (ONNX model-zoo CNNs at IR 3, opset 9) on desktop-fp32, desktop-fp16 and desktop-int8;
- a representative set of pytorch-converted/ (opset 6) on the same targets (zoo.REPRESENTATIVE);
- tests/conformance/exports.py's modern exports (ViT, BERT-like, GPT-2-like, CNN blocks, a detection
  head, a dynamo export with external data) on desktop-fp32/-fp16/-int8 and android-ort-int8, and
  one CNN on arm64-int8 (ONNX Runtime for AArch64 under qemu).

`make test` runs squeezenet on desktop-int8, the operator files on desktop-fp16/-int8, the exports
on desktop-int8 and android-ort-int8 and the ARM build; the rest (about 40 minutes on 2 cores,
most of it the large zoo CNNs' INT8 calibration) is marked `conformance` (`make conformance`).
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


def cases(values: list, in_make_test: object, ids: object = None) -> list:
    """pytest params, all slow; those `in_make_test(value)` rejects also `conformance` (make conformance)."""
    params = []
    for value in values:
        marks = [pytest.mark.slow] + ([] if in_make_test(value) else [pytest.mark.conformance])  # type: ignore[operator]
        values_ = value if isinstance(value, tuple) else (value,)
        params.append(pytest.param(*values_, marks=marks, id=ids(value) if ids else str(value)))  # type: ignore[operator]
    return params


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo-artifacts")


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("exports")
    return {name: export(directory) for name, export in EXPORTS.items()}


@pytest.mark.parametrize(
    ("path", "target"),
    cases(
        [(path, target) for path in LIGHT for target in DESKTOP],
        lambda case: case[0].stem in IN_MAKE_TEST and case[1] == "desktop-int8",
        lambda case: f"{case[0].stem}-{case[1]}",
    ),
)
def test_model_zoo_file_builds(path: Path, target: str, artifacts: Path) -> None:
    record = build(path, path.stem, target, artifacts)
    changes = record["provenance"]["import_changes"]
    assert any("upgraded to 17" in change for change in changes)  # IR 3 / opset 9 files are normalized
    assert any("graph inputs" in change for change in changes)


@pytest.mark.parametrize(
    ("path", "target"),
    cases(
        [(p, target) for p in CONVERTED if p.parent.name in REPRESENTATIVE for target in DESKTOP],
        lambda case: case[1] != "desktop-fp32",  # fp16 and int8 are where a pass can have nothing to do
        lambda case: f"{name_of(case[0])}-{case[1]}",
    ),
)
def test_operator_file_builds(path: Path, target: str, artifacts: Path) -> None:
    build(path, name_of(path), target, artifacts)


@pytest.mark.parametrize(
    ("name", "target"),
    cases(
        [(name, target) for name in EXPORTS for target in (*DESKTOP, "android-ort-int8")],
        lambda case: case[1] in ("desktop-int8", "android-ort-int8"),
        lambda case: f"{case[0]}-{case[1]}",
    ),
)
def test_modern_export_builds(name: str, target: str, exports: dict[str, Path], artifacts: Path) -> None:
    record = build(exports[name], name, target, artifacts)
    if name == "vit":  # attention behind a Conv patch embedding: dynamic INT8, not the CNN list
        assert record["model"]["family"] == "generic"
    if name == "dynamo_external_data":
        assert (exports[name].parent / f"{exports[name].name}.data").is_file()
        assert record["model"]["source"]["digest"]


@pytest.mark.slow
def test_modern_cnn_builds_for_an_arm_board(exports: dict[str, Path], artifacts: Path) -> None:
    record = build(exports["resnet_blocks"], "resnet_blocks", "arm64-int8", artifacts)
    assert record["metrics"]["latency"]["instructions"]["integer_mac"] > 0
