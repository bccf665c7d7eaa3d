"""The OTA repository end to end: publisher metadata served over real HTTP on 127.0.0.1 and read by a
real `tuf.ngclient` device client. Bundles are small hand-written tars with schema-valid manifests:
the repository layer reads only the manifest, never the bundle signature."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, TargetFile

from compiler.bench.delivery import SYNTHETIC_COMPATIBILITY
from compiler.ota import repo_state
from compiler.ota.delta import apply_delta
from compiler.ota.keystore import Keystore, KeystoreError, default_keys_dir
from compiler.ota.repo_state import Expiry, RepoError, Repository
from compiler.ota.repository import (
    add_synthetic_targets,
    bundle_path,
    init_repository,
    promote,
    publish,
    refresh,
    rotate_key,
)
from compiler.ota.server import serving
from compiler.ota.tuf_client import OtaError, TufClient, metadata_bytes_for_lookup
from compiler.packaging import manifest as manifest_module
from compiler.packaging.tarball import write_tar

TARGET = "desktop-int8"


def make_bundle(directory: Path, version: str, target: str = TARGET, model: str = "tiny", seed: int = 0) -> Path:
    """A schema-valid bundle tar; each version shares most bytes with the others (a good delta base)."""
    weights = bytes(range(256)) * 64 + f"{version}-{seed}".encode() * 16
    digest = hashlib.sha256(weights).hexdigest()
    manifest = {
        "schema": manifest_module.SCHEMA_ID,
        "model": {"name": model, "version": version, "family": "cnn"},
        "release_counter": manifest_module.release_counter(version),
        "target": {
            "name": target,
            "os": "linux",
            "arch": "x86_64",
            "triple": "x86_64-linux-gnu",
            "cpu": None,
            "isa_features": ["avx2"],
            "runtime": "onnxruntime",
            "runtime_min_version": "1.20",
            "precision": "int8",
            "graph_optimization": None,
        },
        "inputs": [{"name": "x", "dtype": "float32", "shape": [1, 1, 8, 8], "layout": "NCHW"}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [1, 10], "layout": None}],
        "files": [{"name": "model.onnx", "sha256": digest, "bytes": len(weights), "role": "artifact"}],
        "metrics": {
            "size_bytes": len(weights),
            "size_ratio": 0.25,
            "latency": {},
            "fidelity": {"metric": "accuracy", "value": 0.98, "within_budget": True},
        },
        "memory": {
            "method": manifest_module.MEMORY_METHOD,
            "weights_bytes": len(weights),
            "activations_bytes": 1000,
            "total_bytes": len(weights) + 1000,
            "input_shapes": {"x": [1, 1, 8, 8]},
        },
        "provenance": {
            "source_digest": "0" * 64,
            "git_commit": "test",
            "passes": [],
            "tool_versions": {},
            "build_command": "test",
            "build_key": "0" * 64,
        },
    }
    manifest_module.validate(manifest)
    path = directory / f"{model}-{version}-{target}.tar"
    write_tar(path, {"manifest.json": manifest_module.dumps(manifest), "model.onnx": weights})
    return path


@pytest.fixture
def keys(tmp_path: Path) -> Keystore:
    return Keystore(tmp_path / "keys")


@pytest.fixture
def repo(tmp_path: Path, keys: Keystore) -> Path:
    path = tmp_path / "repo"
    init_repository(path, keys)
    return path


@pytest.fixture
def url(repo: Path) -> Iterator[str]:
    with serving(repo) as base:
        yield base


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    directory = tmp_path / "bundles"
    directory.mkdir()
    return directory


def device(repo: Path, url: str, home: Path, bootstrap: bytes | None = None) -> TufClient:
    root = bootstrap if bootstrap is not None else (repo / "metadata" / "1.root.json").read_bytes()
    return TufClient(home, f"{url}/metadata", f"{url}/targets", root)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, b"", dict(error.headers)


def test_init_writes_consistent_snapshot_layout_and_private_keys(repo: Path, keys: Keystore) -> None:
    names = sorted(os.listdir(repo / "metadata"))
    assert names == ["1.root.json", "1.snapshot.json", "1.targets.json", "root.json", "timestamp.json"]
    root = Metadata.from_file(str(repo / "metadata" / "root.json")).signed
    assert root.consistent_snapshot and root.roles["root"].threshold == 2 and len(root.roles["root"].keyids) == 2
    for name in ("root-1", "root-2", "targets", "snapshot", "timestamp"):
        assert stat.S_IMODE(keys.path(name).stat().st_mode) == 0o600
    assert "DEVELOPMENT" in (keys.directory / "README.txt").read_text()
    with pytest.raises(RepoError, match="already holds a repository"):
        init_repository(repo, keys)


def test_keystore_location_is_outside_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEBUILD_REPO_KEYS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    location = default_keys_dir(tmp_path / "served")
    assert location.parent == tmp_path / "config" / "edgebuild" / "repo-keys"
    assert location.name.startswith("served-") and len(location.name) == len("served-") + 16
    monkeypatch.setenv("EDGEBUILD_REPO_KEYS", str(tmp_path / "elsewhere"))
    assert Keystore.for_repository(tmp_path / "served").directory == tmp_path / "elsewhere"
    with pytest.raises(KeystoreError, match="inside the served repository"):
        Keystore.for_repository(tmp_path / "served", keys_dir=tmp_path / "served" / "keys")


def test_publish_is_visible_to_a_device(repo: Path, keys: Keystore, url: str, bundles: Path, tmp_path: Path) -> None:
    bundle = make_bundle(bundles, "1.0.0")
    result = publish(repo, bundle, keys)
    assert result.bundle == bundle_path(TARGET, "tiny", "1.0.0") and result.delta is None and result.changed

    client = device(repo, url, tmp_path / "device")
    client.refresh()
    index = client.channel_index("beta")
    assert index["schema"] == "edgebuild.channel-index/1"
    entry = index["targets"][TARGET]
    assert (entry["arch"], entry["precision"], entry["isa_features"]) == ("x86_64", "int8", ["avx2"])
    assert entry["models"]["tiny"]["version"] == "1.0.0"
    pointer = client.pointer("beta", TARGET)
    assert pointer["models"]["tiny"] == {
        "version": "1.0.0",
        "release_counter": 1_000_000,
        "bundle": result.bundle,
        "rollout": 1.0,
    }
    info = client.target_info(result.bundle)
    assert info is not None and info.length == bundle.stat().st_size
    custom = info.custom["edgebuild"]
    assert custom["model"] == "tiny" and custom["release_counter"] == 1_000_000 and custom["deltas"] == {}
    assert custom["target"]["runtime"] == "onnxruntime"
    assert custom["fidelity"] == {"metric": "accuracy", "value": "0.98"}  # text: canonical JSON has no floats

    # The bundle URL serves the signed bytes, and Range requests resume a download.
    status, body, _ = fetch(client.target_url(info))
    assert status == 200 and hashlib.sha256(body).hexdigest() == info.hashes["sha256"]
    status, tail, headers = fetch(client.target_url(info), {"Range": "bytes=100-"})
    assert status == 206 and tail == body[100:] and headers["Content-Range"] == f"bytes 100-{len(body) - 1}/{len(body)}"
    status, middle, _ = fetch(client.target_url(info), {"Range": "bytes=10-19"})
    assert status == 206 and middle == body[10:20]
    assert fetch(client.target_url(info), {"Range": f"bytes={len(body)}-"})[0] == 416
    assert fetch(f"{url}/metadata/../../etc/passwd")[0] == 404
    head = urllib.request.Request(client.target_url(info), method="HEAD")
    with urllib.request.urlopen(head, timeout=5) as response:
        assert (
            response.status == 200 and response.read() == b"" and response.headers["Content-Length"] == str(len(body))
        )
    assert client.target_info("bundles/desktop-int8/tiny/tiny-9.9.9-desktop-int8.tar") is None
    with pytest.raises(OtaError, match="not in the repository's signed targets"):
        client.pointer("stable", TARGET)


def test_second_version_adds_a_delta_and_moves_the_pointer(
    repo: Path, keys: Keystore, url: str, bundles: Path, tmp_path: Path
) -> None:
    first = make_bundle(bundles, "1.0.0")
    second = make_bundle(bundles, "1.1.0")
    publish(repo, first, keys)
    result = publish(repo, second, keys)
    assert result.delta == f"bundles/{TARGET}/tiny/tiny-1.0.0-to-1.1.0-{TARGET}.tar.zst"

    client = device(repo, url, tmp_path / "device")
    assert client.pointer("beta", TARGET)["models"]["tiny"]["version"] == "1.1.0"
    new = client.target_info(result.bundle)
    delta = client.target_info(result.delta)
    assert new is not None and delta is not None
    assert new.custom["edgebuild"]["deltas"] == {"1.0.0": result.delta}
    about = delta.custom["edgebuild"]
    assert about["base_sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert (about["delta_from"], about["delta_to"], about["result"]) == ("1.0.0", "1.1.0", result.bundle)
    patch = tmp_path / "patch.zst"
    patch.write_bytes(client.fetch_small(result.delta))
    rebuilt = tmp_path / "rebuilt.tar"
    apply_delta(first, patch, rebuilt, new.length, new.hashes["sha256"])
    assert rebuilt.read_bytes() == second.read_bytes()

    # Publishing the same bytes again changes nothing at all.
    assert publish(repo, second, keys).written == ()


def test_release_counter_must_grow(repo: Path, keys: Keystore, bundles: Path, tmp_path: Path) -> None:
    publish(repo, make_bundle(bundles, "2.0.0"), keys)
    before = (repo / "metadata" / "timestamp.json").read_bytes()
    with pytest.raises(RepoError, match=r"release_counter 1000000 is not greater than 2000000"):
        publish(repo, make_bundle(bundles, "1.0.0"), keys)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(RepoError, match="already published with other bytes"):
        publish(repo, make_bundle(other, "2.0.0", seed=1), keys)
    with pytest.raises(RepoError, match="unknown channel 'gamma'"):
        publish(repo, make_bundle(bundles, "3.0.0"), keys, channel="gamma")
    assert (repo / "metadata" / "timestamp.json").read_bytes() == before
    with pytest.raises(RepoError, match="run `edgebuild repo init"):
        publish(tmp_path / "nowhere", make_bundle(bundles, "3.0.0"), keys)


def test_promote_points_stable_at_a_published_bundle(
    repo: Path, keys: Keystore, url: str, bundles: Path, tmp_path: Path
) -> None:
    publish(repo, make_bundle(bundles, "1.0.0"), keys)
    publish(repo, make_bundle(bundles, "1.1.0"), keys)
    result = promote(repo, f"tiny-1.0.0-{TARGET}.tar", keys)
    assert result.channel == "stable" and result.changed
    assert promote(repo, bundles / f"tiny-1.0.0-{TARGET}.tar", keys).written == ()
    client = device(repo, url, tmp_path / "device")
    assert client.pointer("stable", TARGET)["models"]["tiny"]["version"] == "1.0.0"
    assert client.pointer("beta", TARGET)["models"]["tiny"]["version"] == "1.1.0"
    assert client.channel_index("stable")["targets"][TARGET]["models"]["tiny"]["release_counter"] == 1_000_000
    promote(repo, f"tiny-1.1.0-{TARGET}.tar", keys)
    with pytest.raises(RepoError, match="devices refuse rollbacks"):
        promote(repo, f"tiny-1.0.0-{TARGET}.tar", keys)
    with pytest.raises(RepoError, match="is not published"):
        promote(repo, f"tiny-7.0.0-{TARGET}.tar", keys)


def test_refresh_resigns_the_timestamp_and_expiry_is_reported(
    repo: Path, keys: Keystore, url: str, bundles: Path, tmp_path: Path
) -> None:
    publish(repo, make_bundle(bundles, "1.0.0"), keys)
    old = Metadata.from_file(str(repo / "metadata" / "timestamp.json")).signed
    written = refresh(repo, keys, expiry=Expiry(timestamp=2))
    new = Metadata.from_file(str(repo / "metadata" / "timestamp.json")).signed
    assert written == ("timestamp.json",)
    assert new.version == old.version + 1 and new.expires > old.expires
    written = refresh(repo, keys, days=30)  # the snapshot (7 days) expires within 30 days: re-signed too
    assert any(name.endswith(".snapshot.json") for name in written)
    device(repo, url, tmp_path / "fresh").refresh()

    # A repository left unrefreshed: the device names the expired role and when it expired.
    refresh(repo, keys, expiry=Expiry(timestamp=0))
    with pytest.raises(OtaError, match=r"timestamp metadata expired at .* \(freeze attack or stale server\)"):
        device(repo, url, tmp_path / "stale").refresh()


def test_rotated_keys_are_followed_by_a_device_with_the_old_root(
    repo: Path, keys: Keystore, url: str, bundles: Path, tmp_path: Path
) -> None:
    publish(repo, make_bundle(bundles, "1.0.0"), keys)
    bootstrap = (repo / "metadata" / "1.root.json").read_bytes()
    old_root_keys = {keys.signer(name).public_key.keyid for name in ("root-1", "root-2")}
    old_target_key = keys.signer(f"target-{TARGET}").public_key.keyid
    existing = device(repo, url, tmp_path / "existing", bootstrap)
    existing.refresh()

    rotate_key(repo, "timestamp", keys)
    rotate_key(repo, "root", keys)
    rotate_key(repo, TARGET, keys)
    publish(repo, make_bundle(bundles, "1.1.0"), keys)

    root = Metadata.from_file(str(repo / "metadata" / "root.json")).signed
    assert root.version == 3 and not old_root_keys & set(root.roles["root"].keyids)
    assert len(list((keys.directory / "retired").iterdir())) == 4
    targets = Repository.open(repo, keys).role("targets").signed
    assert targets.delegations is not None and old_target_key not in targets.delegations.keys
    for client in (existing, device(repo, url, tmp_path / "new", bootstrap)):
        client.refresh()
        assert client.pointer("beta", TARGET)["models"]["tiny"]["version"] == "1.1.0"
    with pytest.raises(RepoError, match="no role 'arm64'"):
        rotate_key(repo, "arm64", keys)


def test_a_role_listing_a_path_outside_its_delegation_is_not_trusted(
    repo: Path, keys: Keystore, url: str, bundles: Path, tmp_path: Path
) -> None:
    publish(repo, make_bundle(bundles, "1.0.0"), keys)
    publish(repo, make_bundle(bundles, "1.0.0", target="arm64-int8"), keys)
    foreign = bundle_path("arm64-int8", "evil", "9.0.0")
    with Repository.open(repo, keys) as repository:
        forged = TargetFile(4, {"sha256": hashlib.sha256(b"evil").hexdigest()}, foreign)
        for path in (foreign, "channels/beta/arm64-int8.json", "elsewhere/evil.bin"):
            repository.role(TARGET).signed.targets[path] = TargetFile(forged.length, forged.hashes, path)
        repository.mark(TARGET)
        repository.commit()
    client = device(repo, url, tmp_path / "device")
    assert client.target_info(foreign) is None
    assert client.target_info("elsewhere/evil.bin") is None
    assert client.pointer("beta", "arm64-int8")["target"] == "arm64-int8"  # the real one, from arm64-int8's role
    assert client.target_info(bundle_path(TARGET, "tiny", "1.0.0")) is not None


def test_hash_bins_keep_lookups_working_and_small(
    repo: Path, keys: Keystore, url: str, bundles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(repo, make_bundle(bundles, "1.0.0"), keys, hash_bin_threshold=4)
    before_bins = device(repo, url, tmp_path / "before")
    before_bins.refresh()
    versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0"]
    for version in versions[1:]:
        publish(repo, make_bundle(bundles, version), keys, hash_bin_threshold=4)
    role = Repository.open(repo, keys).role(TARGET).signed
    assert role.delegations is not None and role.delegations.succinct_roles is not None
    assert [path for path in role.targets if path.startswith("bundles/")] == []
    assert set(role.targets) == {"channels/beta/desktop-int8.json"}

    client = device(repo, url, tmp_path / "device")
    info = client.target_info(bundle_path(TARGET, "tiny", "1.5.0"))
    assert info is not None and list(info.custom["edgebuild"]["deltas"]) == ["1.4.0"]
    assert len(list((tmp_path / "device").glob(f"{TARGET}.bin-*.json"))) == 1  # only the bin it looked up
    for version in versions:
        assert client.target_info(bundle_path(TARGET, "tiny", version)) is not None
    before_bins.refresh()  # a device that trusted the pre-bin snapshot accepts the new one
    assert before_bins.pointer("beta", TARGET)["models"]["tiny"]["version"] == "1.5.0"


def test_synthetic_catalogue_lookup_downloads_little_metadata(
    repo: Path, keys: Keystore, url: str, bundles: Path, tmp_path: Path
) -> None:
    add_synthetic_targets(repo, keys, TARGET, 2000, SYNTHETIC_COMPATIBILITY)
    publish(repo, make_bundle(bundles, "1.0.0"), keys)
    bins = Repository.open(repo, keys).role(TARGET).signed.delegations
    assert bins is not None and bins.succinct_roles is not None
    assert bins.succinct_roles.bit_length == repo_state.bin_bit_length(2002)
    bootstrap = (repo / "metadata" / "1.root.json").read_bytes()
    synthetic = bundle_path(TARGET, "synthetic", "0.1.999")
    used = metadata_bytes_for_lookup(tmp_path / "device", url, bootstrap, "beta", TARGET, synthetic)
    total = sum(path.stat().st_size for path in (repo / "metadata").iterdir() if not path.name[0].isdigit())
    catalogue = sum(path.stat().st_size for path in (repo / "metadata").glob(f"*.{TARGET}.bin-*.json"))
    assert used < 40_000 and catalogue > 10 * used, (used, total, catalogue)
    assert json.loads((tmp_path / "device" / "timestamp.json").read_bytes())["signed"]["_type"] == "timestamp"


def test_tampered_metadata_is_refused_with_a_clear_error(
    repo: Path, keys: Keystore, url: str, bundles: Path, tmp_path: Path
) -> None:
    publish(repo, make_bundle(bundles, "1.0.0"), keys)
    role_file = max((repo / "metadata").glob(f"*.{TARGET}.json"), key=lambda path: int(path.name.split(".")[0]))
    document = json.loads(role_file.read_bytes())
    document["signed"]["targets"][bundle_path(TARGET, "tiny", "1.0.0")]["length"] += 1
    role_file.write_text(json.dumps(document))
    with pytest.raises(OtaError, match=r"looking up .*: metadata not signed by enough trusted keys"):
        device(repo, url, tmp_path / "device").target_info(bundle_path(TARGET, "tiny", "1.0.0"))
