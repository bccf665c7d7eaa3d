"""Recipes are validated at load by their family: misspelt keys, wrong types and ranges in [data],
[metric] and [bench] are refused with one line (exit 2) naming the field and the nearest valid name,
before any work is done."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli.main import main
from compiler.engine import config
from compiler.errors import ConfigError
from tests.toml_variants import variant

CASES = [
    (
        "digits-cnn",
        {"max_drop = 0.5": "max_dorp = 0.5"},
        r"field 'metric\.max_dorp' is not a known field; did you mean 'max_drop'\?",
    ),
    (
        "minilm",
        {"min_each = 0.95": "min_eachh = 0.95"},
        r"field 'metric\.min_eachh' is not a known field; did you mean 'min_each'\?",
    ),
    (
        "digits-cnn",
        {"[bench]\nbatch = 64": "[bench]\nbatch = 0"},
        r"field 'bench\.batch' must be an integer >= 1, got 0",
    ),
    (
        "digits-cnn",
        {"batch = 64\ncalibration": 'batch = "abc"\ncalibration'},
        r"field 'data\.batch' must be an integer >= 1, got 'abc'",
    ),
    ("minilm", {"seq = 128": "sqe = 128"}, r"field 'bench\.sqe' is not a known field; did you mean 'seq'\?"),
    (
        "minilm",
        {'representative = "data/': 'representativ = "data/'},
        r"field 'data\.representativ' is not a known field; did you mean 'representative'\?",
    ),
    (
        "minilm",
        {"min_mean = 0.99": "min_mean = 1.5"},
        r"field 'metric\.min_mean' must be a number from -1 to 1, got 1\.5",
    ),
    (
        "minilm",
        {'kind = "embedding_cosine"': 'kind = "embedding_cosin"'},
        r"field 'metric\.kind' is 'embedding_cosin'; did you mean 'embedding_cosine'\?",
    ),
    (
        "whisper-tiny-en",
        {"pass_clips = 24": "pass_clipz = 24"},
        r"field 'data\.pass_clipz' is not a known field; did you mean 'pass_clips'\?",
    ),
    (
        "whisper-tiny-en",
        {"max_increase = 1.0": 'max_increase = "one"'},
        r"field 'metric\.max_increase' must be a number, got 'one'",
    ),
    (
        "whisper-tiny-en",
        {"snrs = [20, 10]": 'snrs = [20, "loud"]'},
        r"field 'data\.snrs' must be a list of integers, got \[20, 'loud'\]",
    ),
    ("digits-cnn", {'family = "cnn"': 'family = "cnnn"'}, r"field 'family' is 'cnnn'; did you mean 'cnn'\?"),
    ("digits-cnn", {'eval = "models.digits_cnn:eval_data"\n': ""}, r"field 'data' needs both 'train' and 'eval'"),
]


@pytest.mark.parametrize(("shipped", "edits", "message"), CASES, ids=[c[2].split("'")[1] for c in CASES])
def test_a_bad_recipe_is_refused_at_load(tmp_path: Path, shipped: str, edits: dict[str, str], message: str) -> None:
    path = variant(tmp_path, shipped, edits, kind="model")
    with pytest.raises(ConfigError, match=message):
        config.load_recipe(str(path))


@pytest.mark.parametrize("edits", [{"max_drop = 0.5": "max_dorp = 0.5"}, {"[bench]\nbatch = 64": "[bench]\nbatch = 0"}])
def test_the_cli_exits_2_with_one_line_before_any_work(tmp_path: Path, edits: dict[str, str]) -> None:
    path = variant(tmp_path, "digits-cnn", edits, kind="model")
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["build", "-m", str(path), "-t", "desktop-int8", "--artifacts", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgebuild: error: ") and "Traceback" not in result.output
    assert time.perf_counter() - started < 10 and not (tmp_path / "cache").exists()  # nothing was built


def test_every_shipped_recipe_passes_its_family_schema() -> None:
    for name in config.available("models"):
        assert config.load_recipe(name).name == name
