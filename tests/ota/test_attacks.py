"""Attacks and faults against OTA delivery, each with real parts: digits-cnn bundles built by the CLI
and signed with model-signing, a TUF repository served over real HTTP on 127.0.0.1 (a server that
can misbehave on request), and `edgebuild device update` running in another process. Every case
ends with the device still on a good model and one clear line saying why."""

from __future__ import annotations

import io
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner

from compiler.cli.main import main
from compiler.ota import server as server_module
from compiler.ota.keystore import Keystore
from compiler.ota.repo_state import Expiry, Repository
from compiler.ota.repository import bundle_path, promote, publish, refresh, rotate_key
from compiler.ota.slots import SlotStore
from compiler.packaging.signing import DEV_PRIVATE, DEV_PUBLIC
from compiler.shipped import PACKAGES as ROOT
from tests.toml_variants import variant

pytestmark = pytest.mark.slow  # end-to-end builds of real models (minutes)

TARGET = "desktop-int8"
V1, V2 = "digits-cnn-1.0.0-desktop-int8.tar", "digits-cnn-1.0.1-desktop-int8.tar"
PROFILE_TEMPLATE = """id = "{id}"
model = "digits-cnn"
channel = "{channel}"
os = "linux"
arch = "x86_64"
isa_features = ["avx2"]
ram_mb = 1024
[runtimes]
onnxruntime = "1.31.1"
"""
PROFILE = PROFILE_TEMPLATE.format(id="test-device-01", channel="beta")


def run_cli(*args: str) -> None:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


@dataclass
class World:
    """Built once: two signed bundles, a repository with v1 on beta, a device with v1 installed."""

    bundles: dict[str, Path]
    signing_public: Path
    other_bundle_v2: Path  # v2 signed with a key the device does not trust
    fp32_bundle: Path  # the same model for another hardware target (another delegated role)
    repo: Path
    keys: Path
    device: Path
    profile: Path


def _build(artifacts: Path, key: Path, model: str, target: str = TARGET) -> Path:
    run_cli("build", "-t", target, "-m", model, "--artifacts", str(artifacts), "--key", str(key))
    return next((artifacts / "digits-cnn" / target).glob("*.tar"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("ota-world")
    run_cli("keys", "init", "--dir", str(base / "signing"))
    run_cli("keys", "init", "--dir", str(base / "other-signing"))
    key = base / "signing" / DEV_PRIVATE
    v2_recipe = variant(base, "digits-cnn", {'version = "1.0.0"': 'version = "1.0.1"'}, kind="model")
    bundles = {V1: _build(base / "a1", key, "digits-cnn"), V2: _build(base / "a2", key, str(v2_recipe))}
    other = _build(base / "a3", base / "other-signing" / DEV_PRIVATE, str(v2_recipe))
    fp32 = _build(base / "a4", key, "digits-cnn", target="desktop-fp32")
    repo, keys = base / "repo", base / "repo-keys"
    promote_v1 = Keystore.for_repository(repo, keys)
    run_cli("repo", "init", "--repo", str(repo), "--keys", str(keys))
    publish(repo, bundles[V1], promote_v1, "beta")
    promote(repo, V1, promote_v1, "stable")
    profile = base / "device.toml"
    profile.write_text(PROFILE)
    w = World(bundles, base / "signing" / DEV_PUBLIC, other, fp32, repo, keys, base / "device", profile)
    with server_module.serving(repo) as url:
        code, output = device_update(w, url, w.device)
    assert code == 0 and "running digits-cnn 1.0.0" in output, output
    return w


class FaultyHandler(server_module._RepositoryHandler):
    """The repository handler, with faults for paths containing a marker: {marker: kind}."""

    faults: dict[str, str] = {}
    ranges: list[str] = []

    def _respond(self, body: bool) -> None:
        if self.headers.get("Range"):
            self.ranges.append(f"{self.path} {self.headers['Range']}")
        for marker, kind in self.faults.items():
            if marker in self.path:
                if kind in ("404", "500"):
                    self._status(int(kind))  # type: ignore[arg-type]
                    return
                if kind == "slow":
                    time.sleep(3)
                elif kind == "endless":
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        for _ in range(100_000):  # 6.5 GB if nobody stops reading: the client must
                            self.wfile.write(b"\0" * 65536)
                    except OSError:
                        pass
                    return
        super()._respond(body)


@dataclass
class Case:
    """One test's own copies: repository, its keys, the device's install dir, and the server's faults."""

    repo: Path
    keys: Keystore
    device: Path
    url: str
    faults: dict[str, str]
    ranges: list[str]


@pytest.fixture
def case(world: World, tmp_path: Path) -> Iterator[Case]:
    repo, keys_dir, device = tmp_path / "repo", tmp_path / "repo-keys", tmp_path / "device"
    shutil.copytree(world.repo, repo)
    shutil.copytree(world.keys, keys_dir)
    shutil.copytree(world.device, device)
    handler = type("Handler", (FaultyHandler,), {"root": repo.resolve(), "faults": {}, "ranges": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        yield Case(repo, Keystore.for_repository(repo, keys_dir), device, url, handler.faults, handler.ranges)
    finally:
        server.shutdown()
        server.server_close()


def device_update(
    world: World, url: str, device: Path, *extra: str, limit_file_bytes: int = 0, root: Path | None = None
) -> tuple[int, str]:
    """`edgebuild device update` in another process; (exit code, stdout + stderr)."""
    command = [
        sys.executable,
        "-m",
        "compiler.cli.main",
        "device",
        "update",
        "--repo-url",
        url,
        "--profile",
        str(world.profile),
        "--root",
        str(root or world.repo / "metadata" / "1.root.json"),
        "--install-dir",
        str(device),
        "--public-key",
        str(world.signing_public),
        *extra,
    ]

    def limit() -> None:
        if limit_file_bytes:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    env = dict(os.environ, ORT_DISABLE_TELEMETRY="1")
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, preexec_fn=limit)
    return done.returncode, done.stdout + done.stderr


def on(device: Path) -> str:
    """The active version, after recovery, checked intact (every file's digest) by SlotStore."""
    store = SlotStore(device)
    store.recover()
    active = store.active()
    assert active is not None
    return active.version


def refused(world: World, case: Case, expected: str, *extra: str, stays: str = "1.0.0", **kw: Any) -> str:
    code, output = device_update(world, case.url, case.device, *extra, **kw)
    assert code != 0, output
    assert expected in output, output
    assert "Traceback" not in output, output
    assert f"device stays on digits-cnn {stays}" in output, output
    assert on(case.device) == stays
    return output


def publish_v2(world: World, case: Case, bundle: Path | None = None) -> None:
    publish(case.repo, bundle or world.bundles[V2], case.keys, "beta")


def stored(case: Case, name: str) -> Path:
    """The file in the repository's targets/ that holds `name` (consistent snapshots prefix a hash)."""
    return next((case.repo / "targets").rglob(f"*.{name}"))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# The update that should happen, then each attack and fault.


def test_v2_arrives_through_a_delta(world: World, case: Case) -> None:
    publish_v2(world, case)
    code, output = device_update(world, case.url, case.device)
    assert code == 0, output
    assert "delta: digits-cnn-1.0.0-to-1.0.1-desktop-int8.tar.zst applied" in output
    assert "running digits-cnn 1.0.1" in output and "via delta" in output
    assert on(case.device) == "1.0.1"
    code, output = device_update(world, case.url, case.device)
    assert code == 0 and "up to date" in output, output


def test_tampered_bundle_on_the_server(world: World, case: Case) -> None:
    publish_v2(world, case)
    flip_byte(stored(case, V2))
    flip_byte(stored(case, "digits-cnn-1.0.0-to-1.0.1-desktop-int8.tar.zst"))
    output = refused(world, case, "differs from the signed")
    assert "delta failed, falling back to the full bundle" in output


def test_tampered_metadata(world: World, case: Case) -> None:
    publish_v2(world, case)
    role = max((case.repo / "metadata").glob(f"*.{TARGET}.json"), key=lambda p: int(p.name.split(".")[0]))
    role.write_bytes(role.read_bytes().replace(b'"1.0.1"', b'"9.9.9"'))
    refused(world, case, "metadata not signed by enough trusted keys")


def test_rollback_to_old_metadata_is_refused(world: World, case: Case) -> None:
    old = case.repo.with_name("old-repo")
    shutil.copytree(case.repo, old)
    publish_v2(world, case)
    assert device_update(world, case.url, case.device)[0] == 0
    shutil.rmtree(case.repo)
    shutil.copytree(old, case.repo)  # the server now replays the older, validly signed repository
    refused(world, case, "rollback attack", stays="1.0.1")


def test_rollback_to_an_old_bundle_is_refused(world: World, case: Case) -> None:
    publish_v2(world, case)
    assert device_update(world, case.url, case.device)[0] == 0
    # stable still serves 1.0.0, validly signed: the device must not go back in release counter.
    refused(
        world, case, "release counter 1000000 is lower than the installed 1000001", "--channel", "stable", stays="1.0.1"
    )


def test_freeze_with_an_expired_timestamp(world: World, case: Case) -> None:
    publish_v2(world, case)
    refresh(case.repo, case.keys, expiry=Expiry(timestamp=0))
    time.sleep(1)
    refused(world, case, "freeze attack")


def test_mix_and_match_of_metadata_versions(world: World, case: Case) -> None:
    publish_v2(world, case)
    metadata = case.repo / "metadata"
    versions = sorted(int(p.name.split(".")[0]) for p in metadata.glob(f"*.{TARGET}.json"))
    newest, older = metadata / f"{versions[-1]}.{TARGET}.json", metadata / f"{versions[-2]}.{TARGET}.json"
    newest.write_bytes(older.read_bytes())  # a valid, signed, but older role served as the new one
    refused(world, case, f"Expected {TARGET} v{versions[-1]}, got v{versions[-2]}")


@pytest.mark.parametrize("what", ["bundle", "timestamp"])
def test_endless_data(world: World, case: Case, what: str) -> None:
    publish_v2(world, case)
    if what == "bundle":
        case.faults.update({V2: "endless", ".tar.zst": "endless"})
        refused(world, case, "more than the")
    else:
        case.faults["timestamp.json"] = "endless"
        refused(world, case, "refreshing metadata")


def test_bundle_signed_with_an_untrusted_key(world: World, case: Case) -> None:
    publish_v2(world, case, world.other_bundle_v2)
    refused(world, case, "wrong key")


def test_device_with_another_repositorys_root(world: World, case: Case, tmp_path: Path) -> None:
    # The device trusts another repository's root (or this repository is an impostor).
    other = tmp_path / "other-repo"
    run_cli("repo", "init", "--repo", str(other), "--keys", str(tmp_path / "other-keys"))
    shutil.rmtree(case.device / "tuf")
    refused(world, case, "not signed by enough trusted keys", root=other / "metadata" / "1.root.json")


def test_revoked_target_key_cannot_sign(world: World, case: Case) -> None:
    publish_v2(world, case)
    rotate_key(case.repo, TARGET, case.keys)
    retired = next((case.keys.directory / "retired").glob(f"target-{TARGET}-*.pem"))
    revoked = CryptoSigner(load_pem_private_key(retired.read_bytes(), None))
    # An attacker holding the revoked key (and the online snapshot/timestamp keys) republishes the role.
    with Repository.open(case.repo, case.keys) as repository:
        repository.signers = lambda role: [revoked] if role == TARGET else Repository.signers(repository, role)
        repository.role(TARGET).signed.targets.pop(bundle_path(TARGET, "digits-cnn", "1.0.1"))
        repository.mark(TARGET)
        repository.commit()
    refused(world, case, f"{TARGET} was signed by 0/1 keys")


def test_a_role_cannot_sign_for_another_targets_paths(world: World, case: Case) -> None:
    publish(case.repo, world.fp32_bundle, case.keys, "beta")
    with Repository.open(case.repo, case.keys) as repository:
        fp32 = repository.role("desktop-fp32").signed.targets
        # desktop-fp32's key signs a pointer for desktop-int8 that names the fp32 bundle.
        fp32[f"channels/beta/{TARGET}.json"] = fp32["channels/beta/desktop-fp32.json"]
        repository.mark("desktop-fp32")
        repository.commit()
    code, output = device_update(world, case.url, case.device)
    assert code == 0 and "up to date" in output and "desktop-int8 serves digits-cnn 1.0.0" in output, output
    assert on(case.device) == "1.0.0"


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_bundle_with_an_extra_or_missing_file(world: World, case: Case, tmp_path: Path, change: str) -> None:
    with tarfile.open(world.bundles[V2]) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    if change == "extra":
        files["extra.bin"] = b"payload"
    else:
        del files["README.md"]
    forged = tmp_path / V2
    with tarfile.open(forged, "w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    publish_v2(world, case, forged)  # the publisher is compromised; the model signature is not
    refused(world, case, "added file 'extra.bin'" if change == "extra" else "removed file 'README.md'")


def test_corrupt_delta_falls_back_to_the_full_bundle(world: World, case: Case) -> None:
    publish_v2(world, case)
    flip_byte(stored(case, "digits-cnn-1.0.0-to-1.0.1-desktop-int8.tar.zst"))
    code, output = device_update(world, case.url, case.device)
    assert code == 0, output
    assert "delta failed, falling back to the full bundle" in output and "via full" in output
    assert on(case.device) == "1.0.1"


def test_disk_full_during_download(world: World, case: Case) -> None:
    publish_v2(world, case)
    case.faults[".tar.zst"] = "404"  # force the full download, which is larger than the limit
    size = world.bundles[V2].stat().st_size
    refused(world, case, "out of space while downloading", limit_file_bytes=size // 2)


@pytest.mark.parametrize(
    ("marker", "fault", "expected"),
    [
        (V2, "404", "HTTP 404"),
        ("timestamp.json", "500", "HTTP 500"),
        ("timestamp.json", "slow", "timed out"),
        (V2, "slow", "ReadTimeout"),
    ],
)
def test_server_errors(world: World, case: Case, marker: str, fault: str, expected: str) -> None:
    publish_v2(world, case)
    case.faults.update({marker: fault, ".tar.zst": "404"})
    refused(world, case, expected, "--timeout", "1")


def test_interrupted_download_resumes(world: World, case: Case) -> None:
    publish_v2(world, case)
    case.faults[".tar.zst"] = "404"
    part = case.device / "downloads" / f"{V2}.part"
    part.parent.mkdir(exist_ok=True)
    part_size = world.bundles[V2].stat().st_size // 3
    part.write_bytes(world.bundles[V2].read_bytes()[:part_size])
    code, output = device_update(world, case.url, case.device)
    assert code == 0 and "via full" in output, output
    assert on(case.device) == "1.0.1"
    assert any(V2 in line and f"bytes={part_size}-" in line for line in case.ranges), case.ranges
