"""Bundles end to end: digits-cnn desktop-int8 built through the CLI, packaged, signed, verified,
then tampered with in every way `edgebuild verify` must name. Two independent builds (separate
artifacts and caches) check what the reproducibility guarantee promises."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli.main import main
from compiler.packaging import manifest as manifest_module
from compiler.packaging.signing import DEV_PRIVATE, DEV_PUBLIC
from compiler.shipped import PACKAGES as ROOT

BUNDLE = "digits-cnn-1.0.0-desktop-int8.tar"


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("keys")
    code, output = run_cli("keys", "init", "--dir", str(directory))
    assert code == 0, output
    return directory / DEV_PRIVATE, directory / DEV_PUBLIC


def _build(artifacts: Path, key: Path) -> Path:
    code, output = run_cli(
        "build", "-t", "desktop-int8", "-m", "digits-cnn", "--artifacts", str(artifacts), "--key", str(key)
    )
    assert code == 0, output
    return artifacts / "digits-cnn" / "desktop-int8"


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Path:
    return _build(tmp_path_factory.mktemp("artifacts"), keys[0])


def verify(bundle: Path, public_key: Path) -> tuple[int, str]:
    return run_cli("verify", str(bundle), "--public-key", str(public_key))


def members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def rewrite(dest: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    """A tar with `files` as its content (plus raw `extra` members); `files` keeps the signature member."""
    with tarfile.open(dest, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return dest


@pytest.mark.slow
def test_build_packages_a_bundle_that_verifies(build_dir: Path, keys: tuple[Path, Path]) -> None:
    bundle = build_dir / BUNDLE
    assert sorted(members(bundle)) == ["README.md", "digits-cnn.onnx", "manifest.json", "signature.sig"]
    with tarfile.open(bundle) as tar:
        for info in tar.getmembers():
            assert (info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode) == (0, 0, 0, "", "", 0o644)
    manifest = manifest_module.loads(members(bundle)["manifest.json"])
    assert manifest["inputs"][0]["layout"] == "NCHW" and manifest["release_counter"] == 1_000_000
    assert manifest["memory"]["total_bytes"] > manifest["memory"]["weights_bytes"] > 0
    assert {f["name"] for f in manifest["files"]} == {"README.md", "digits-cnn.onnx"}
    assert "onnxruntime" in members(bundle)["README.md"].decode()
    code, output = verify(bundle, keys[1])
    assert code == 0, output


@pytest.mark.slow
def test_packaging_is_skipped_when_up_to_date(build_dir: Path, keys: tuple[Path, Path]) -> None:
    before = (build_dir / BUNDLE).stat().st_mtime_ns
    code, output = run_cli(
        "package",
        "-t",
        "desktop-int8",
        "-m",
        "digits-cnn",
        "--artifacts",
        str(build_dir.parents[1]),
        "--key",
        str(keys[0]),
    )
    assert code == 0 and "up to date" in output, output
    assert (build_dir / BUNDLE).stat().st_mtime_ns == before


@pytest.mark.slow
def test_bundle_is_reproducible(build_dir: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    # Repackaging the same build record gives the same bytes, signature included (RFC 6979 ECDSA),
    # also in another process with another string-hash seed (set and dict orders change with it).
    copy = tmp_path / "copy"
    shutil.copytree(build_dir, copy)
    for stale in copy.glob("*.tar"):
        stale.unlink()
    script = "import sys, pathlib, compiler.packaging.bundle as p; p.package(*map(pathlib.Path, sys.argv[1:]))"
    for seed in ("1", "2"):
        environment = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-c", script, str(copy), str(keys[0])], check=True, env=environment, cwd=ROOT)
        (copy / f".{BUNDLE}.stamp").unlink()
        assert (copy / BUNDLE).read_bytes() == (build_dir / BUNDLE).read_bytes()
    # An independent build from an empty cache into other artifacts (digits retrained, every
    # stage re-run): the same bundle, byte for byte. Latency comes from the host's ledger.
    other = _build(tmp_path / "artifacts", keys[0])
    assert not (tmp_path / "artifacts" / "cache").samefile(build_dir.parents[1] / "cache")
    assert (other / BUNDLE).read_bytes() == (build_dir / BUNDLE).read_bytes()
    code, output = verify(other / BUNDLE, keys[1])
    assert code == 0, output


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("modify", "modified file 'digits-cnn.onnx'"),
        ("add", "added file 'extra.bin'"),
        ("remove", "removed file 'digits-cnn.onnx'"),
        ("rename", "renamed file 'digits-cnn.onnx' -> 'model.onnx'"),
        ("symlink", "symlink member 'evil' -> '/etc/passwd'"),
        ("traversal", "path traversal member '../escape.txt'"),
        ("hardlink", "hardlink member 'hard' -> 'digits-cnn.onnx'"),
        ("absolute", "absolute path member '/tmp/abs.txt'"),
        ("device", "device or fifo member 'fifo'"),
        ("duplicate", "duplicate member 'manifest.json'"),
        ("manifest", "signature does not match"),
        ("unsigned", "removed file 'signature.sig'"),
    ],
)
@pytest.mark.slow
def test_tampered_bundle_fails_naming_the_cause(
    build_dir: Path, keys: tuple[Path, Path], tmp_path: Path, tamper: str, expected: str
) -> None:
    files = members(build_dir / BUNDLE)
    extra: list[tarfile.TarInfo] = []
    if tamper == "modify":
        files["digits-cnn.onnx"] = files["digits-cnn.onnx"][:-1] + b"\0"
    elif tamper == "add":
        files["extra.bin"] = b"payload"
    elif tamper == "remove":
        del files["digits-cnn.onnx"]
    elif tamper == "rename":
        files["model.onnx"] = files.pop("digits-cnn.onnx")
    elif tamper == "symlink":
        link = tarfile.TarInfo("evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        extra.append(link)
    elif tamper == "traversal":
        escape = tarfile.TarInfo("../escape.txt")
        escape.size = 1
        extra.append(escape)
    elif tamper == "hardlink":
        hard = tarfile.TarInfo("hard")
        hard.type, hard.linkname = tarfile.LNKTYPE, "digits-cnn.onnx"
        extra.append(hard)
    elif tamper == "absolute":
        absolute = tarfile.TarInfo("/tmp/abs.txt")
        absolute.size = 1
        extra.append(absolute)
    elif tamper == "device":
        fifo = tarfile.TarInfo("fifo")
        fifo.type = tarfile.FIFOTYPE
        extra.append(fifo)
    elif tamper == "duplicate":
        duplicate = tarfile.TarInfo("manifest.json")
        duplicate.size = 1
        extra.append(duplicate)
    elif tamper == "unsigned":
        del files["signature.sig"]
    elif tamper == "manifest":  # consistent lie: the manifest itself is edited
        manifest = json.loads(files["manifest.json"])
        manifest["release_counter"] = 99_000_000
        files["manifest.json"] = manifest_module.dumps(manifest)
    bundle = rewrite(tmp_path / BUNDLE, files, extra)
    code, output = verify(bundle, keys[1])
    assert code != 0
    assert expected in output, output
    assert "Traceback" not in output


@pytest.mark.slow
def test_wrong_public_key_is_named(build_dir: Path, tmp_path: Path) -> None:
    code, output = run_cli("keys", "init", "--dir", str(tmp_path))
    assert code == 0
    code, output = verify(build_dir / BUNDLE, tmp_path / DEV_PUBLIC)
    assert code != 0 and "wrong key" in output, output


@pytest.mark.slow
def test_schema_rejects_a_manifest_missing_a_field(build_dir: Path) -> None:
    manifest = json.loads(members(build_dir / BUNDLE)["manifest.json"])
    del manifest["release_counter"]
    with pytest.raises(manifest_module.ManifestError, match="release_counter"):
        manifest_module.validate(manifest)


def test_schema_command_prints_the_versioned_schema() -> None:
    code, output = run_cli("schema")
    assert code == 0 and json.loads(output)["$id"] == "edgebuild.manifest/1"


def test_keys_init_refuses_to_overwrite(keys: tuple[Path, Path]) -> None:
    before = keys[0].read_bytes()
    code, output = run_cli("keys", "init", "--dir", str(keys[0].parent))
    assert code != 0 and "refusing to overwrite" in output
    assert keys[0].read_bytes() == before
