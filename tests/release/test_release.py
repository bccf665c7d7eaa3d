"""The release pipeline with real builds (digits-cnn, each pair in its own `edgebuild build`
process), a real release key, a real TUF repository: all pairs pass -> one commit on the first
channel and a report; a second run does no work; a pair over a gate -> the release fails with a
table naming it and nothing is published; the development key is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler.errors import ConfigError
from compiler.ota.keystore import Keystore
from compiler.ota.repo_state import Repository, index_path
from compiler.packaging.signing import init_keys, resolve_key
from compiler.release.config import load_release
from compiler.release.pipeline import ReleaseError, release_key, run_release

RELEASE = """
name = "test-1"
channels = ["beta", "stable"]
rollout = [0.1, 1.0]

[[models]]
name = "digits-cnn"
version = "1.0.0"
targets = ["desktop-int8", "desktop-fp16"]
gates = {{ min_fidelity = 99.0, max_size_ratio = {max_size} }}
"""


def _release(tmp_path: Path, max_size: float) -> Path:
    path = tmp_path / f"release-{max_size}.toml"
    path.write_text(RELEASE.format(max_size=max_size))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("release")
    private, _ = init_keys(root / "release-keys")
    return {"root": root, "key": private, "artifacts": root / "artifacts", "repo": root / "ota"}


@pytest.mark.slow
def test_a_passing_release_is_published_in_one_commit_and_a_rerun_does_no_work(workspace: dict[str, Path]) -> None:
    release = load_release(_release(workspace["root"], 1.2))
    report = workspace["root"] / "report"
    results = run_release(release, workspace["key"], workspace["repo"], report, workspace["artifacts"], jobs=2)
    assert [r.status for r in results] == ["built", "built"] and all(r.gates["min_fidelity"] == "pass" for r in results)
    with Repository.open(workspace["repo"], Keystore.for_repository(workspace["repo"], None)) as repository:
        index = repository.document("targets", index_path("beta"))
    assert index is not None and set(index["targets"]) == {"desktop-int8", "desktop-fp16"}
    for name in ("release-report.md", "release-report.html", "release-size.png", "release-fidelity.png"):
        assert (report / name).is_file() and (report / name).stat().st_size > 200
    markdown = (report / "release-report.md").read_text()
    assert "Published on channel **beta**" in markdown and "| digits-cnn | desktop-int8 | built |" in markdown

    again = run_release(release, workspace["key"], workspace["repo"], report, workspace["artifacts"], jobs=2)
    assert [r.status for r in again] == ["up to date", "up to date"]
    assert json.loads((report / "release.json").read_text())["published"]


@pytest.mark.slow
def test_a_pair_over_a_gate_fails_the_release_and_publishes_nothing(workspace: dict[str, Path], tmp_path: Path) -> None:
    release = load_release(_release(tmp_path, 0.3))  # desktop-fp16 is ~51% of FP32
    repo = tmp_path / "ota"
    with pytest.raises(ReleaseError, match=r"1 of 2 pairs \(digits-cnn -> desktop-fp16\); nothing was published"):
        run_release(release, workspace["key"], repo, tmp_path / "report", workspace["artifacts"], jobs=2)
    assert not (repo / "metadata").exists()
    rows = json.loads((tmp_path / "report" / "release.json").read_text())["pairs"]
    failed = {r["target"]: r for r in rows if r["status"] == "gate failed"}
    assert list(failed) == ["desktop-fp16"] and failed["desktop-fp16"]["reasons"][0].startswith("max_size_ratio 0.3")
    assert "**FAILED**" in (tmp_path / "report" / "release-report.md").read_text()


def test_the_development_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    development, is_development = resolve_key(None)
    assert is_development
    with pytest.raises(ReleaseError, match="REFUSED: .* is the development key"):
        release_key(development)
    monkeypatch.delenv("EDGEBUILD_SIGNING_KEY", raising=False)
    with pytest.raises(ReleaseError, match="pass --key PATH or set EDGEBUILD_SIGNING_KEY"):
        release_key(None)


def test_release_file_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(RELEASE.format(max_size=1.0).replace('version = "1.0.0"', 'version = "2.0.0"'))
    with pytest.raises(ConfigError, match=r"models\[0\]\.version' is '2.0.0' but digits-cnn.toml is at '1.0.0'"):
        load_release(path)
    path.write_text(RELEASE.format(max_size=1.0).replace('"desktop-fp16"', '"desktop-fp61"'))
    with pytest.raises(ConfigError, match="unknown target 'desktop-fp61'; did you mean 'desktop-fp16'"):
        load_release(path)
    path.write_text(RELEASE.format(max_size=1.0).replace("rollout = [0.1, 1.0]", "rollout = [0.5, 0.1]"))
    with pytest.raises(ConfigError, match="'rollout' must rise"):
        load_release(path)
    assert load_release().targets() == sorted(set(load_release().targets()))  # the shipped file loads


def test_ci_workflow_matrix_equals_the_release_targets(tmp_path: Path) -> None:
    import yaml

    from compiler.release.ci import render_workflow

    for release in (load_release(), load_release(_release(tmp_path, 1.0))):
        workflow = yaml.safe_load(render_workflow(release, tmp_path / "wf" / "release.yml"))
        assert workflow["jobs"]["build"]["strategy"]["matrix"]["target"] == release.targets()
        assert workflow["jobs"]["publish"]["needs"] == "build"
        steps = "\n".join(str(step.get("run", "")) for step in workflow["jobs"]["build"]["steps"])
        assert "--only-target ${{ matrix.target }}" in steps  # a matrix job never publishes
    assert yaml.safe_load((tmp_path / "wf" / "release.yml").read_text()) == workflow


@pytest.mark.slow
def test_one_matrix_column_builds_and_never_publishes(workspace: dict[str, Path], tmp_path: Path) -> None:
    release = load_release(_release(tmp_path, 1.2))
    repo = tmp_path / "ota"
    results = run_release(
        release, workspace["key"], repo, tmp_path / "r", workspace["artifacts"], only_target="desktop-int8"
    )
    assert [(r.target, r.ok) for r in results] == [("desktop-int8", True)] and not (repo / "metadata").exists()
    with pytest.raises(ReleaseError, match="builds no model for that target"):
        run_release(release, workspace["key"], repo, tmp_path / "r", workspace["artifacts"], only_target="ios-fp16")


@pytest.mark.slow
def test_promotion_needs_a_clean_published_report_and_moves_every_bundle(
    workspace: dict[str, Path], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from compiler.cli.main import main

    release = load_release(_release(workspace["root"], 1.2))
    report = workspace["root"] / "report"  # published on beta by the first test
    command = ["promote", "--release", str(release.path), "--repo", str(workspace["repo"]), "--report-dir"]
    result = CliRunner().invoke(main, [*command, str(report)])
    assert "2 bundles promoted beta -> stable at 10% of devices" in result.output, result.output
    with Repository.open(workspace["repo"], Keystore.for_repository(workspace["repo"], None)) as repository:
        stable = repository.document("targets", index_path("stable"))
        pointer = repository.document("desktop-int8", "channels/stable/desktop-int8.json")
    assert stable is not None and set(stable["targets"]) == {"desktop-int8", "desktop-fp16"}
    assert pointer is not None and pointer["models"]["digits-cnn"]["rollout"] == 0.1
    _stable_devices_follow_the_promotion(workspace, pointer["models"]["digits-cnn"]["bundle"])
    again = CliRunner().invoke(main, [*command, str(report)])
    assert again.exit_code != 0 and "is on stable, the last channel" in again.output

    failed_report = tmp_path / "report"  # the gate-failed release of another test leaves such a report
    with pytest.raises(ReleaseError, match="nothing was published"):
        run_release(
            load_release(_release(tmp_path, 0.3)),
            workspace["key"],
            tmp_path / "ota",
            failed_report,
            workspace["artifacts"],
        )
    blocked = CliRunner().invoke(main, [*command, str(failed_report)])
    assert blocked.exit_code != 0 and "cannot be promoted: pairs failed: digits-cnn -> desktop-fp16" in blocked.output


@pytest.mark.slow
def test_the_report_compares_with_the_previous_published_release(workspace: dict[str, Path]) -> None:
    from compiler.release.report import write_report

    releases = workspace["root"] / "releases"
    old, new = load_release(_release(workspace["root"], 1.2)), load_release(_release(workspace["root"], 1.1))
    results = run_release(old, workspace["key"], workspace["repo"], releases / "old", workspace["artifacts"])
    renamed = type(new)("test-2", new.path, new.channels, new.rollout, new.models)
    write_report(renamed, results, releases / "test-2", channel="beta", published=True)
    markdown = (releases / "test-2" / "release-report.md").read_text()
    assert "## Compared with release test-1" in markdown and "| digits-cnn | desktop-int8 | 26% -> 26% |" in markdown


def _stable_devices_follow_the_promotion(workspace: dict[str, Path], bundle: str) -> None:
    """Over real HTTP: a stable-channel device inside the 10% installs the promoted bundle, one outside waits."""
    from compiler.ota import server as server_module
    from compiler.ota.device import DeviceClient, rollout_bucket
    from compiler.ota.device_profile import load_profile
    from compiler.packaging.signing import public_key_pem
    from tests.ota.test_attacks import PROFILE_TEMPLATE

    public = workspace["root"] / "release.pub.pem"
    public.write_bytes(public_key_pem(workspace["key"]))
    ids = [f"stable-{i}" for i in range(200)]
    inside = next(i for i in ids if rollout_bucket(i, bundle) < 0.1)
    outside = next(i for i in ids if rollout_bucket(i, bundle) >= 0.1)
    root = (workspace["repo"] / "metadata" / "1.root.json").read_bytes()
    with server_module.serving(workspace["repo"]) as url:
        for device_id, expected in ((inside, "installed"), (outside, "not-in-rollout")):
            profile = workspace["root"] / f"{device_id}.toml"
            profile.write_text(PROFILE_TEMPLATE.format(id=device_id, channel="stable"))
            client = DeviceClient(load_profile(profile), url, root, workspace["root"] / device_id, public)
            assert client.update().status == expected, client.log
