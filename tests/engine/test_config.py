"""Recipes and targets: the shipped files load; bad files give one actionable ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.engine import config
from compiler.errors import ConfigError
from compiler.shipped import shipped
from tests.toml_variants import variant


def test_every_shipped_target_and_recipe_loads() -> None:
    targets = config.available("targets")
    assert {"desktop-fp32", "desktop-fp16", "desktop-int8", "desktop-int4"} <= set(targets)
    for name in targets:
        assert config.load_target(name).name == name
    for name in config.available("models"):
        recipe = config.load_recipe(name)
        assert recipe.inputs and recipe.metric["kind"]


def test_unknown_target_lists_valid_names_and_suggests() -> None:
    with pytest.raises(ConfigError, match=r"unknown target 'desktop-int9'; did you mean 'desktop-int8'\?.*valid:"):
        config.load_target("desktop-int9")


def test_unknown_model_suggests() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'minlm'; did you mean 'minilm'"):
        config.load_recipe("minlm")


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "broken"\nplatform = { os = "linux" \n')
    with pytest.raises(ConfigError, match=r"broken\.toml: malformed TOML: .*line 2"):
        config.load_target(str(path))


def test_unknown_field_suggests_nearest(tmp_path: Path) -> None:
    path = variant(tmp_path, "desktop-fp32", {'precision = "fp32"': 'precision = "fp32"\nprecison = "fp32"'})
    with pytest.raises(ConfigError, match=r"field 'precison' is not a known field; did you mean 'precision'"):
        config.load_target(str(path))


def test_bad_choice_lists_allowed_values(tmp_path: Path) -> None:
    path = variant(tmp_path, "desktop-fp32", {'precision = "fp32"': 'precision = "fp8"'})
    with pytest.raises(ConfigError, match=r"field 'precision' is 'fp8'; .*valid: fp16, fp32, int4, int8, mixed"):
        config.load_target(str(path))


def test_unknown_pass_and_option(tmp_path: Path) -> None:
    path = variant(tmp_path, "desktop-fp32", {'{ pass = "fuse" }': '{ pass = "fusee" }'})
    with pytest.raises(ConfigError, match=r"unknown pass 'fusee'; did you mean 'fuse'"):
        config.load_target(str(path))
    path = variant(tmp_path, "desktop-fp32", {'{ pass = "fuse" }': '{ pass = "fuse", model_typ = "bert" }'})
    with pytest.raises(ConfigError, match=r"unknown option 'model_typ'"):
        config.load_target(str(path))


def test_pass_order_is_checked(tmp_path: Path) -> None:
    path = variant(
        tmp_path,
        "desktop-fp32",
        {'{ pass = "fold-constants" },\n  { pass = "fuse" },': '{ pass = "fuse" },\n  { pass = "fold-constants" },'},
    )
    with pytest.raises(ConfigError, match=r"'fold-constants' must come before 'fuse'"):
        config.load_target(str(path))


def test_option_type_is_checked(tmp_path: Path) -> None:
    path = variant(
        tmp_path,
        "desktop-int8",
        {'"quantize-dynamic-int8", per_channel = true, mixed': '"quantize-dynamic-int8", per_channel = "yes", mixed'},
    )
    with pytest.raises(ConfigError, match=r"option 'per_channel' must be true or false, got 'yes'"):
        config.load_target(str(path))


def test_name_must_match_file(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text(shipped("targets/desktop-fp32.toml").read_text())
    with pytest.raises(ConfigError, match=r"field 'name' is 'desktop-fp32' but the file is other\.toml"):
        config.load_target(str(path))


def test_recipe_missing_source_and_bad_metric(tmp_path: Path) -> None:
    path = variant(tmp_path, "digits-cnn", {'kind = "top1_accuracy"': 'kind = "top1"'}, kind="model")
    with pytest.raises(ConfigError, match=r"field 'metric.kind' is 'top1'; did you mean 'top1_accuracy'"):
        config.load_recipe(str(path))
    path = variant(tmp_path, "digits-cnn", {'torch = "models.digits_cnn:build"': ""}, kind="model")
    with pytest.raises(ConfigError, match=r"field 'source' needs exactly one of"):
        config.load_recipe(str(path))


def test_rpc_runner_needs_tracker_and_key(tmp_path: Path) -> None:
    path = variant(tmp_path, "arm64-fp32", {'runner = "local"': 'runner = "rpc"'})
    with pytest.raises(ConfigError, match=r'arm64-fp32\.toml: \[tune\] runner = "rpc" needs tracker = "HOST:PORT"'):
        config.load_target(str(path))
    farm = 'runner = "rpc"\ntracker = "10.0.0.5:9190"\nkey = "rpi4"'
    path = variant(tmp_path, "arm64-fp32", {'runner = "local"': farm})
    assert config.load_target(str(path)).tune == {
        "trials": 0,
        "max_trials_per_task": None,
        "runner": "rpc",
        "tracker": "10.0.0.5:9190",
        "key": "rpi4",
    }


def test_emulated_batches_must_be_positive(tmp_path: Path) -> None:
    path = variant(tmp_path, "arm64-fp32", {'speed_gate = "off"': 'speed_gate = "off"\nemulated_batches = 0'})
    with pytest.raises(ConfigError, match=r"'verify\.emulated_batches' must be 1 or more, got 0"):
        config.load_target(str(path))
    assert config.load_target("arm64-fp32").emulated_batches == 24
