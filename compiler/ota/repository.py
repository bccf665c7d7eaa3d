"""The publisher side of the OTA repository, its operations: static TUF metadata (python-tuf Metadata API), targets.

Layout under REPO (served as is by any static HTTP server):

    metadata/N.root.json, root.json          root (threshold 2), also the device's bootstrap root
    metadata/N.targets.json                  top-level targets: channel indexes, delegations
    metadata/N.<target>.json                 one delegated role per hardware target (bundles, pointers)
    metadata/N.<target>.bin-XX.json          succinct hash bins of a target role with many bundles
    metadata/N.snapshot.json, timestamp.json
    targets/bundles/<target>/<model>/<sha256>.<model>-<version>-<target>.tar
    targets/bundles/<target>/<model>/<sha256>.<model>-<from>-to-<to>-<target>.tar.zst
    targets/channels/<channel>/<sha256>.<target>.json, <sha256>.index.json

Consistent snapshots: every file but timestamp.json (and the root.json copy) is written once under a
versioned or content-addressed name and never changed, and timestamp.json is replaced last, so a
server always serves one complete repository state, even in the middle of a publish. The snapshot
never drops an entry and versions only grow: ngclient rejects a snapshot that forgets a role.
Each operation opens the `repo_state.Repository` under its lock, changes it, and commits once.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, TargetFile, Targets

from compiler.digests import sha256_file
from compiler.errors import did_you_mean
from compiler.ota.delta import make_delta
from compiler.ota.keystore import Keystore
from compiler.ota.repo_state import (
    _TOP_LEVEL,
    CHANNELS,
    COMPATIBILITY,
    HASH_BIN_THRESHOLD,
    Expiry,
    RepoError,
    Repository,
    _edgebuild,
    index_path,
    now,
    pointer_path,
)
from compiler.packaging import manifest as manifest_module
from compiler.packaging.tarball import read_tar

_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass(frozen=True)
class PublishResult:
    """What a publish or promote did: target paths, and the metadata files it wrote (empty: no-op)."""

    bundle: str
    delta: str | None
    channel: str | None
    written: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.written)


def bundle_path(target: str, model: str, version: str) -> str:
    """The TUF target path of a bundle."""
    return f"bundles/{target}/{model}/{model}-{version}-{target}.tar"


def delta_path(target: str, model: str, old: str, new: str) -> str:
    """The TUF target path of the patch from version `old` to `new`."""
    return f"bundles/{target}/{model}/{model}-{old}-to-{new}-{target}.tar.zst"


def check_channel(channel: str) -> str:
    """`channel` when it is a known channel, else RepoError."""
    if channel not in CHANNELS:
        raise RepoError(f"unknown channel '{channel}': {did_you_mean(channel, CHANNELS)}")
    return channel


def _number_text(value: Any) -> Any:
    """Floats as their shortest exact text: TUF signs canonical JSON, which has no floats."""
    return repr(float(value)) if isinstance(value, float) else value


# Operations: each opens the repository under its lock, changes it, and commits once.


def read_bundle_manifest(bundle: Path) -> dict[str, Any]:
    """The validated manifest of a bundle tar (RepoError or ManifestError when it is not one)."""
    files, problems = read_tar(bundle)
    if problems:
        raise RepoError(f"{bundle}: not a usable bundle: {problems[0]}")
    if "manifest.json" not in files:
        raise RepoError(f"{bundle}: no manifest.json inside (not an edgebuild bundle)")
    return manifest_module.loads(files["manifest.json"])


def init_repository(repo: Path, keys: Keystore, expiry: Expiry | None = None) -> tuple[str, ...]:
    """Create an empty repository at `repo` and its keys (reused when the keystore has them).

    Guarantees: root version 1 with two root keys (threshold 2) and one key per top-level role,
    consistent snapshots on; metadata files written, timestamp.json last. Refuses an existing one.
    """
    if (repo / "metadata" / "root.json").exists():
        raise RepoError(f"{repo} already holds a repository; publish to it, or delete it to start over")
    keys.create(repo)
    with Repository(repo, keys, expiry) as repository:
        root = repository.root.signed
        root.version, root.consistent_snapshot = 1, True
        for name in ("root-1", "root-2"):
            root.add_key(keys.ensure(name).public_key, "root")
        root.roles["root"].threshold = 2
        for role in ("targets", "snapshot", "timestamp"):
            root.add_key(keys.ensure(role).public_key, role)
        repository.write_root()
        repository._roles["targets"] = Metadata(Targets(expires=now()))
        repository._dirty.add("targets")
        return ("1.root.json", "root.json", *repository.commit())


def ensure_repository(repo: Path, keys_dir: Path | None = None) -> None:
    """Create the repository at `repo` (development keys beside it) unless it exists."""
    from compiler.progress import step

    if not (repo / "metadata" / "root.json").exists():
        keys = Keystore.for_repository(repo, keys_dir)
        init_repository(repo, keys)
        step(f"created repository {repo} (keys in {keys.directory}: development keys, keep them off the server)")
        step(f"devices bootstrap from {repo / 'metadata' / '1.root.json'}")


def publish(
    repo: Path,
    bundle: Path,
    keys: Keystore,
    channel: str | None = "beta",
    *,
    expiry: Expiry | None = None,
    hash_bin_threshold: int = HASH_BIN_THRESHOLD,
) -> PublishResult:
    """Add `bundle` (and a delta from the latest published version) and point `channel` at it.

    Needs: a bundle whose release_counter is greater than every published one of the same model
    and target. Guarantees: re-publishing identical bytes writes nothing; the same version with
    other bytes, or a counter that does not grow, is refused before anything is written.
    """
    if channel is not None:
        check_channel(channel)
    with Repository.open(repo, keys, expiry, threshold=hash_bin_threshold) as repository:
        path, bundle_file, delta = _stage(repository, bundle)
        if channel is not None:
            repository.point(channel, bundle_file)
        return PublishResult(path, delta, channel, repository.commit())


def publish_release(
    repo: Path, bundles: list[Path], keys: Keystore, channel: str, rollout: float = 1.0, *, expiry: Expiry | None = None
) -> tuple[list[PublishResult], tuple[str, ...]]:
    """Publish every bundle of a release and point `channel` at all of them in one metadata commit:
    a device sees the whole release or none of it. Bundles already published with the same bytes
    are reused; any refusal (other bytes, a counter that does not grow) stops before a commit."""
    check_channel(channel)
    with Repository.open(repo, keys, expiry) as repository:
        staged = [_stage(repository, bundle) for bundle in bundles]
        for _, bundle_file, _ in staged:
            repository.point(channel, bundle_file, rollout)
        written = repository.commit()
    return [PublishResult(path, delta, channel, written) for path, _, delta in staged], written


def _stage(repository: Repository, bundle: Path) -> tuple[str, TargetFile, str | None]:
    """Add `bundle` (and its delta) to the open repository, or find it there with the same bytes:
    its target path, its TargetFile and the delta's path (None when none was made)."""
    manifest = read_bundle_manifest(bundle)
    model, version, target = manifest["model"]["name"], manifest["model"]["version"], manifest["target"]["name"]
    for what, value in (("model name", model), ("model version", version)):
        if not _PART.fullmatch(value):
            raise RepoError(f"{bundle}: {what} '{value}' cannot be part of a URL: use letters, digits and ._+-")
    path = bundle_path(target, model, version)
    repository.ensure_target_role(target)
    existing = repository.role(repository.holder(target, path)).signed.targets.get(path)
    if existing is None:
        bundle_file, delta = _add_bundle(repository, bundle, manifest, path)
        return path, bundle_file, delta
    if existing.hashes["sha256"] != sha256_file(bundle):
        raise RepoError(
            f"{path} is already published with other bytes (sha256 {existing.hashes['sha256']}): "
            "bump the model version to publish a change"
        )
    return path, existing, None


def _add_bundle(
    repository: Repository, bundle: Path, manifest: dict[str, Any], path: str
) -> tuple[TargetFile, str | None]:
    model, version, target = manifest["model"]["name"], manifest["model"]["version"], manifest["target"]["name"]
    counter, fidelity = manifest["release_counter"], manifest["metrics"]["fidelity"]
    latest = repository.latest(target, model)
    previous = _edgebuild(latest) if latest is not None else None
    if previous is not None and counter <= previous["release_counter"]:
        raise RepoError(
            f"{bundle.name}: release_counter {counter} is not greater than {previous['release_counter']} of "
            f"{model} {previous['version']} already published for {target}: bump the model version"
        )
    info: dict[str, Any] = {
        "model": model,
        "version": version,
        "release_counter": counter,
        "target": {field: manifest["target"][field] for field in ("name", "triple", "cpu", *COMPATIBILITY)},
        "memory_bytes": manifest["memory"]["total_bytes"],
        "size_bytes": manifest["metrics"]["size_bytes"],
        "latency_ratio": _number_text(manifest["metrics"]["latency"].get("ratio_vs_ort_fp32")),
        "fidelity": {"metric": fidelity["metric"], "value": _number_text(fidelity["value"])},
        "deltas": {},
    }
    delta = None
    # A synthetic catalogue lists bundles whose bytes were never stored: no delta base then.
    if latest is not None and previous is not None and repository.stored_path(latest).is_file():
        delta = delta_path(target, model, previous["version"], version)
        repository.targets_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".delta-", dir=repository.targets_dir) as scratch:
            patch = Path(scratch) / "patch"
            make_delta(repository.stored_path(latest), bundle, patch)
            about = {"delta_from": previous["version"], "delta_to": version, "result": path}
            custom = {"edgebuild": {**about, "base_sha256": latest.hashes["sha256"]}}
            repository.add_bundle_target(target, repository.store(delta, patch, custom))
        info["deltas"][previous["version"]] = delta
    bundle_file = repository.store(path, bundle, {"edgebuild": info})
    repository.add_bundle_target(target, bundle_file)
    repository.rebin_if_needed(target)
    return bundle_file, delta


def promote(
    repo: Path, bundle: str | Path, keys: Keystore, channel: str = "stable", *, expiry: Expiry | None = None
) -> PublishResult:
    """Point `channel` at an already published bundle, named by file name or by a local copy of it."""
    return promote_many(repo, [bundle], keys, channel, expiry=expiry)[0]


def promote_many(
    repo: Path,
    bundles: list[str | Path],
    keys: Keystore,
    channel: str = "stable",
    rollout: float = 1.0,
    *,
    expiry: Expiry | None = None,
) -> list[PublishResult]:
    """Point `channel` at already published bundles (file names or local copies), for a `rollout`
    fraction of devices, in one metadata commit."""
    check_channel(channel)
    with Repository.open(repo, keys, expiry) as repository:
        found = []
        for bundle in bundles:
            local = Path(bundle)
            target_file = repository.find_bundle(local.name)
            if target_file is None:
                raise RepoError(f"{local.name} is not published in {repo}: publish it first (`edgebuild publish`)")
            if local.is_file() and sha256_file(local) != target_file.hashes["sha256"]:
                raise RepoError(f"{local} differs from the published {target_file.path}: promote the published bytes")
            found.append(target_file)
        for target_file in found:
            repository.point(channel, target_file, rollout)
        written = repository.commit()
    return [PublishResult(target_file.path, None, channel, written) for target_file in found]


def set_rollout(
    repo: Path,
    channel: str,
    rollout: float,
    keys: Keystore,
    models: tuple[str, ...] = (),
    targets: tuple[str, ...] = (),
) -> tuple[list[str], tuple[str, ...]]:
    """Raise `channel`'s rollout fraction for what it serves (only `models` / `targets` when given),
    in one commit; returns the bundles affected and the metadata written."""
    check_channel(channel)
    with Repository.open(repo, keys) as repository:
        chosen = _served(repository, channel, models, targets, "publish it there first")
        bundles = [repository.set_rollout(channel, target, model, rollout) for target, model in chosen]
        return bundles, repository.commit()


def _served(
    repository: Repository, channel: str, models: tuple[str, ...], targets: tuple[str, ...], advice: str
) -> list[tuple[str, str]]:
    """(target, model) pairs `channel` serves, only `models` / `targets` when given; none is an error."""
    index = repository.document("targets", index_path(channel)) or {}
    served = [(t, m) for t, slot in sorted(index.get("targets", {}).items()) for m in sorted(slot["models"])]
    chosen = [(t, m) for t, m in served if (not models or m in models) and (not targets or t in targets)]
    if not chosen:
        raise RepoError(f"channel {channel} serves nothing that matches; {advice}")
    return chosen


def rollback(
    repo: Path,
    channel: str,
    keys: Keystore,
    private_key: Path,
    workdir: Path,
    models: tuple[str, ...] = (),
    targets: tuple[str, ...] = (),
) -> list[PublishResult]:
    """Point `channel` back to the release before the one it serves, for each (target, model) it
    serves (only `models` / `targets` when given), in one commit. The earlier bundle is re-issued
    under a counter above every published one (`compiler/packaging/rollback.py`), so devices move
    forward in counter to the earlier model; the rollout is 100% at once."""
    from compiler.packaging.rollback import rebundle

    check_channel(channel)
    results = []
    with Repository.open(repo, keys) as repository:
        chosen = _served(repository, channel, models, targets, "nothing to roll back")
        for target, model in chosen:
            pointer = repository.document(target, pointer_path(channel, target)) or {}
            current = pointer["models"][model]
            earlier = [
                f
                for _, f in repository.bundle_targets(target)
                if _edgebuild(f).get("model") == model
                and _edgebuild(f).get("release_counter", current["release_counter"]) < current["release_counter"]
            ]
            if not earlier:
                raise RepoError(f"{model} on {target}: nothing was published before {current['version']}")
            previous = max(earlier, key=lambda f: _edgebuild(f)["release_counter"])
            latest = repository.latest(target, model) or previous  # never None: `earlier` is published
            counter = _edgebuild(latest)["release_counter"] + 1
            reissued = rebundle(repository.stored_path(previous), counter, private_key, workdir)
            path, bundle_file, delta = _stage(repository, reissued)
            repository.point(channel, bundle_file)
            results.append(PublishResult(path, delta, channel, ()))
        written = repository.commit()
    return [PublishResult(r.bundle, r.delta, channel, written) for r in results]


def refresh(repo: Path, keys: Keystore, days: int = 1, *, expiry: Expiry | None = None) -> tuple[str, ...]:
    """Re-sign timestamp with a new expiry, and every role (snapshot, root, ...) expiring within `days`."""
    with Repository.open(repo, keys, expiry) as repository:
        soon = now() + timedelta(days=days)
        written: tuple[str, ...] = ()
        if repository.root.signed.expires <= soon:
            repository.root.signed.version += 1
            repository.write_root()
            written = (f"{repository.root.signed.version}.root.json", "root.json")
        for name in repository.all_roles():
            if repository.role(name).signed.expires <= soon:
                repository.mark(name)
        return written + repository.commit(
            force_snapshot=repository.snapshot.signed.expires <= soon, force_timestamp=True
        )


def rotate_key(repo: Path, role: str, keys: Keystore, *, expiry: Expiry | None = None) -> tuple[str, ...]:
    """Replace the key(s) of `role` (root, targets, snapshot, timestamp or a hardware target).

    Root: both root keys are replaced and the new root is signed by the old keys and the new
    ones, so a device holding only the old root verifies the chain. Other roles: the delegating
    metadata (root, or top-level targets) names the new key, and the role is re-signed with it.
    """
    with Repository.open(repo, keys, expiry) as repository:
        root = repository.root.signed
        if role in _TOP_LEVEL:
            names = ["root-1", "root-2"] if role == "root" else [role]
            old_signers = [keys.signer(name) for name in names] if role == "root" else []
            for name in names:
                old, new = keys.replace(name)
                root.revoke_key(old.public_key.keyid, role)
                root.add_key(new.public_key, role)
            root.version += 1
            repository.write_root(extra_signers=tuple(old_signers))
            if role == "targets":
                repository.mark("targets")
            written = (f"{root.version}.root.json", "root.json")
            return written if role == "root" else written + repository.commit(force_snapshot=True)
        if role not in repository.hardware_targets():
            valid = [*_TOP_LEVEL, *repository.hardware_targets()]
            raise RepoError(f"no role '{role}' in {repo}: {did_you_mean(role, valid)}")
        old, new = keys.replace(f"target-{role}")
        delegations = repository.role("targets").signed.delegations
        assert delegations is not None and delegations.roles is not None  # role listed above
        del delegations.keys[old.public_key.keyid]
        delegations.keys[new.public_key.keyid] = new.public_key
        delegations.roles[role].keyids = [new.public_key.keyid]
        repository.mark("targets")
        repository.mark(role)
        bins = repository.role(role).signed.delegations
        if bins is not None and bins.succinct_roles is not None:
            bins.keys = {new.public_key.keyid: new.public_key}
            bins.succinct_roles.keyids = [new.public_key.keyid]
            for name in bins.succinct_roles.get_roles():
                repository.mark(name)
        return repository.commit()


def add_synthetic_targets(
    repo: Path,
    keys: Keystore,
    target: str,
    count: int,
    compatibility: dict[str, Any],
    *,
    model: str = "synthetic",
    hash_bin_threshold: int = HASH_BIN_THRESHOLD,
) -> tuple[str, ...]:
    """List `count` fake bundles of `model` on `target` (no bytes stored): a catalogue for benchmarks.

    The entries carry the same `custom` fields as real bundles (`compatibility` is a manifest's
    target section), so metadata sizes are realistic.
    """
    compatibility = {**compatibility, "name": target}
    with Repository.open(repo, keys, threshold=hash_bin_threshold) as repository:
        repository.ensure_target_role(target)
        for number in range(count):
            version = f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"
            path = bundle_path(target, model, version)
            info = {"model": model, "version": version, "release_counter": manifest_module.release_counter(version)}
            info.update(target=compatibility, memory_bytes=1 << 22, size_bytes=1 << 20, deltas={})
            info["fidelity"] = {"metric": "cosine", "value": "0.99"}
            digest = hashlib.sha256(path.encode()).hexdigest()
            repository.add_bundle_target(
                target, TargetFile(1 << 20, {"sha256": digest}, path, {"custom": {"edgebuild": info}})
            )
        repository.rebin_if_needed(target)
        return repository.commit()
