"""The acceptance path with the real model: MiniLM v1 and a v2 whose last encoder layer changed are
built and signed, published to a TUF repository, served by `edgebuild serve` on 127.0.0.1, and a
device (another process) installs v1 in full, then v2 through a delta, health-checking each."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from compiler.bench.model_update import finetuned_minilm
from compiler.ota.slots import SlotStore
from compiler.packaging.signing import DEV_PRIVATE, DEV_PUBLIC
from compiler.shipped import PACKAGES as ROOT
from tests.ota.serving import cli, edgebuild_serve

pytestmark = pytest.mark.slow  # end-to-end builds of real models (minutes)

ENV = dict(os.environ, ORT_DISABLE_TELEMETRY="1")
PROFILE = """id = "laptop-7"
model = "minilm"
channel = "beta"
os = "linux"
arch = "x86_64"
isa_features = ["avx2"]
ram_mb = 8192
[runtimes]
onnxruntime = "1.31.1"
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, Path]]:
    base = tmp_path_factory.mktemp("minilm-ota")
    cli("keys", "init", "--dir", str(base / "signing"))
    key = str(base / "signing" / DEV_PRIVATE)
    v2_recipe = finetuned_minilm(base / "v2", "1.1.0")
    repo = base / "repo"
    for model, artifacts in (("minilm", base / "a1"), (str(v2_recipe), base / "a2")):
        cli("build", "-t", "desktop-int8", "-m", model, "--artifacts", str(artifacts), "--key", key)
    for artifacts in (base / "a1", base / "a2"):
        bundle = next((artifacts / "minilm" / "desktop-int8").glob("*.tar"))
        cli("publish", str(bundle), "--repo", str(repo), "--keys", str(base / "repo-keys"))
    with edgebuild_serve(repo, ENV) as url:
        yield repo, url, base


def device_update(base: Path, repo: Path, url: str, device: Path, channel: str) -> str:
    profile = base / "device.toml"
    profile.write_text(PROFILE)
    command = [
        sys.executable, "-m", "compiler.cli.main", "device", "update", "--repo-url", url, "--profile", str(profile),
        "--root", str(repo / "metadata" / "1.root.json"), "--install-dir", str(device),
        "--public-key", str(base / "signing" / DEV_PUBLIC), "--channel", channel,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_minilm_v1_in_full_then_v2_through_a_delta(served: tuple[Path, str, Path], tmp_path: Path) -> None:
    repo, url, base = served
    device = tmp_path / "device"
    # v1 went to beta first, then v2 replaced it there; stable is promoted to v1 to start from it.
    cli("promote", "minilm-1.0.0-desktop-int8.tar", "--repo", str(repo), "--keys", str(base / "repo-keys"))
    first = device_update(base, repo, url, device, "stable")
    assert "running minilm 1.0.0" in first and "via full" in first, first
    second = device_update(base, repo, url, device, "beta")
    assert "running minilm 1.1.0" in second and "via delta" in second, second
    active = SlotStore(device).active()
    assert active is not None and active.version == "1.1.0" and active.release_counter == 1_001_000
    full = next((repo / "targets").rglob("*.minilm-1.1.0-desktop-int8.tar")).stat().st_size
    delta = next((repo / "targets").rglob("*.minilm-1.0.0-to-1.1.0-desktop-int8.tar.zst")).stat().st_size
    assert delta < full / 5, (delta, full)  # only the last layer changed
