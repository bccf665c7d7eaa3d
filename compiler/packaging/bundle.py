"""Package a build directory into a bundle, and verify a bundle.

The bundle `<model>-<version>-<target>.tar` holds the artifact file(s), `manifest.json`,
`README.md` and `signature.sig`, the model-signing signature over every other member. It is
byte-for-byte a function of report.json, the artifact bytes, the packaging code, the signing key
and SOURCE_DATE_EPOCH (signing uses deterministic ECDSA, see signing.py).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.engine.cache import canonical_json, sha256_bytes, sha256_file, sha256_tree
from compiler.errors import UserError
from compiler.packaging import manifest as manifest_module
from compiler.packaging import signing, tarball
from compiler.shipped import shipped

RECORD = "report.json"
SIGNATURE = "signature.sig"
README_TEMPLATE = shipped("templates/bundle_readme.md.j2")


class PackagingError(UserError):
    """The build directory cannot be packaged (no record, missing or changed artifact)."""


@dataclass
class PackageOutcome:
    bundle: Path
    up_to_date: bool
    development_key: bool


def bundle_name(record: dict[str, Any]) -> str:
    """`<model>-<version>-<target>` (without .tar)."""
    return f"{record['model']['name']}-{record['model']['version']}-{record['target']['name']}"


def _load_record(build_dir: Path) -> dict[str, Any]:
    path = build_dir / RECORD
    if not path.is_file():
        raise PackagingError(f"{path} does not exist; run `edgebuild build` for this model and target first")
    record: dict[str, Any] = json.loads(path.read_text())
    if record.get("schema") != "edgebuild.build-result/1":
        raise PackagingError(f"{path}: schema {record.get('schema')!r}, expected 'edgebuild.build-result/1'")
    return record


def _stamp(build_dir: Path, key: Path) -> str:
    """Everything the bundle and signature depend on: when unchanged, packaging is skipped."""
    return sha256_bytes(
        canonical_json(
            {
                "record": sha256_file(build_dir / RECORD),
                "key": sha256_bytes(signing.public_key_pem(key)),
                "epoch": tarball.source_date_epoch(),
                "code": sha256_tree([Path(__file__).parent, README_TEMPLATE]),
            }
        ).encode()
    )


def render_readme(manifest: dict[str, Any]) -> bytes:
    """README.md from templates/bundle_readme.md.j2 (no timestamps: reproducible)."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(README_TEMPLATE.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return environment.get_template(README_TEMPLATE.name).render(m=manifest).encode()


def payload(build_dir: Path, record: dict[str, Any]) -> dict[str, bytes]:
    """The bundle's files (name -> bytes): artifact(s) checked against the record, README, manifest."""
    files: dict[str, bytes] = {}
    listed = []
    for entry in record["files"]:
        path = build_dir / entry["name"]
        data = path.read_bytes() if path.is_file() else None
        if data is None or len(data) != entry["bytes"] or sha256_bytes(data) != entry["sha256"]:
            raise PackagingError(f"{path} is missing or differs from {RECORD}; rebuild before packaging")
        files[entry["name"]] = data
        role = entry.get("role", "artifact")  # runtime libraries and loader sources ride along
        listed.append({"name": entry["name"], "sha256": entry["sha256"], "bytes": entry["bytes"], "role": role})
    # The README describes the manifest, so it is rendered from it with a placeholder file list
    # and then added to the list itself (the manifest cannot list its own digest).
    draft = manifest_module.build_manifest(record, build_dir, listed)
    readme = render_readme(draft)
    files["README.md"] = readme
    listed.append({"name": "README.md", "sha256": sha256_bytes(readme), "bytes": len(readme), "role": "readme"})
    final = dict(draft, files=sorted(listed, key=lambda f: f["name"]))
    manifest_module.validate(final)
    files["manifest.json"] = manifest_module.dumps(final)
    return files


def package(build_dir: Path, key: Path | None = None, force: bool = False) -> PackageOutcome:
    """Write the signed `<bundle>.tar` into `build_dir`, unless already up to date.

    A concurrent build of the same model and target may swap `build_dir` for its own while this
    runs (pipeline._publish renames directories): files then vanish under us, and packaging starts
    again from the new directory's record (a real error is raised after the last try).
    """
    for attempt in range(3):
        try:
            return _package_once(build_dir, key, force)
        except (FileNotFoundError, PackagingError):
            if attempt == 2:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def _package_once(build_dir: Path, key: Path | None, force: bool) -> PackageOutcome:
    record = _load_record(build_dir)
    private_key, development = signing.resolve_key(key)
    bundle = build_dir / f"{bundle_name(record)}.tar"
    stamp_path = build_dir / f".{bundle.name}.stamp"
    stamp = _stamp(build_dir, private_key)
    fresh = bundle.is_file() and stamp_path.is_file() and stamp_path.read_text() == stamp
    if fresh and not force:
        return PackageOutcome(bundle, True, development)
    write_signed(bundle, bundle_name(record), payload(build_dir, record), private_key)
    temp_stamp = stamp_path.with_name(f"{stamp_path.name}.{os.getpid()}")
    temp_stamp.write_text(stamp)
    os.replace(temp_stamp, stamp_path)
    return PackageOutcome(bundle, False, development)


def write_signed(bundle: Path, subject: str, files: dict[str, bytes], private_key: Path) -> None:
    """Sign `files` (model-signing over a directory named `subject`) and write them, with
    signature.sig, as the deterministic tar `bundle`."""
    with tempfile.TemporaryDirectory(prefix="edgebuild-package-") as staging:
        # model-signing records the directory's name as the subject: keep it fixed.
        content = Path(staging) / subject
        content.mkdir()
        for name, data in files.items():
            (content / name).write_bytes(data)
        signing.sign_directory(content, private_key, Path(staging) / SIGNATURE)
        signed = {**files, SIGNATURE: (Path(staging) / SIGNATURE).read_bytes()}
    tarball.write_tar(bundle, signed)


def _file_problems(files: dict[str, bytes], listed: list[dict[str, Any]]) -> list[str]:
    """Compare the tar's files with the manifest's list: modified, resized, added, removed, renamed."""
    problems = []
    expected = {entry["name"]: entry for entry in listed}
    present = {name: data for name, data in files.items() if name not in ("manifest.json", SIGNATURE)}
    removed = sorted(set(expected) - set(present))
    added = sorted(set(present) - set(expected))
    for name in sorted(set(expected) & set(present)):
        data, entry = present[name], expected[name]
        if len(data) != entry["bytes"]:
            problems.append(f"modified file '{name}': {len(data)} bytes, manifest says {entry['bytes']}")
        elif sha256_bytes(data) != entry["sha256"]:
            problems.append(f"modified file '{name}': sha256 differs from the manifest")
    added_by_digest = {sha256_bytes(present[name]): name for name in added}
    for name in removed:
        new_name = added_by_digest.pop(expected[name]["sha256"], None)
        if new_name is not None:
            problems.append(f"renamed file '{name}' -> '{new_name}'")
            added.remove(new_name)
        else:
            problems.append(f"removed file '{name}': listed in the manifest, missing from the bundle")
    problems.extend(f"added file '{name}': in the bundle, not in the manifest" for name in added)
    return problems


def verify_bundle(bundle: Path, public_key: Path, signature: Path | None = None) -> list[str]:
    """Every problem with `bundle` (empty when it is intact and signed by `public_key`).

    Order: tar safety (nothing else is read from an unsafe tar), manifest schema, files vs
    manifest, then the model-signing signature (the `signature.sig` member, or `signature` when
    given) over the bundle's other files.
    """
    if not bundle.is_file():
        return [f"{bundle} does not exist"]
    files, problems = tarball.read_tar(bundle)
    if problems:
        return problems
    if "manifest.json" not in files:
        return ["removed file 'manifest.json': the bundle has no manifest"]
    try:
        manifest = manifest_module.loads(files["manifest.json"])
    except manifest_module.ManifestError as error:
        problems.append(str(error))
        manifest = None
    if manifest is not None:
        problems.extend(_file_problems(files, manifest["files"]))
    if signature is None and SIGNATURE not in files:
        problems.append(f"removed file '{SIGNATURE}': the bundle is not signed")
        return problems
    if signature is not None and not signature.is_file():
        problems.append(f"signature {signature} does not exist")
        return problems
    signature_bytes = signature.read_bytes() if signature is not None else files[SIGNATURE]
    with tempfile.TemporaryDirectory(prefix="edgebuild-verify-") as staging:
        content = Path(staging) / bundle.stem
        content.mkdir()
        for name, data in files.items():
            if name != SIGNATURE:
                (content / name).write_bytes(data)
        (Path(staging) / SIGNATURE).write_bytes(signature_bytes)
        problem = signing.verify_directory(content, public_key, Path(staging) / SIGNATURE)
    if problem:
        problems.append(problem)
    return problems
