"""`edgebuild release` / `make release`: build the release's model x target matrix, gate it, sign it
with a release key, publish it to the OTA repository's first channel in one commit, and report.

Each (model, target) pair is built by its own `edgebuild build` process (`-j N` at a time; the
stage cache is safe to share: per-key file locks, atomic renames), with its output in
`<report dir>/logs/`. A pair already built from the same inputs is "up to date" and costs a
fraction of a second, so re-running a half-finished release resumes it. A pair that fails its
build or a release gate does not stop the others, but then nothing is published: the summary
table names every failed pair and why. Signing uses the release key from `--key` or
EDGEBUILD_SIGNING_KEY; the development key is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from compiler import workspace
from compiler.errors import UserError
from compiler.progress import step
from compiler.release.config import Release, ReleaseModel

BUILD_TIMEOUT_S = 3 * 3600


def default_report_dir(name: str, artifacts: Path | None = None) -> Path:
    """Where a release's report, logs and release.json go (the workspace's artifacts/ by default)."""
    return (artifacts or workspace.current().artifacts) / "releases" / name


class ReleaseError(UserError):
    """The release failed: a pair failed, or it could not be signed or published."""


@dataclass
class PairResult:
    model: str
    target: str
    status: str  # "built" | "up to date" | "build failed" | "gate failed"
    reasons: list[str] = field(default_factory=list)
    bundle: str | None = None
    size_bytes: int | None = None
    size_ratio: float | None = None
    latency_ratio: float | None = None
    fidelity: float | None = None
    fidelity_summary: str = ""
    gates: dict[str, str] = field(default_factory=dict)  # gate -> "pass" | "fail" | "n/a"
    delta: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("built", "up to date")


def release_key(key: Path | None) -> Path:
    """The release signing key: --key, then EDGEBUILD_SIGNING_KEY; never the development key."""
    from compiler.packaging.signing import DEV_PRIVATE, KEY_ENV, default_key_dir, public_key_pem

    chosen = key or (Path(os.environ[KEY_ENV]) if os.environ.get(KEY_ENV) else None)
    if chosen is None:
        raise ReleaseError(
            f"a release is signed with a release key: pass --key PATH or set {KEY_ENV} "
            "(the development key that `edgebuild build` uses is refused for releases)"
        )
    if not chosen.is_file():
        raise ReleaseError(f"release key {chosen} does not exist")
    development = default_key_dir() / DEV_PRIVATE
    if development.is_file() and public_key_pem(chosen) == public_key_pem(development):
        raise ReleaseError(
            f"REFUSED: {chosen} is the development key ({development}); sign releases with a release key"
        )
    return chosen


def run_release(
    release: Release,
    key: Path | None,
    repo: Path,
    report_dir: Path,
    artifacts: Path,
    jobs: int = 2,
    publish: bool = True,
    only_target: str | None = None,
) -> list[PairResult]:
    """Build, gate, publish (all or nothing) and report; raises ReleaseError when the release fails.
    `only_target` builds one column of the matrix (a CI matrix job) and never publishes."""
    signing_key = release_key(key)
    logs = report_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pairs = release.pairs()
    if only_target is not None:
        pairs = [(model, target) for model, target in pairs if target == only_target]
        if not pairs:
            raise ReleaseError(f"--only-target {only_target}: the release builds no model for that target")
        publish = False
    step(f"release {release.name}: {len(pairs)} builds ({len(release.models)} models), {jobs} at a time")
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_build_pair, model, target, signing_key, artifacts, logs) for model, target in pairs]
        results = [future.result() for future in futures]
    for result, (model, _) in zip(results, pairs, strict=True):  # the recipe budget held if it built
        if result.ok:
            _apply_gates(result, model)
    failed = [r for r in results if not r.ok]
    published: tuple[str, ...] = ()
    if not failed and publish:
        published = _publish(release, results, repo)
    from compiler.release.report import write_report

    channel = release.channels[0]
    paths = write_report(release, results, report_dir, channel=channel, published=bool(published))
    step(f"release report: {paths[0]} (and {', '.join(p.name for p in paths[1:])})")
    if failed:
        raise ReleaseError(
            f"release {release.name} failed: {len(failed)} of {len(results)} pairs "
            f"({', '.join(f'{r.model} -> {r.target}' for r in failed)}); nothing was published (see the table above)"
        )
    return results


def _build_pair(model: ReleaseModel, target: str, key: Path, artifacts: Path, logs: Path) -> PairResult:
    """One `edgebuild build` in its own process; the record it leaves is read back."""
    log = logs / f"{model.name}--{target}.log"
    root = workspace.current().root
    command = [sys.executable, "-m", "compiler.cli.main", "-C", str(root), "build", "-m", model.name, "-t", target]
    command += ["--artifacts", str(artifacts), "--key", str(key)]
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "OLIVE_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"}
    step(f"release: building {model.name} -> {target}")
    with log.open("w") as handle:
        try:
            done = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=root, timeout=BUILD_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            return PairResult(model.name, target, "build failed", [f"timed out after {BUILD_TIMEOUT_S} s ({log})"])
    text = log.read_text(errors="replace")
    if done.returncode != 0:
        errors = [line for line in text.splitlines() if line.startswith("edgebuild: error:")]
        last = errors[-1].removeprefix("edgebuild: error:").strip() if errors else text.strip().splitlines()[-1:]
        return PairResult(model.name, target, "build failed", [f"{last} (log: {log})"])
    build_dir = artifacts / model.name / target
    record = json.loads((build_dir / "report.json").read_text())
    metrics = record["metrics"]
    bundle = build_dir / f"{model.name}-{record['model']['version']}-{target}.tar"
    step(f"release: {model.name} -> {target}: {metrics['fidelity']['summary']}")
    return PairResult(
        model.name,
        target,
        "up to date" if ": up to date" in text else "built",
        bundle=str(bundle),
        size_bytes=metrics["size_bytes"],
        size_ratio=metrics["size_ratio"],
        latency_ratio=metrics["latency"].get("ratio_vs_ort_fp32"),
        fidelity=metrics["fidelity"]["value"],
        fidelity_summary=metrics["fidelity"]["summary"],
    )


def _apply_gates(result: PairResult, model: ReleaseModel) -> None:
    """The release's gates on top of the recipe's own budget (which the build already enforced).
    A latency gate on a target whose latency is not measured here (phones, emulated) is "n/a"."""
    checks = {
        "max_size_ratio": (result.size_ratio, lambda value, limit: value <= limit),
        "max_latency_ratio": (result.latency_ratio, lambda value, limit: value <= limit),
        "min_fidelity": (result.fidelity, lambda value, limit: value >= limit),
    }
    result.gates["budget"] = "pass"
    for gate, limit in model.gates.items():
        value, holds = checks[gate]
        if value is None:
            result.gates[gate] = "n/a"
        elif holds(value, limit):
            result.gates[gate] = "pass"
        else:
            result.gates[gate] = "fail"
            result.reasons.append(f"{gate} {limit:g}: measured {value:.4g}")
    if result.reasons:
        result.status = "gate failed"


def _publish(release: Release, results: list[PairResult], repo: Path) -> tuple[str, ...]:
    """Every bundle into the repository and the first channel pointed at all of them, one commit."""
    from compiler.ota.keystore import Keystore
    from compiler.ota.repository import ensure_repository, publish_release

    channel = release.channels[0]
    ensure_repository(repo)
    bundles = [Path(r.bundle) for r in results if r.bundle]
    rollout = release.rollout[0]
    outcomes, written = publish_release(repo, bundles, Keystore.for_repository(repo, None), channel, rollout)
    for result, outcome in zip(results, outcomes, strict=True):
        result.delta = outcome.delta
    if written:
        step(
            f"published {len(bundles)} bundles on channel {channel} to {rollout:.0%} of devices in one commit "
            f"({', '.join(written)}); raise it with `edgebuild rollout --channel {channel} --fraction F`"
        )
    else:
        step(f"every bundle was already published on channel {channel}: nothing to do")
    return written or ("unchanged",)


def promote_release(
    release: Release, report_dir: Path, repo: Path, channel: str | None = None, keys_dir: Path | None = None
) -> list[str]:
    """Move a published release to the next channel (or `channel`), at the first rollout fraction,
    in one commit; only when its report says every pair passed every gate and it was published."""
    from compiler.ota.keystore import Keystore
    from compiler.ota.repository import promote_many

    record_path = report_dir / "release.json"
    if not record_path.is_file():
        raise ReleaseError(f"no release report at {record_path}: run `edgebuild release` first")
    record = json.loads(record_path.read_text())
    failed = [f"{p['model']} -> {p['target']}" for p in record["pairs"] if p["status"] not in ("built", "up to date")]
    if record.get("release") != release.name or failed or not record.get("published"):
        why = f"pairs failed: {', '.join(failed)}" if failed else "it was not published"
        if record.get("release") != release.name:
            why = f"the report is for release {record.get('release')!r}"
        raise ReleaseError(f"release {release.name} cannot be promoted: {why} ({record_path})")
    source = record["channel"]
    order = list(release.channels)
    target_channel = channel or (order[order.index(source) + 1] if order.index(source) + 1 < len(order) else None)
    if target_channel is None:
        raise ReleaseError(f"release {release.name} is on {source}, the last channel of {release.path.name}")
    names = [Path(p["bundle"]).name for p in record["pairs"]]
    results = promote_many(repo, names, Keystore.for_repository(repo, keys_dir), target_channel, release.rollout[0])
    record["channel"] = target_channel
    record_path.write_text(json.dumps(record, indent=1))
    written = results[0].written if results else ()
    step(
        f"release {release.name}: {len(names)} bundles promoted {source} -> {target_channel} at "
        f"{release.rollout[0]:.0%} of devices ({', '.join(written) or 'already there'})"
    )
    return names
