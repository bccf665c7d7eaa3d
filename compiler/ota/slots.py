"""A/B slot store on the device: install into the inactive slot, health-check, switch atomically.

    INSTALL_DIR/
      current.json        the pointer {"slot", "bundle", "release_counter", "version", "sha256"}
      last_good.json      the pointer that was active before the last switch (rollback target)
      slots/a/, slots/b/  unpacked bundle files + bundle.tar (the original, deltas apply to it)
                          + slot.json, written last: a slot without it is incomplete
      incoming/           a private copy of the bundle being installed (verified, then unpacked)
      device.log          one line per install, rollback and recovery

Needs: a POSIX filesystem where os.replace is atomic and fsync reaches the disk.
Guarantees: a process killed at any instruction (SIGKILL, power loss after fsync) leaves
current.json naming a complete slot whose files all match its signed manifest, either the old
bundle or the new one, never a mix: the new slot is written and fsynced while nothing points at
it, and the pointer moves by one rename. Measured by compiler/bench/install_kills.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.errors import UserError
from compiler.packaging import tarball
from compiler.packaging.bundle import bundle_name, verify_bundle

SLOTS = ("a", "b")
CURRENT = "current.json"
LAST_GOOD = "last_good.json"
SLOT_RECORD = "slot.json"
BUNDLE_COPY = "bundle.tar"
INCOMING = "incoming"
LOG = "device.log"
HealthCheck = Callable[[Path, dict[str, Any]], None]


class InstallError(UserError):
    """A bundle was refused (bad signature, rollback, unusable) or could not be installed."""


class RolledBackError(InstallError):
    """The new bundle was written but failed its health check; the pointer never moved."""


class SlotError(UserError):
    """The installed state is damaged (pointer names a slot whose files no longer match)."""


@dataclass(frozen=True)
class InstalledBundle:
    name: str
    model: str
    version: str
    release_counter: int
    slot: str
    sha256: str
    manifest: dict[str, Any]
    tar: Path
    artifact: Path

    def label(self) -> str:
        return f"{self.model} {self.version} (slot {self.slot})"


@dataclass
class InstallResult:
    status: str  # "installed" | "already-installed"
    bundle: InstalledBundle
    previous: InstalledBundle | None
    log: list[str] = field(default_factory=list)


def _default_health(slot_dir: Path, manifest: dict[str, Any]) -> None:
    # Imported late: onnxruntime is heavy, and installs that skip the check should not load it.
    from compiler.ota import health

    health.check(slot_dir, manifest)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _write_atomic(path: Path, record: dict[str, Any]) -> None:
    """Temp file, fsync, rename over `path`, fsync the directory: readers see old or new, whole."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _write_synced(temp, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    os.replace(temp, path)
    _fsync_dir(path.parent)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _pointer(info: InstalledBundle) -> dict[str, Any]:
    return {
        "slot": info.slot,
        "bundle": info.name,
        "release_counter": info.release_counter,
        "version": info.version,
        "sha256": info.sha256,
    }


class SlotStore:
    """The install state under `install_dir` (created on first install)."""

    def __init__(self, install_dir: Path) -> None:
        self.root = Path(install_dir)

    def slot_dir(self, slot: str) -> Path:
        return self.root / "slots" / slot

    # Reading ---------------------------------------------------------------------------------

    def check_slot(self, slot: str) -> tuple[InstalledBundle | None, str]:
        """(the slot's bundle, "") when complete and every file matches its manifest, else (None, why)."""
        directory = self.slot_dir(slot)
        record = _read_json(directory / SLOT_RECORD)
        if record is None:
            return None, f"slot {slot} has no readable {SLOT_RECORD} (empty or incomplete)"
        try:
            manifest_bytes = (directory / "manifest.json").read_bytes()
            if _sha256(manifest_bytes) != record["manifest_sha256"]:
                return None, f"slot {slot}: manifest.json differs from {SLOT_RECORD}"
            manifest = json.loads(manifest_bytes)
            for entry in manifest["files"]:
                data = (directory / entry["name"]).read_bytes()
                if len(data) != entry["bytes"] or _sha256(data) != entry["sha256"]:
                    return None, f"slot {slot}: file '{entry['name']}' differs from the manifest"
            if _sha256((directory / BUNDLE_COPY).read_bytes()) != record["sha256"]:
                return None, f"slot {slot}: {BUNDLE_COPY} differs from {SLOT_RECORD}"
            artifact = next(e["name"] for e in manifest["files"] if e["role"] == "artifact")
            return InstalledBundle(
                name=record["bundle"],
                model=manifest["model"]["name"],
                version=manifest["model"]["version"],
                release_counter=int(manifest["release_counter"]),
                slot=slot,
                sha256=record["sha256"],
                manifest=manifest,
                tar=directory / BUNDLE_COPY,
                artifact=directory / artifact,
            ), ""
        except (OSError, ValueError, KeyError, TypeError, StopIteration) as error:
            return None, f"slot {slot}: unreadable ({type(error).__name__}: {error})"

    def _resolve(self, pointer: dict[str, Any] | None) -> tuple[InstalledBundle | None, str]:
        if pointer is None or pointer.get("slot") not in SLOTS:
            return None, "pointer is missing or unreadable"
        info, why = self.check_slot(pointer["slot"])
        if info is not None and info.sha256 != pointer.get("sha256"):
            return None, f"slot {info.slot} holds {info.name}, not the {pointer.get('bundle')} the pointer names"
        return info, why

    def active(self) -> InstalledBundle | None:
        """The installed bundle current.json points at (checked file by file), None if nothing is."""
        pointer_path = self.root / CURRENT
        if not pointer_path.exists():
            return None
        info, why = self._resolve(_read_json(pointer_path))
        if info is None:
            raise SlotError(f"{pointer_path}: {why}; run recovery (SlotStore.recover) or reinstall the bundle")
        return info

    def inactive_slot(self) -> str:
        """The slot the next install writes: the one current.json does not name ("a" when none)."""
        pointer = _read_json(self.root / CURRENT)
        active = pointer.get("slot") if pointer else None
        return "b" if active == "a" else "a"

    # Writing ---------------------------------------------------------------------------------

    @contextmanager
    def _lock(self) -> Iterator[None]:
        # flock is released by the kernel when a killed process dies: no stale lock to clean up.
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _log(self, lines: list[str], line: str) -> None:
        lines.append(line)
        with open(self.root / LOG, "a") as handle:
            handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")

    def _clear(self, slot: str) -> None:
        """Empty `slot`: rename it away first, so no half-deleted slot keeps a valid slot.json."""
        directory = self.slot_dir(slot)
        if directory.exists():
            trash = directory.with_name(f".trash-{slot}-{os.getpid()}")
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(directory, trash)
            _fsync_dir(directory.parent)
            shutil.rmtree(trash)
        directory.mkdir(parents=True)
        _fsync_dir(directory.parent)

    def recover(self) -> list[str]:
        """Bring the store to a consistent state after a crash; return what was done.

        Never guesses: a missing pointer means nothing is installed, unless last_good.json names a
        complete slot. Temp files, the incoming copy and an unreferenced (possibly half-written)
        inactive slot are removed.
        """
        lines: list[str] = []
        if not self.root.exists():
            return lines
        with self._lock():
            for leftover in [*self.root.glob(".*.tmp"), *(self.root / "slots").glob(".trash-*")]:
                if leftover.is_dir():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
                self._log(lines, f"recover: removed leftover {leftover.name}")
            if (self.root / INCOMING).exists():
                shutil.rmtree(self.root / INCOMING)
                self._log(lines, f"recover: removed {INCOMING}/ (an install was interrupted)")
            pointer = _read_json(self.root / CURRENT)
            last_good = _read_json(self.root / LAST_GOOD)
            current, why = self._resolve(pointer) if (self.root / CURRENT).exists() else (None, "")
            if current is None and (self.root / CURRENT).exists():
                self._log(lines, f"recover: {CURRENT} is unusable: {why}")
                if pointer is None:
                    # Unreadable, so it cannot even serve as the anti-rollback floor: treat as absent.
                    (self.root / CURRENT).unlink()
                    _fsync_dir(self.root)
            if current is None:
                fallback, _ = self._resolve(last_good)
                if fallback is not None:
                    _write_atomic(self.root / CURRENT, _pointer(fallback))
                    self._log(lines, f"recover: pointer restored from {LAST_GOOD}: {fallback.label()}")
                    current = fallback
            # A slot the pointer names is never deleted here, even if damaged: active() reports it.
            named = (_read_json(self.root / CURRENT) or {}).get("slot")
            referenced = {current.slot} if current else {named} if named in SLOTS else set()
            if last_good and last_good.get("slot") in SLOTS and last_good.get("slot") not in referenced:
                keep, _ = self._resolve(last_good)
                referenced |= {keep.slot} if keep else set()
            for slot in SLOTS:
                directory = self.slot_dir(slot)
                if slot not in referenced and directory.exists() and any(directory.iterdir()):
                    self._clear(slot)
                    self._log(lines, f"recover: cleared slot {slot} (no pointer names it)")
        return lines

    def install(
        self, bundle: Path, public_key: Path, health_check: HealthCheck | None = _default_health
    ) -> InstallResult:
        """Verify `bundle`, write it into the inactive slot, health-check it, then switch to it.

        Raises InstallError when the bundle is refused (before any slot is touched) and
        RolledBackError when its health check fails (the device stays on the active bundle).
        """
        bundle = Path(bundle)
        with self._lock():
            return self._install(bundle, public_key, health_check)

    def _install(self, bundle: Path, public_key: Path, health_check: HealthCheck | None) -> InstallResult:
        lines: list[str] = []
        try:
            raw = bundle.read_bytes()
        except OSError as error:
            raise InstallError(f"cannot read bundle {bundle}: {error.strerror}") from error
        # Verify and unpack one private copy, so the bytes checked are the bytes installed.
        incoming = self.root / INCOMING
        try:
            if incoming.exists():
                shutil.rmtree(incoming)
            incoming.mkdir()
            staged = incoming / bundle.name
            _write_synced(staged, raw)
        except OSError as error:
            shutil.rmtree(incoming, ignore_errors=True)
            raise InstallError(
                f"cannot stage {bundle.name} in {incoming} ({error.strerror or error}); free space and retry"
            ) from error
        try:
            problems = verify_bundle(staged, public_key)
            if problems:
                raise InstallError(f"refused {bundle.name}: {'; '.join(problems)}; get a correctly signed bundle")
            files, problems = tarball.read_tar(staged)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        if problems:
            raise InstallError(f"refused {bundle.name}: {'; '.join(problems)}")
        manifest = json.loads(files["manifest.json"])
        model, version, counter = manifest["model"]["name"], manifest["model"]["version"], manifest["release_counter"]
        sha256 = _sha256(raw)
        pointer = _read_json(self.root / CURRENT)
        previous, _ = self._resolve(pointer)
        if previous is not None and previous.sha256 == sha256:
            self._log(lines, f"install: {bundle.name} is already installed in slot {previous.slot}")
            return InstallResult("already-installed", previous, previous, lines)
        # A damaged active slot still sets the floor: its counter is in the pointer.
        recorded = (pointer or {}).get("release_counter")
        floor = previous.release_counter if previous else recorded if isinstance(recorded, int) else -1
        if counter <= floor:
            installed = f"{previous.model} {previous.version}" if previous else str((pointer or {}).get("bundle"))
            raise InstallError(
                f"refused {model} {version}: release counter {counter} is not above the installed "
                f"{installed}'s {floor} (anti-rollback); install a newer release"
            )
        slot = self.inactive_slot()
        last_good = _read_json(self.root / LAST_GOOD)
        if last_good and last_good.get("slot") == slot:
            # The rollback target is about to be overwritten: stop naming it before touching it.
            (self.root / LAST_GOOD).unlink()
            _fsync_dir(self.root)
        directory = self.slot_dir(slot)
        record = {
            "bundle": bundle_name(manifest),
            "sha256": sha256,
            "manifest_sha256": _sha256(files["manifest.json"]),
            "model": model,
            "version": version,
            "release_counter": counter,
            "state": "installed",
        }
        try:
            self._clear(slot)
            for name in sorted(files):
                _write_synced(directory / name, files[name])
            _write_synced(directory / BUNDLE_COPY, raw)
            _write_atomic(directory / SLOT_RECORD, record)
        except OSError as error:
            # Disk full or failing: the pointer never moved; drop the partial slot (recover() would too).
            shutil.rmtree(directory, ignore_errors=True)
            stays = f"the device stays on {previous.label()}" if previous else "nothing is installed"
            self._log(lines, f"install: writing {model} {version} into slot {slot} failed: {error}")
            raise InstallError(
                f"could not write {model} {version} into slot {slot} ({error.strerror or error}); {stays}; "
                "free space on the device and retry"
            ) from error
        info, why = self.check_slot(slot)
        if info is None:
            raise InstallError(f"install of {bundle.name} into slot {slot} did not read back intact: {why}")
        if health_check is not None:
            try:
                health_check(directory, manifest)
            except Exception as error:  # a check that crashes has not shown the model works
                self._clear(slot)
                stays = f"the device stays on {previous.label()}" if previous else "nothing is installed"
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                self._log(lines, f"install: {model} {version} rolled back: {reason}")
                raise RolledBackError(f"rolled back: {reason}; {stays}") from error
        if previous is not None:
            _write_atomic(self.root / LAST_GOOD, _pointer(previous))
        _write_atomic(self.root / CURRENT, _pointer(info))
        self._log(lines, f"install: switched to {info.label()}" + (f" from {previous.label()}" if previous else ""))
        return InstallResult("installed", info, previous, lines)

    def rollback(self) -> InstalledBundle:
        """Point back at the bundle that was active before the last switch (if still intact).

        This goes below the anti-rollback floor on purpose: it is an operator's decision, and the
        target is a bundle this device already verified and ran.
        """
        with self._lock():
            lines: list[str] = []
            target, why = self._resolve(_read_json(self.root / LAST_GOOD))
            if target is None:
                raise SlotError(f"nothing to roll back to: {LAST_GOOD} {why or 'names no intact slot'}")
            current, _ = self._resolve(_read_json(self.root / CURRENT))
            _write_atomic(self.root / CURRENT, _pointer(target))
            # The slot rolled back from is not known-good: it must not become a rollback target.
            (self.root / LAST_GOOD).unlink()
            _fsync_dir(self.root)
            self._log(
                lines, f"rollback: switched to {target.label()}" + (f" from {current.label()}" if current else "")
            )
            return target
