"""`edgebuild device update`: one update cycle of the device client.

1. recover the slot store after whatever interrupted the last run (power loss, kill -9);
2. refresh TUF metadata from the bootstrap root (followed through root rotations);
3. read the signed channel index, choose the best compatible target for the device profile, read
   its signed channel pointer and apply the staged-rollout fraction to this device's id;
4. refuse a release counter lower than the installed one (anti-rollback);
5. download a delta from the installed version when one is published, apply it and check the
   result against the signed full-bundle length and sha256; on any failure fall back to the full
   bundle (resumable download, bounded by the signed length, checked against the signed hash);
6. install into the inactive slot: model signature, anti-rollback again, fsync, health check,
   atomic switch. A failing health check leaves the device on the bundle it had.

Every outcome is one log line (stdout and `<install-dir>/device.log`); the device is never left
without its last good model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.errors import UserError
from compiler.ota import delta as delta_module
from compiler.ota.device_profile import DeviceProfile, choose_target
from compiler.ota.download import download
from compiler.ota.slots import InstalledBundle, SlotStore
from compiler.ota.tuf_client import TufClient

TUF_DIR = "tuf"
DOWNLOADS_DIR = "downloads"


class UpdateRefused(UserError):
    """The repository offers nothing this device may install (incompatible, rollback, not in rollout)."""


@dataclass
class UpdateOutcome:
    status: str  # "installed" | "up-to-date" | "not-in-rollout"
    installed: InstalledBundle | None
    via: str = ""  # "delta" | "full" | ""
    log: list[str] = field(default_factory=list)
    downloaded_bytes: int = 0


def rollout_bucket(device_id: str, bundle: str) -> float:
    """A number in [0, 1) fixed per (device, release): a device is in a rollout of fraction f iff
    bucket < f, so raising f only ever adds devices and no device flips back and forth."""
    digest = hashlib.sha256(f"{device_id}\0{bundle}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class DeviceClient:
    """The update cycle for one device: a profile, a repository URL, a bootstrap root, an install dir."""

    def __init__(
        self,
        profile: DeviceProfile,
        repo_url: str,
        bootstrap_root: bytes,
        install_dir: Path,
        public_key: Path,
        timeout_s: float = 10.0,
    ) -> None:
        self.profile = profile
        self.repo_url = repo_url.rstrip("/")
        self.install_dir = install_dir
        self.public_key = public_key
        self.timeout_s = timeout_s
        install_dir.mkdir(parents=True, exist_ok=True)
        self.store = SlotStore(install_dir)
        self.tuf = TufClient(
            install_dir / TUF_DIR,
            f"{self.repo_url}/metadata",
            f"{self.repo_url}/targets",
            bootstrap_root,
            max(1, round(timeout_s)),
        )
        self.log: list[str] = []

    def _say(self, line: str, logged: bool = False) -> None:
        """Report `line`; append it to device.log unless the slot store `logged` it there already."""
        self.log.append(line)
        if not logged:
            with open(self.install_dir / "device.log", "a") as handle:
                handle.write(line + "\n")

    def update(self, channel: str | None = None) -> UpdateOutcome:
        """Run one cycle; raise a UserError naming the cause when nothing could be installed."""
        for line in self.store.recover():
            self._say(line, logged=True)
        installed = self.store.active()
        self._say(f"installed: {installed.label() if installed else 'nothing'}")
        channel = channel or self.profile.channel
        self.tuf.refresh()
        index = self.tuf.channel_index(channel)
        choice = choose_target(self.profile, index)
        if choice is None:
            reasons = "; ".join(f"{name}: {why}" for name, why in sorted(_rejections(self.profile, index).items()))
            raise UpdateRefused(
                f"no bundle of '{self.profile.model}' in channel '{channel}' fits this device"
                + (f" ({reasons})" if reasons else "")
            )
        pointer = self.tuf.pointer(channel, choice.target)
        entry = pointer["models"].get(self.profile.model)
        if entry is None:
            raise UpdateRefused(f"channel '{channel}' serves no '{self.profile.model}' on {choice.target}")
        self._say(f"channel {channel}: {choice.target} serves {self.profile.model} {entry['version']}")
        if installed is not None and installed.name == Path(entry["bundle"]).stem:
            self._say("up to date")
            return self._outcome("up-to-date", installed, "")
        rollout = float(entry.get("rollout", 1.0))
        if rollout < 1.0 and rollout_bucket(self.profile.id, entry["bundle"]) >= rollout:
            self._say(f"not in this release's rollout yet ({rollout:.0%} of devices)")
            return self._outcome("not-in-rollout", installed, "")
        if installed is not None and int(entry["release_counter"]) < installed.release_counter:
            raise UpdateRefused(
                f"refusing {entry['bundle']}: release counter {entry['release_counter']} is lower than the "
                f"installed {installed.release_counter} (rollback attack or a stale channel)"
            )
        info = self.tuf.target_info(entry["bundle"])
        if info is None:
            raise UpdateRefused(f"{entry['bundle']} is named by the channel pointer but not signed by its role")
        bundle, via = self._fetch(info, installed)
        try:
            result = self.store.install(bundle, self.public_key)
        finally:
            bundle.unlink(missing_ok=True)  # the slot keeps its own copy; a refused one is not kept
        for line in result.log:
            self._say(line, logged=True)
        return self._outcome("installed", result.bundle, via)

    def _outcome(self, status: str, installed: InstalledBundle | None, via: str) -> UpdateOutcome:
        return UpdateOutcome(status, installed, via, list(self.log), self.tuf.downloaded_bytes)

    def _fetch(self, info: Any, installed: InstalledBundle | None) -> tuple[Path, str]:
        """The verified new bundle on disk: through a delta when possible, else in full."""
        downloads = self.install_dir / DOWNLOADS_DIR
        name = Path(info.path).name
        dest = downloads / name
        expected = info.hashes["sha256"]
        custom = info.unrecognized_fields.get("custom", {}).get("edgebuild", {})
        delta_path = custom.get("deltas", {}).get(installed.version) if installed else None
        if installed is not None and delta_path:
            try:
                self._apply_delta(delta_path, installed, dest, info.length, expected)
                self._say(f"delta: {Path(delta_path).name} applied and matches the signed bundle")
                return dest, "delta"
            except UserError as error:
                self._say(f"delta failed, falling back to the full bundle: {error}")
        download(self.tuf.target_url(info), dest, info.length, expected, self.timeout_s)
        self._say(f"downloaded {name} ({info.length} bytes, sha256 verified against signed metadata)")
        return dest, "full"

    def _apply_delta(self, path: str, installed: InstalledBundle, dest: Path, length: int, sha256: str) -> None:
        info = self.tuf.target_info(path)
        if info is None:
            raise delta_module.DeltaError(f"{path} is not signed by the target's role")
        base = info.unrecognized_fields.get("custom", {}).get("edgebuild", {}).get("base_sha256")
        if base != installed.sha256:
            raise delta_module.DeltaError(f"{path} was made from another base than the installed bundle")
        patch = download(
            self.tuf.target_url(info),
            self.install_dir / DOWNLOADS_DIR / Path(path).name,
            info.length,
            info.hashes["sha256"],
        )
        try:
            delta_module.apply_delta(installed.tar, patch, dest, length, sha256)
        finally:
            patch.unlink(missing_ok=True)


def _rejections(profile: DeviceProfile, index: dict[str, Any]) -> dict[str, str]:
    from compiler.ota.device_profile import incompatibility

    reasons = {}
    for name, target in index.get("targets", {}).items():
        model = target.get("models", {}).get(profile.model)
        if model is not None:
            reasons[name] = incompatibility(profile, target, model) or "compatible"
    return reasons
