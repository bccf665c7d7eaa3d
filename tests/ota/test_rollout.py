"""Staged rollout: the channel pointer carries a fraction, each device decides by hashing its id
with the release, so the share of devices matches the fraction, a device's decision is stable,
and raising the fraction only adds devices. Checked on 10,000 simulated ids, then with real
devices updating over HTTP on 127.0.0.1 from a repository published by `edgebuild release`'s
one-commit path."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli.main import main
from compiler.ota import server as server_module
from compiler.ota.device import DeviceClient, rollout_bucket
from compiler.ota.device_profile import load_profile
from compiler.ota.keystore import Keystore
from compiler.ota.repo_state import RepoError
from compiler.ota.repository import bundle_path, init_repository, publish_release, set_rollout
from compiler.ota.slots import InstalledBundle
from compiler.packaging.signing import DEV_PRIVATE, DEV_PUBLIC
from tests.ota.test_attacks import PROFILE_TEMPLATE

BUNDLE = bundle_path("desktop-int8", "digits-cnn", "1.0.0")  # what the channel pointer names


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_share_of_ten_thousand_devices_matches_the_fraction(fraction: float) -> None:
    ids = [f"device-{i:05d}" for i in range(10_000)]
    inside = {i for i in ids if rollout_bucket(i, BUNDLE) < fraction}
    assert abs(len(inside) / len(ids) - fraction) < 0.02
    assert inside == {i for i in ids if rollout_bucket(i, BUNDLE) < fraction}  # stable: same ids every time
    wider = {i for i in ids if rollout_bucket(i, BUNDLE) < min(1.0, fraction + 0.05)}
    assert inside <= wider  # raising the fraction never drops a device
    other = {i for i in ids if rollout_bucket(i, BUNDLE.replace("1.0.0", "1.0.1")) < fraction}
    assert len(inside & other) < len(inside)  # each release draws its own first cohort


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keystore, Path]:
    base = tmp_path_factory.mktemp("rollout")
    runner = CliRunner()
    assert runner.invoke(main, ["keys", "init", "--dir", str(base / "signing")]).exit_code == 0
    built = runner.invoke(
        main,
        ["build", "-t", "desktop-int8", "-m", "digits-cnn", "--artifacts", str(base / "a"), "--key"]
        + [str(base / "signing" / DEV_PRIVATE)],
    )
    assert built.exit_code == 0, built.output
    repo, keys = base / "repo", Keystore.for_repository(base / "repo", base / "repo-keys")
    init_repository(repo, keys)
    bundle = next((base / "a" / "digits-cnn" / "desktop-int8").glob("*.tar"))
    publish_release(repo, [bundle], keys, "beta", rollout=0.3)
    return repo, keys, base


@pytest.mark.slow
def test_devices_over_http_follow_the_fraction_and_never_flip(
    repository: tuple[Path, Keystore, Path], tmp_path: Path
) -> None:
    repo, keys, base = repository
    ids = [f"phone-{i:02d}" for i in range(24)]
    expected_in = {i for i in ids if rollout_bucket(i, BUNDLE) < 0.3}
    assert 0 < len(expected_in) < len(ids)

    def cycle(url: str) -> dict[str, str]:
        statuses = {}
        for device_id in ids:
            profile_path = tmp_path / f"{device_id}.toml"
            profile_path.write_text(PROFILE_TEMPLATE.format(id=device_id, channel="beta"))
            client = DeviceClient(
                load_profile(profile_path),
                url,
                (repo / "metadata" / "1.root.json").read_bytes(),
                tmp_path / device_id,
                base / "signing" / DEV_PUBLIC,
            )
            statuses[device_id] = client.update().status
        return statuses

    with server_module.serving(repo) as url:
        first = cycle(url)
        assert {i for i, s in first.items() if s == "installed"} == expected_in
        assert {s for i, s in first.items() if i not in expected_in} == {"not-in-rollout"}
        second = cycle(url)  # the same fraction again: nobody flips
        assert {i for i, s in second.items() if s == "up-to-date"} == expected_in
        assert {s for i, s in second.items() if i not in expected_in} == {"not-in-rollout"}

        command = ["rollout", "--repo", str(repo), "--keys", str(keys.directory), "--channel", "beta"]
        result = CliRunner().invoke(main, [*command, "--fraction", "1"])
        assert result.exit_code == 0 and "now reach 100% of devices" in result.output, result.output
        third = cycle(url)
        assert {i for i, s in third.items() if s == "installed"} == set(ids) - expected_in
        assert {s for i, s in third.items() if i in expected_in} == {"up-to-date"}


@pytest.mark.slow
def test_a_rollout_only_grows(repository: tuple[Path, Keystore, Path]) -> None:
    repo, keys, _ = repository
    set_rollout(repo, "beta", 1.0, keys)
    with pytest.raises(RepoError, match="a rollout only grows"):
        set_rollout(repo, "beta", 0.5, keys)
    with pytest.raises(RepoError, match="serves nothing that matches"):
        set_rollout(repo, "beta", 1.0, keys, models=("minilm",))


@pytest.mark.slow
def test_rollback_moves_devices_forward_in_counter_to_the_earlier_model(
    repository: tuple[Path, Keystore, Path], tmp_path: Path
) -> None:
    import json
    import tarfile

    from tests.toml_variants import variant

    repo, keys, base = repository
    recipe = variant(tmp_path, "digits-cnn", {'version = "1.0.0"': 'version = "1.0.1"'}, kind="model")
    key = base / "signing" / DEV_PRIVATE
    built = CliRunner().invoke(
        main, ["build", "-t", "desktop-int8", "-m", str(recipe), "--artifacts", str(tmp_path / "a"), "--key", str(key)]
    )
    assert built.exit_code == 0, built.output
    publish_release(repo, [next((tmp_path / "a" / "digits-cnn" / "desktop-int8").glob("*.tar"))], keys, "beta")
    profile = tmp_path / "device.toml"
    profile.write_text(PROFILE_TEMPLATE.format(id="rollback-device", channel="beta"))

    def update(url: str) -> InstalledBundle:
        root = (repo / "metadata" / "1.root.json").read_bytes()
        client = DeviceClient(load_profile(profile), url, root, tmp_path / "device", base / "signing" / DEV_PUBLIC)
        outcome = client.update()
        assert outcome.status == "installed" and outcome.installed is not None, client.log
        return outcome.installed

    with server_module.serving(repo) as url:
        assert update(url).name == "digits-cnn-1.0.1-desktop-int8"
        command = ["rollback", "--repo", str(repo), "--keys", str(keys.directory), "--channel", "beta"]
        result = CliRunner().invoke(main, [*command, "--key", str(key)])
        assert result.exit_code == 0, result.output
        rolled = update(url)
        assert rolled.name == "digits-cnn-1.0.0-rollback.1000002-desktop-int8" and rolled.release_counter == 1000002

    def manifest(bundle: Path) -> dict:
        with tarfile.open(bundle) as tar:
            return json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]

    first = manifest(next((base / "a" / "digits-cnn" / "desktop-int8").glob("*.tar")))
    artifact = {f["name"]: f["sha256"] for f in first["files"] if f["role"] == "artifact"}
    assert {f["name"]: f["sha256"] for f in rolled.manifest["files"] if f["role"] == "artifact"} == artifact
    assert rolled.manifest["provenance"]["rollback_of"]["version"] == "1.0.0"
    refused = CliRunner().invoke(main, [*command, "--key", str(tmp_path / "missing.pem")])
    assert refused.exit_code != 0 and "does not exist" in refused.output
