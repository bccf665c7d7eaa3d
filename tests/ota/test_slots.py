"""A/B slot installs on a device directory: real signed bundles of a tiny CNN built through the CLI,
later releases derived from it (re-signed with the same key), real health checks in ONNX Runtime,
and real SIGKILLs of the installer process."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from compiler.bench import install_kills as kill_bench
from compiler.bench.install_kills import BenchBundles, derive_bundle
from compiler.cli.main import main
from compiler.ota import health, slots
from compiler.ota.slots import InstallError, RolledBackError, SlotError, SlotStore
from compiler.packaging import tarball
from compiler.packaging.signing import DEV_PRIVATE, DEV_PUBLIC
from tests.onnx_helpers import tiny_cnn


def run_cli(*args: str) -> None:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _with_initializers(model_bytes: bytes, change) -> bytes:  # type: ignore[no-untyped-def]
    model = onnx.load_from_string(model_bytes)
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.float32:
            tensor.CopyFrom(numpy_helper.from_array(change(array).astype(np.float32), tensor.name))
    return model.SerializeToString()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """v0 < v1 < v2 (different weights), a NaN model, an unloadable model, and a tampered v2."""
    work = tmp_path_factory.mktemp("ota-bundles")
    run_cli("keys", "init", "--dir", str(work / "keys"))
    private_key = work / "keys" / DEV_PRIVATE
    model, _ = tiny_cnn()
    onnx.save(model, work / "tiny.onnx")
    art, tiny = str(work / "art"), str(work / "tiny.onnx")
    run_cli("build", "--onnx", tiny, "-t", "desktop-fp32", "--artifacts", art, "--key", str(private_key))
    base = next((work / "art" / "tiny" / "desktop-fp32").glob("*.tar"))
    artifact = (work / "art" / "tiny" / "desktop-fp32" / "tiny.onnx").read_bytes()
    out = work / "bundles"
    made = {
        "v0": derive_bundle(base, out, private_key, "0.9.0", artifact),
        "v1": derive_bundle(base, out, private_key, "1.0.0", artifact),
        "v2": derive_bundle(base, out, private_key, "1.0.1", _with_initializers(artifact, lambda a: a * 1.01)),
        "nan": derive_bundle(base, out, private_key, "1.0.2", _with_initializers(artifact, lambda a: a * np.nan)),
        "unloadable": derive_bundle(base, out, private_key, "1.0.3", b"this is not an ONNX model"),
        "public_key": work / "keys" / DEV_PUBLIC,
    }
    files, _ = tarball.read_tar(made["v2"])
    files["tiny.onnx"] = files["tiny.onnx"][:-1] + bytes([files["tiny.onnx"][-1] ^ 1])
    made["tampered"] = out / "tampered" / made["v2"].name
    made["tampered"].parent.mkdir()
    tarball.write_tar(made["tampered"], files)
    return made


def _tree(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in (slots.LOG, ".lock")
    }


def _install(store: SlotStore, bundle: Path, key: Path) -> slots.InstallResult:
    return store.install(bundle, key)


def test_install_v1_then_v2_moves_the_pointer(bundles: dict[str, Path], tmp_path: Path) -> None:
    store, key = SlotStore(tmp_path / "device"), bundles["public_key"]
    assert store.active() is None and store.inactive_slot() == "a"
    first = _install(store, bundles["v1"], key)
    assert first.status == "installed" and first.previous is None and first.bundle.slot == "a"
    second = _install(store, bundles["v2"], key)
    assert second.status == "installed" and second.bundle.slot == "b" and second.previous.version == "1.0.0"
    active = store.active()
    assert (active.model, active.version, active.slot) == ("tiny", "1.0.1", "b")
    assert active.release_counter == 1_000_001 and active.artifact.name == "tiny.onnx"
    assert active.tar.read_bytes() == bundles["v2"].read_bytes()
    pointer = json.loads((tmp_path / "device" / "current.json").read_text())
    assert pointer == {
        "slot": "b",
        "bundle": "tiny-1.0.1-desktop-fp32",
        "release_counter": 1_000_001,
        "version": "1.0.1",
        "sha256": hashlib.sha256(bundles["v2"].read_bytes()).hexdigest(),
    }
    assert json.loads((tmp_path / "device" / "last_good.json").read_text())["slot"] == "a"
    record = json.loads((tmp_path / "device" / "slots" / "b" / "slot.json").read_text())
    assert record["state"] == "installed" and record["release_counter"] == 1_000_001
    files, _ = tarball.read_tar(bundles["v2"])
    for name, data in files.items():
        assert (tmp_path / "device" / "slots" / "b" / name).read_bytes() == data
    again = _install(store, bundles["v2"], key)
    assert again.status == "already-installed" and store.active().slot == "b"
    assert "switched to tiny 1.0.1 (slot b)" in (tmp_path / "device" / "device.log").read_text()


def test_anti_rollback_refuses_an_older_release(bundles: dict[str, Path], tmp_path: Path) -> None:
    store, key = SlotStore(tmp_path / "device"), bundles["public_key"]
    _install(store, bundles["v2"], key)
    before = _tree(tmp_path / "device")
    with pytest.raises(InstallError, match=r"release counter 1000000 is not above .*1000001 \(anti-rollback\)"):
        _install(store, bundles["v1"], key)
    assert _tree(tmp_path / "device") == before and store.active().version == "1.0.1"


@pytest.mark.parametrize(
    ("variant", "reason"),
    [("nan", "output 'logits' has NaN"), ("unloadable", "ONNX Runtime cannot load the model")],
)
def test_failed_health_check_keeps_the_device_on_v1(
    bundles: dict[str, Path], tmp_path: Path, variant: str, reason: str
) -> None:
    store, key = SlotStore(tmp_path / "device"), bundles["public_key"]
    _install(store, bundles["v1"], key)
    with pytest.raises(RolledBackError) as caught:
        _install(store, bundles[variant], key)
    message = str(caught.value)
    assert "health check failed for tiny" in message and "in slot b" in message and reason in message, message
    assert "the device stays on tiny 1.0.0 (slot a)" in message and "\n" not in message
    assert store.active().version == "1.0.0" and store.active().slot == "a"
    assert not any((tmp_path / "device" / "slots" / "b").iterdir())


def test_tampered_or_wrongly_signed_bundle_is_refused_before_any_slot(bundles: dict[str, Path], tmp_path: Path) -> None:
    store, key = SlotStore(tmp_path / "device"), bundles["public_key"]
    _install(store, bundles["v1"], key)
    before = _tree(tmp_path / "device")
    with pytest.raises(InstallError, match=r"refused tiny-1.0.1-desktop-fp32.tar: modified file 'tiny.onnx'"):
        _install(store, bundles["tampered"], key)
    assert _tree(tmp_path / "device") == before
    other = tmp_path / "other-keys"
    run_cli("keys", "init", "--dir", str(other))
    with pytest.raises(InstallError, match="wrong key"):
        _install(store, bundles["v2"], other / DEV_PUBLIC)
    assert _tree(tmp_path / "device") == before and store.active().version == "1.0.0"


def test_rollback_returns_to_the_previous_bundle(bundles: dict[str, Path], tmp_path: Path) -> None:
    store, key = SlotStore(tmp_path / "device"), bundles["public_key"]
    with pytest.raises(SlotError, match="nothing to roll back to"):
        store.rollback()
    _install(store, bundles["v1"], key)
    _install(store, bundles["v2"], key)
    back = store.rollback()
    assert (back.version, back.slot) == ("1.0.0", "a") and store.active().version == "1.0.0"
    with pytest.raises(SlotError, match="nothing to roll back to"):
        store.rollback()
    assert _install(store, bundles["v2"], key).bundle.slot == "b"


def test_recover_clears_a_half_written_slot_and_temp_files(bundles: dict[str, Path], tmp_path: Path) -> None:
    device = tmp_path / "device"
    store, key = SlotStore(device), bundles["public_key"]
    _install(store, bundles["v1"], key)
    before = _tree(device / "slots" / "a")
    # What a kill in the middle of writing slot b leaves: some files, a truncated artifact, no slot.json.
    files, _ = tarball.read_tar(bundles["v2"])
    (device / "slots" / "b").mkdir()
    (device / "slots" / "b" / "README.md").write_bytes(files["README.md"])
    (device / "slots" / "b" / "tiny.onnx").write_bytes(files["tiny.onnx"][:100])
    (device / ".current.json.999.tmp").write_text('{"slot": "b"')
    (device / "incoming").mkdir()
    (device / "incoming" / bundles["v2"].name).write_bytes(b"partial")
    lines = SlotStore(device).recover()
    assert any("cleared slot b" in line for line in lines), lines
    assert any("removed leftover .current.json.999.tmp" in line for line in lines), lines
    assert not (device / "incoming").exists() and not any((device / "slots" / "b").iterdir())
    assert SlotStore(device).active().version == "1.0.0" and _tree(device / "slots" / "a") == before
    assert SlotStore(device).recover() == []


def test_recover_never_guesses_a_missing_pointer(bundles: dict[str, Path], tmp_path: Path) -> None:
    device = tmp_path / "device"
    store, key = SlotStore(device), bundles["public_key"]
    _install(store, bundles["v1"], key)
    (device / "current.json").unlink()
    SlotStore(device).recover()
    assert SlotStore(device).active() is None  # slot a is complete, but nothing points at it
    _install(store, bundles["v1"], key)
    _install(store, bundles["v2"], key)
    (device / "current.json").write_text("{ not json")
    lines = SlotStore(device).recover()
    assert any("restored from last_good.json" in line for line in lines), lines
    assert SlotStore(device).active().version == "1.0.0"


def test_damaged_active_slot_is_reported_and_recovered_from_last_good(bundles: dict[str, Path], tmp_path: Path) -> None:
    device = tmp_path / "device"
    store, key = SlotStore(device), bundles["public_key"]
    _install(store, bundles["v1"], key)
    artifact = device / "slots" / "a" / "tiny.onnx"
    artifact.write_bytes(artifact.read_bytes()[:-1])
    with pytest.raises(SlotError, match=r"slot a: file 'tiny.onnx' differs from the manifest.*reinstall"):
        store.active()
    store.recover()  # no last good: the slot the pointer names is kept (and still reported)
    assert artifact.exists()
    with pytest.raises(SlotError):
        store.active()
    with pytest.raises(InstallError, match="anti-rollback"):  # the pointer's counter still sets the floor
        _install(store, bundles["v0"], key)
    assert _install(store, bundles["v2"], key).bundle.slot == "b"

    other = SlotStore(tmp_path / "other")
    _install(other, bundles["v1"], key)
    _install(other, bundles["v2"], key)
    (tmp_path / "other" / "slots" / "b" / "tiny.onnx").write_bytes(b"bit rot")
    lines = other.recover()
    assert any("restored from last_good.json: tiny 1.0.0 (slot a)" in line for line in lines), lines
    assert other.active().version == "1.0.0"


def test_disk_full_while_writing_leaves_the_active_slot_untouched(
    bundles: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = tmp_path / "device"
    store, key = SlotStore(device), bundles["public_key"]
    _install(store, bundles["v1"], key)
    before = _tree(device / "slots" / "a")
    real_write = slots._write_synced

    def write_until_full(path: Path, data: bytes) -> None:
        if path.parent.name == "b" and path.name == "tiny.onnx":
            path.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(slots, "_write_synced", write_until_full)
    with pytest.raises(InstallError, match=r"No space left on device.*stays on tiny 1.0.0 \(slot a\).*free space"):
        _install(store, bundles["v2"], key)
    monkeypatch.undo()
    assert _tree(device / "slots" / "a") == before and store.active().version == "1.0.0"
    assert _install(store, bundles["v2"], key).bundle.version == "1.0.1"


def test_health_check_inputs_and_a_passing_model(bundles: dict[str, Path], tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "device")
    active = _install(store, bundles["v1"], bundles["public_key"]).bundle
    health.check(active.artifact.parent, active.manifest)
    manifest = {
        "inputs": [
            {"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]},
            {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "seq"]},
            {"name": "pixels", "dtype": "float32", "shape": ["batch", 3]},
        ],
        "metrics": {"latency": {"input_shapes": {"input_ids": [1, 128], "attention_mask": [1, 128]}}},
    }
    feeds = health.sample_inputs(manifest)
    assert feeds["input_ids"].shape == (1, 128) and not feeds["input_ids"].any()
    assert feeds["attention_mask"].all() and feeds["pixels"].shape == (1, 3)
    np.testing.assert_array_equal(feeds["pixels"], health.sample_inputs(manifest)["pixels"])


def test_sigkill_during_install_never_leaves_a_corrupt_device(bundles: dict[str, Path], tmp_path: Path) -> None:
    set_ = BenchBundles(bundles["v0"], bundles["v1"], bundles["v2"], bundles["public_key"])
    lines: list[str] = []
    result = kill_bench.run(5, tmp_path, bundles=set_, calibrate=2, methods=("slots",), out=lines.append)
    counts = result["slots"]
    assert counts["corrupt"] == 0 and counts["old"] + counts["new"] == 5, lines
    assert any(line.startswith("slots: kills during install survived 5 out of 5") for line in lines), lines
    shutil.rmtree(tmp_path / "template-slots")
