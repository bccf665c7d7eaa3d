"""A rollback bundle: an earlier release's model re-issued under a higher release counter.

Devices never install a lower counter (that is how TUF-era rollback attacks are refused), so
going back to an earlier model means going *forward* in counter: the earlier bundle's files are
kept byte for byte, its manifest gets a new version (`<old version>-rollback.<counter>`), the new
counter and `provenance.rollback_of`, the README is rendered again, and the whole is signed with
the release key. A later real release must then carry a counter above the rollback's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.engine.cache import sha256_bytes
from compiler.packaging import manifest as manifest_module
from compiler.packaging.bundle import SIGNATURE, PackagingError, render_readme, write_signed
from compiler.packaging.tarball import read_tar


def rollback_version(old_version: str, counter: int) -> str:
    return f"{old_version}-rollback.{counter}"


def rebundle(old_bundle: Path, counter: int, private_key: Path, directory: Path) -> Path:
    """Write `<model>-<old version>-rollback.<counter>-<target>.tar` into `directory`; returns it."""
    files, problems = read_tar(old_bundle)
    if problems or "manifest.json" not in files:
        why = "; ".join(problems) or "no manifest"
        raise PackagingError(f"{old_bundle}: not a bundle edgebuild can re-issue ({why})")
    old = manifest_module.loads(files["manifest.json"])
    if counter <= old["release_counter"]:
        raise PackagingError(f"a rollback needs a counter above {old['release_counter']}, got {counter}")
    version = rollback_version(old["model"]["version"], counter)
    manifest: dict[str, Any] = {**old, "model": {**old["model"], "version": version}, "release_counter": counter}
    manifest["provenance"] = {
        **old["provenance"],
        "rollback_of": {
            "version": old["model"]["version"],
            "release_counter": old["release_counter"],
            "bundle_sha256": sha256_bytes(old_bundle.read_bytes()),
        },
    }
    kept = {name: data for name, data in files.items() if name not in ("README.md", "manifest.json", SIGNATURE)}
    listed = [entry for entry in old["files"] if entry["name"] != "README.md"]
    readme = render_readme({**manifest, "files": listed})
    listed.append({"name": "README.md", "sha256": sha256_bytes(readme), "bytes": len(readme), "role": "readme"})
    manifest["files"] = sorted(listed, key=lambda entry: entry["name"])
    manifest_module.validate(manifest)
    subject = f"{manifest['model']['name']}-{version}-{manifest['target']['name']}"
    bundle = directory / f"{subject}.tar"
    directory.mkdir(parents=True, exist_ok=True)
    payload = {**kept, "README.md": readme, "manifest.json": manifest_module.dumps(manifest)}
    write_signed(bundle, subject, payload, private_key)
    return bundle
