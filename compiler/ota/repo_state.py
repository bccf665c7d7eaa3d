"""The state of an open OTA repository: constants, path helpers and `Repository` (roles, signing, commit).

The layout it reads and writes, and the operations that change it, are described in `repository`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from compiler.errors import UserError
from compiler.ota.keystore import Keystore

CHANNELS = ("beta", "stable")
HASH_BIN_THRESHOLD = 64
POINTER_SCHEMA = "edgebuild.channel/1"
INDEX_SCHEMA = "edgebuild.channel-index/1"
COMPATIBILITY = ("os", "arch", "isa_features", "runtime", "runtime_min_version", "precision")
_TOP_LEVEL = ("root", "targets", "snapshot", "timestamp")
# No dots in target names: "<target>.bin-XX" can then never be another target's role name.
_TARGET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_SERIALIZER = JSONSerializer(compact=True)


class RepoError(UserError):
    """The repository is missing or inconsistent, or a publish/promote/rotate request is refused."""


@dataclass(frozen=True)
class Expiry:
    """How many days each kind of metadata stays valid after it is signed."""

    root: int = 365
    targets: int = 90
    snapshot: int = 7
    timestamp: int = 1


def now() -> datetime:
    """Timezone-aware UTC, whole seconds (TUF metadata has no sub-second expiry)."""
    return datetime.now(UTC).replace(microsecond=0)


def pointer_path(channel: str, target: str) -> str:
    """The TUF target path of a channel pointer (signed by the target's role)."""
    return f"channels/{channel}/{target}.json"


def index_path(channel: str) -> str:
    """The TUF target path of a channel index (signed by top-level targets)."""
    return f"channels/{channel}/index.json"


def delegated_paths(target: str) -> list[str]:
    """Paths a hardware-target role is trusted for. tuf matches part by part: `*` never spans a `/`."""
    return [f"bundles/{target}/*", f"bundles/{target}/*/*", f"channels/*/{target}.json"]


def bin_bit_length(count: int) -> int:
    """Bits of hash prefix for `count` targets in succinct bins.

    A device downloads one snapshot entry per bin (~40 bytes) plus one bin (~count/bins entries of
    ~700 bytes): the sum is smallest at bins = sqrt(count * 700 / 40), about sqrt(16 * count).
    """
    return max(1, min(32, round(math.log2(math.sqrt(16 * max(count, 1))))))


def canonical_json(document: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same document always gives the same bytes and hash."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{dest.name}-", dir=dest.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, dest)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _edgebuild(target_file: TargetFile) -> dict[str, Any]:
    custom = target_file.unrecognized_fields.get("custom", {})
    return custom.get("edgebuild", {}) if isinstance(custom, dict) else {}


class Repository:
    """An open repository: metadata loaded lazily, changed roles re-signed together by `commit`.

    Needs: REPO made by `init_repository` and its keystore. Guarantees: `commit` writes changed
    delegated roles, then snapshot, then timestamp.json (atomically, last); nothing is written
    when nothing changed. Use as a context manager: it holds an exclusive lock in the keys directory.
    """

    def __init__(self, repo: Path, keys: Keystore, expiry: Expiry | None = None, threshold: int = HASH_BIN_THRESHOLD):
        self.repo, self.keys, self.expiry, self.hash_bin_threshold = repo, keys, expiry or Expiry(), threshold
        self.metadata_dir, self.targets_dir = repo / "metadata", repo / "targets"
        self._roles: dict[str, Metadata[Targets]] = {}
        self._dirty: set[str] = set()
        self._lock: int | None = None
        if not (self.metadata_dir / "timestamp.json").is_file():
            self.root: Metadata[Root] = Metadata(Root(expires=now()))
            self.snapshot: Metadata[Snapshot] = Metadata(Snapshot(expires=now(), meta={}))
            self.timestamp: Metadata[Timestamp] | None = None
            return
        try:
            self.root = Metadata[Root].from_file(str(self.metadata_dir / "root.json"))
            self.timestamp = Metadata[Timestamp].from_file(str(self.metadata_dir / "timestamp.json"))
            version = self.timestamp.signed.snapshot_meta.version
            self.snapshot = Metadata[Snapshot].from_file(str(self.metadata_dir / f"{version}.snapshot.json"))
        except (OSError, ValueError) as error:
            raise RepoError(f"repository {repo} has unreadable metadata: {error}") from error

    @classmethod
    def open(cls, repo: Path, keys: Keystore, expiry: Expiry | None = None, **options: Any) -> Repository:
        """The repository at `repo`; RepoError naming the init command when there is none."""
        if not (repo / "metadata" / "timestamp.json").is_file():
            raise RepoError(f"no repository at {repo}: run `edgebuild repo init --repo {repo}` first")
        return cls(repo, keys, expiry, **options)

    def __enter__(self) -> Repository:
        self.keys.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = os.open(self.keys.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            os.close(self._lock)
            raise RepoError(f"another edgebuild command is changing {self.repo}; retry when it ends") from error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # Roles and signing.

    def signers(self, role: str) -> list[Any]:
        """The signers of `role`: two for root, the target's key for a target role and its bins."""
        if role == "root":
            return [self.keys.signer("root-1"), self.keys.signer("root-2")]
        if role in _TOP_LEVEL:
            return [self.keys.signer(role)]
        return [self.keys.signer(f"target-{role.split('.bin-')[0]}")]

    def role(self, name: str) -> Metadata[Targets]:
        """The current metadata of a targets role (top-level, hardware target or bin)."""
        if name not in self._roles:
            meta = self.snapshot.signed.meta.get(f"{name}.json")
            if meta is None:
                raise RepoError(f"role '{name}' is not in {self.repo}'s snapshot")
            path = self.metadata_dir / f"{meta.version}.{name}.json"
            try:
                self._roles[name] = Metadata[Targets].from_file(str(path))
            except (OSError, ValueError) as error:
                raise RepoError(f"cannot read {path}: {error}") from error
        return self._roles[name]

    def mark(self, name: str) -> None:
        """Re-sign `name` (with a higher version) at the next commit."""
        self.role(name)
        self._dirty.add(name)

    def hardware_targets(self) -> list[str]:
        """Names of the delegated hardware-target roles."""
        delegations = self.role("targets").signed.delegations
        return sorted(delegations.roles or {}) if delegations else []

    def all_roles(self) -> list[str]:
        """Every targets role name that the snapshot lists."""
        return [name.removesuffix(".json") for name in self.snapshot.signed.meta]

    def _sign(self, metadata: Metadata[Any], role: str, days: int) -> bytes:
        metadata.signed.expires = now() + timedelta(days=days)
        metadata.signatures.clear()
        for signer in self.signers(role):
            metadata.sign(signer, append=True)
        return metadata.to_bytes(_SERIALIZER)

    def write_root(self, extra_signers: tuple[Any, ...] = ()) -> None:
        """Sign and write the current root as N.root.json and root.json (extra signers: rotation)."""
        self._sign(self.root, "root", self.expiry.root)
        for signer in extra_signers:
            self.root.sign(signer, append=True)
        data = self.root.to_bytes(_SERIALIZER)
        _write_atomic(self.metadata_dir / f"{self.root.signed.version}.root.json", data)
        _write_atomic(self.metadata_dir / "root.json", data)

    def commit(self, force_snapshot: bool = False, force_timestamp: bool = False) -> tuple[str, ...]:
        """Write changed roles, snapshot and timestamp; returns the metadata file names written."""
        written: list[str] = []
        meta = self.snapshot.signed.meta
        for name in sorted(self._dirty):
            metadata = self._roles[name]
            previous = meta.get(f"{name}.json")
            metadata.signed.version = previous.version + 1 if previous else 1
            data = self._sign(metadata, name, self.expiry.targets)
            file_name = f"{metadata.signed.version}.{name}.json"
            _write_atomic(self.metadata_dir / file_name, data)
            meta[f"{name}.json"] = MetaFile(version=metadata.signed.version)
            written.append(file_name)
        self._dirty.clear()
        snapshot_changed = bool(written) or force_snapshot or self.timestamp is None
        if snapshot_changed:
            self.snapshot.signed.version = self.timestamp.signed.snapshot_meta.version + 1 if self.timestamp else 1
            data = self._sign(self.snapshot, "snapshot", self.expiry.snapshot)
            written.append(f"{self.snapshot.signed.version}.snapshot.json")
            _write_atomic(self.metadata_dir / written[-1], data)
            snapshot_meta = MetaFile(
                version=self.snapshot.signed.version,
                length=len(data),
                hashes={"sha256": hashlib.sha256(data).hexdigest()},
            )
        if snapshot_changed or force_timestamp:
            if self.timestamp is None:
                self.timestamp = Metadata(Timestamp(version=1, expires=now(), snapshot_meta=snapshot_meta))
            else:
                self.timestamp.signed.version += 1
                if snapshot_changed:
                    self.timestamp.signed.snapshot_meta = snapshot_meta
            _write_atomic(
                self.metadata_dir / "timestamp.json", self._sign(self.timestamp, "timestamp", self.expiry.timestamp)
            )
            written.append("timestamp.json")
        return tuple(written)

    # Targets.

    def stored_path(self, target_file: TargetFile) -> Path:
        """Where the bytes of `target_file` lie: the hash-prefixed name a consistent-snapshot client fetches."""
        directory, _, name = target_file.path.rpartition("/")
        return self.targets_dir / directory / f"{target_file.hashes['sha256']}.{name}"

    def store(self, path: str, data: bytes | Path, custom: dict[str, Any] | None = None) -> TargetFile:
        """Copy `data` (bytes or a file) under its content-addressed name; its TargetFile for `path`."""
        content = data if isinstance(data, bytes) else data.read_bytes()
        fields = {"custom": custom} if custom is not None else {}
        target_file = TargetFile(len(content), {"sha256": hashlib.sha256(content).hexdigest()}, path, fields)
        dest = self.stored_path(target_file)
        if not dest.exists():
            _write_atomic(dest, content)
        return target_file

    def read(self, target_file: TargetFile) -> bytes:
        """The stored bytes of a target (a pointer, an index, an old bundle)."""
        return self.stored_path(target_file).read_bytes()

    def ensure_target_role(self, target: str) -> None:
        """Delegate `target`'s paths to a new role with its own key, unless it exists."""
        if not _TARGET_NAME.fullmatch(target) or target in (*_TOP_LEVEL, "index"):
            raise RepoError(f"target name '{target}' cannot name a role: use lowercase letters, digits, '-' and '_'")
        top = self.role("targets")
        if top.signed.delegations is None:
            top.signed.delegations = Delegations(keys={}, roles={})
        roles = top.signed.delegations.roles
        assert roles is not None  # top-level targets delegates by name, never by bins
        if target in roles:
            return
        key = self.keys.ensure(f"target-{target}").public_key
        top.signed.delegations.keys[key.keyid] = key
        roles[target] = DelegatedRole(target, [key.keyid], 1, True, delegated_paths(target))
        self._roles[target] = Metadata(Targets(expires=now()))
        self._dirty.update(("targets", target))

    def holder(self, target: str, path: str) -> str:
        """The role that holds (or would hold) bundle or delta `path` of `target`: its bin when binned."""
        delegations = self.role(target).signed.delegations
        if delegations is not None and delegations.succinct_roles is not None:
            return delegations.succinct_roles.get_role_for_target(path)
        return target

    def bundle_targets(self, target: str) -> Iterator[tuple[str, TargetFile]]:
        """(holding role, TargetFile) of every bundle and delta of `target`."""
        role = self.role(target).signed
        names = [target]
        if role.delegations is not None and role.delegations.succinct_roles is not None:
            names += list(role.delegations.succinct_roles.get_roles())
        for name in names:
            for path, target_file in self.role(name).signed.targets.items():
                if path.startswith("bundles/"):
                    yield name, target_file

    def add_bundle_target(self, target: str, target_file: TargetFile) -> None:
        """List `target_file` in the role that holds it; move to (more) hash bins when over the threshold."""
        name = self.holder(target, target_file.path)
        self.role(name).signed.targets[target_file.path] = target_file
        self.mark(name)

    def rebin_if_needed(self, target: str) -> None:
        """Spread `target`'s bundles over succinct bins once they exceed the threshold, and as they grow."""
        entries = [target_file for _, target_file in self.bundle_targets(target)]
        if len(entries) <= self.hash_bin_threshold:
            return
        role = self.role(target).signed
        current = role.delegations.succinct_roles if role.delegations else None
        bits = bin_bit_length(len(entries))
        if current is not None and current.bit_length >= bits:
            return
        for name in [target, *current.get_roles()] if current else [target]:
            holder = self.role(name).signed
            for path in [path for path in holder.targets if path.startswith("bundles/")]:
                del holder.targets[path]
            self._dirty.add(name)
        key = self.signers(target)[0].public_key
        succinct = SuccinctRoles([key.keyid], 1, bits, f"{target}.bin")
        role.delegations = Delegations(keys={key.keyid: key}, succinct_roles=succinct)
        for name in succinct.get_roles():
            self._roles[name] = Metadata(Targets(expires=now()))
            self._dirty.add(name)
        for target_file in entries:
            self.role(succinct.get_role_for_target(target_file.path)).signed.targets[target_file.path] = target_file

    def find_bundle(self, name: str) -> TargetFile | None:
        """The published bundle whose file name is `name` (`<model>-<version>-<target>.tar`)."""
        for target in self.hardware_targets():
            if name.endswith(f"-{target}.tar"):
                for _, target_file in self.bundle_targets(target):
                    if target_file.path.rpartition("/")[2] == name:
                        return target_file
        return None

    def latest(self, target: str, model: str) -> TargetFile | None:
        """The published bundle of `model` on `target` with the highest release counter."""
        bundles = [
            target_file
            for _, target_file in self.bundle_targets(target)
            if _edgebuild(target_file).get("model") == model and "release_counter" in _edgebuild(target_file)
        ]
        return max(bundles, key=lambda f: _edgebuild(f)["release_counter"], default=None)

    # Channels.

    def point(self, channel: str, bundle: TargetFile, rollout: float = 1.0) -> None:
        """Point `channel`'s pointer and index at `bundle` for a `rollout` fraction of devices (a
        device is in when its `rollout_bucket` for this bundle is below it); refuses to move a
        channel backwards."""
        if not 0 < rollout <= 1:
            raise RepoError(f"rollout {rollout} must be above 0 and at most 1 (a fraction of devices)")
        info = _edgebuild(bundle)
        target, model = info["target"]["name"], info["model"]
        path = pointer_path(channel, target)
        pointer = self.document(target, path) or {"schema": POINTER_SCHEMA, "channel": channel, "target": target}
        current = pointer.setdefault("models", {}).get(model)
        if current is not None and current["release_counter"] > info["release_counter"]:
            raise RepoError(
                f"channel {channel} already serves {model} {current['version']} on {target}, newer than "
                f"{info['version']}: devices refuse rollbacks, publish a higher version instead"
            )
        entry = {"version": info["version"], "release_counter": info["release_counter"]}
        pointer["models"][model] = {**entry, "bundle": bundle.path, "rollout": rollout}
        self.put_document(target, path, pointer)
        index = self.document("targets", index_path(channel)) or {"schema": INDEX_SCHEMA, "channel": channel}
        slot = index.setdefault("targets", {}).setdefault(target, {"models": {}})
        slot.update({field: info["target"][field] for field in COMPATIBILITY})
        slot["models"][model] = {**entry, "memory_bytes": info["memory_bytes"], "size_bytes": info["size_bytes"]}
        if info.get("latency_ratio") is not None:  # host latency vs ORT FP32: devices rank by it
            slot["models"][model]["latency_ratio"] = float(info["latency_ratio"])
        self.put_document("targets", index_path(channel), index)

    def set_rollout(self, channel: str, target: str, model: str, rollout: float) -> str:
        """Raise the rollout fraction of what `channel` serves for `model` on `target`; returns the
        bundle path. A fraction never goes down (devices already in would stay, others would see
        a channel that shrinks): to stop a release, roll the channel back."""
        path = pointer_path(channel, target)
        pointer = self.document(target, path)
        entry = (pointer or {}).get("models", {}).get(model)
        if entry is None:
            raise RepoError(f"channel {channel} serves no {model} on {target}; publish it there first")
        if rollout < float(entry.get("rollout", 1.0)):
            raise RepoError(
                f"channel {channel} already serves {entry['bundle']} to {float(entry['rollout']):.0%} of devices; "
                "a rollout only grows (roll the channel back to stop it)"
            )
        if not 0 < rollout <= 1:
            raise RepoError(f"rollout {rollout} must be above 0 and at most 1 (a fraction of devices)")
        entry["rollout"] = rollout
        self.put_document(target, path, pointer)
        return str(entry["bundle"])

    def document(self, role: str, path: str) -> dict[str, Any] | None:
        """The JSON document that `role` lists at `path` (a pointer or an index), or None."""
        existing = self.role(role).signed.targets.get(path)
        return json.loads(self.read(existing)) if existing is not None else None

    def put_document(self, role: str, path: str, document: dict[str, Any]) -> None:
        """Store `document` as canonical JSON and list it in `role` (marks the role only on a change)."""
        target_file = self.store(path, canonical_json(document))
        if self.role(role).signed.targets.get(path) != target_file:
            self.role(role).signed.targets[path] = target_file
            self.mark(role)
