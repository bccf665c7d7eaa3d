"""The device side on an ARM board: `edgebuild device update` running on the emulated Raspberry Pi 4.

digits-cnn is built for arm64-int8, signed and published to a TUF repository that `edgebuild serve`
serves on 127.0.0.1; then the device client itself runs inside the arm64 Debian userland under
qemu-aarch64 -cpu cortex-a72, with the aarch64 wheels of compiler/toolchains/arm64-device.lock
(tuf, cryptography, zstandard, model-signing, onnxruntime, ...), so the TUF refresh, the download,
the signature check and the health check all run as the board's Python runs them. A second run
finds the board up to date; a bundle for another board is never offered to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from compiler.ota.slots import SlotStore
from compiler.packaging.signing import DEV_PRIVATE, DEV_PUBLIC
from compiler.shipped import PACKAGES as ROOT
from compiler.toolchains.arm64 import DEVICE_LOCK, Userland
from tests.ota.serving import cli, edgebuild_serve

pytestmark = pytest.mark.slow  # an end-to-end build, and the client under emulation (minutes)

ENV = {"ORT_DISABLE_TELEMETRY": "1", "PATH": "/usr/local/bin:/usr/bin:/bin"}
PROFILE = """id = "pi4-kitchen"
model = "digits-cnn"
channel = "beta"
os = "linux"
arch = "aarch64"
isa_features = ["neon"]
ram_mb = 4096
[runtimes]
onnxruntime = "1.31.1"
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, Path]]:
    base = tmp_path_factory.mktemp("arm64-ota")
    cli("keys", "init", "--dir", str(base / "signing"))
    key = str(base / "signing" / DEV_PRIVATE)
    repo = base / "repo"
    for target in ("arm64-int8", "desktop-int8"):  # the desktop bundle is there to be refused
        cli("build", "-t", target, "-m", "digits-cnn", "--artifacts", str(base / "a"), "--key", key)
        bundle = next((base / "a" / "digits-cnn" / target).glob("*.tar"))
        cli("publish", str(bundle), "--repo", str(repo), "--keys", str(base / "repo-keys"))
    with edgebuild_serve(repo, {**ENV, "PYTHONPATH": str(ROOT)}) as url:
        yield repo, url, base


def update_on_the_board(base: Path, repo: Path, url: str, device: Path) -> str:
    """`edgebuild device update` in the arm64 userland on the A72 model; its stdout."""
    profile = base / "pi4.toml"
    profile.write_text(PROFILE)
    arguments = [
        "device", "update", "--repo-url", url, "--profile", str(profile),
        "--root", str(repo / "metadata" / "1.root.json"), "--install-dir", str(device),
        "--public-key", str(base / "signing" / DEV_PUBLIC),
    ]  # fmt: skip
    board = Userland(lock=DEVICE_LOCK, python_path=(ROOT,))
    done = board.run_python("cortex-a72", "compiler.cli.main", arguments, "edgebuild device update", 1800)
    return done.stdout


def test_the_board_installs_and_health_checks_its_arm64_bundle(served: tuple[Path, str, Path], tmp_path: Path) -> None:
    repo, url, base = served
    device = tmp_path / "pi4"
    first = update_on_the_board(base, repo, url, device)
    assert "channel beta: arm64-int8 serves digits-cnn 1.0.0" in first, first
    # Switched only after the health check ran the model in the board's onnxruntime.
    assert "install: switched to digits-cnn 1.0.0" in first and "via full" in first, first
    active = SlotStore(device).active()
    assert active is not None and active.name.endswith("-arm64-int8")  # not the desktop bundle beside it
    assert active.manifest["target"]["arch"] == "aarch64" and active.manifest["target"]["cpu"] == "cortex-a72"
    assert "switched to digits-cnn 1.0.0" in (device / "device.log").read_text()
    again = update_on_the_board(base, repo, url, device)
    assert "up to date" in again, again
