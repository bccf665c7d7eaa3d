"""`edgebuild bench-ota` (part of `make bench`): the delivery figures, measured in one run.

1. Verify throughput on the MiniLM desktop-int8 bundle: plain sha256 over its bytes, and the whole
   `edgebuild verify` (tar safety, schema, per-file digests, model-signing signature), in MB/s.
2. Delta size for a realistic update: MiniLM v1 against a v2 whose last encoder layer changed
   (compiler/bench/model_update.py), both built and quantized by the normal pipeline; zstd
   patch-from size, make and apply time, next to the full bundle.
3. Metadata bytes a fresh device downloads (refresh, channel index, pointer, one bundle lookup) for
   a catalogue of 10,000 bundles: one delegated role per hardware target with hash bins, against
   the same catalogue without bins.
4. Kills during install survived out of N (compiler/bench/install_kills.py), A/B slots against an
   in-place overwrite.

A benchmark, not a test: it prints tables and asserts nothing.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from compiler import workspace
from compiler.progress import step

CATALOGUE = 10_000
HARDWARE_TARGETS = 10
# The target section of the fake catalogue entries (a desktop INT8 bundle's).
SYNTHETIC_COMPATIBILITY = {
    "os": "linux",
    "arch": "x86_64",
    "triple": "x86_64-linux-gnu",
    "cpu": None,
    "isa_features": ["avx2"],
    "runtime": "onnxruntime",
    "runtime_min_version": "1.20",
    "precision": "int8",
}


def _mb_per_s(size: int, seconds: float) -> float:
    return size / 1e6 / seconds


def _best_of(repeats: int, action: Any) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def _build(model: str, key: Path, artifacts: Path) -> Path:
    """The MiniLM desktop-int8 bundle of `model` (a recipe name or path), built through the CLI's path."""
    from compiler.engine import config
    from compiler.engine.build import build, output_dir
    from compiler.engine.cache import Cache
    from compiler.packaging.bundle import package

    recipe, target = config.load_recipe(model), config.load_target("desktop-int8")
    command = f"edgebuild build --target desktop-int8 --model {recipe.name}"
    outcome = build(recipe, target, Cache(artifacts / "cache"), output_dir(recipe, target, artifacts), command)
    return package(outcome.out_dir, key).bundle


def verify_throughput(bundle: Path, public_key: Path) -> dict[str, float]:
    from compiler.packaging.bundle import verify_bundle

    size = bundle.stat().st_size

    def digest() -> None:
        hasher = hashlib.sha256()
        with open(bundle, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)

    def verify() -> None:
        problems = verify_bundle(bundle, public_key)
        if problems:
            raise RuntimeError(f"benchmark bundle does not verify: {problems}")

    return {
        "bundle_bytes": size,
        "sha256_mb_s": _mb_per_s(size, _best_of(5, digest)),
        "verify_mb_s": _mb_per_s(size, _best_of(3, verify)),
    }


def delta_figures(v1: Path, v2: Path, scratch: Path) -> dict[str, float]:
    from compiler.ota.delta import apply_delta, make_delta

    patch, rebuilt = scratch / "v1-to-v2.tar.zst", scratch / "rebuilt.tar"
    started = time.perf_counter()
    size = make_delta(v1, v2, patch)
    made = time.perf_counter() - started
    expected = hashlib.sha256(v2.read_bytes()).hexdigest()
    started = time.perf_counter()
    apply_delta(v1, patch, rebuilt, v2.stat().st_size, expected)
    applied = time.perf_counter() - started
    return {
        "full_bytes": v2.stat().st_size,
        "delta_bytes": size,
        "ratio": size / v2.stat().st_size,
        "make_s": made,
        "apply_s": applied,
    }


def metadata_figures(real_bundle: Path, scratch: Path) -> dict[str, Any]:
    """Metadata bytes for a lookup in a 10,000-bundle catalogue, with and without hash bins."""
    from compiler.ota.keystore import Keystore
    from compiler.ota.repository import add_synthetic_targets, init_repository, publish
    from compiler.ota.server import serving
    from compiler.ota.tuf_client import OtaError, metadata_bytes_for_lookup

    per_target = CATALOGUE // HARDWARE_TARGETS
    layouts = {
        "role per target + hash bins": {"targets": HARDWARE_TARGETS, "threshold": None},
        "role per target, no bins": {"targets": HARDWARE_TARGETS, "threshold": 10**9},
        "one role, no bins": {"targets": 1, "threshold": 10**9},
    }
    figures: dict[str, Any] = {}
    for label, layout in layouts.items():
        repo = scratch / label.replace(" ", "-").replace(",", "").replace("+", "and")
        keys = Keystore.for_repository(repo, repo.with_name(repo.name + "-keys"))
        init_repository(repo, keys)
        count = CATALOGUE // layout["targets"]
        options = {} if layout["threshold"] is None else {"hash_bin_threshold": layout["threshold"]}
        names = ["desktop-int8", *(f"board-{i:02d}" for i in range(1, layout["targets"]))]
        for name in names:
            entries = count if name != "desktop-int8" else count - 1
            add_synthetic_targets(repo, keys, name, entries, SYNTHETIC_COMPATIBILITY, **options)
        publish(repo, real_bundle, keys, "beta", **options)
        metadata = repo / "metadata"
        role = max(metadata.glob("*.desktop-int8.json"), key=lambda path: int(path.name.split(".")[0]))
        figure: dict[str, Any] = {"repository_metadata_bytes": _tree_bytes(metadata), "role_bytes": role.stat().st_size}
        with serving(repo) as url:
            try:
                figure["device_bytes"] = metadata_bytes_for_lookup(
                    scratch / f"device-{repo.name}", url, (repo / "metadata" / "1.root.json").read_bytes(),
                    "beta", "desktop-int8",
                )  # fmt: skip
            except OtaError as error:  # a role over ngclient's 5 MB limit is refused outright
                figure["device_bytes"], figure["refused"] = None, str(error)
        figures[label] = figure
    figures["bundles"] = CATALOGUE
    figures["per_target"] = per_target
    return figures


def _tree_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir() if path.is_file())


def run_ota_bench(kills: int = 200, json_path: Path | None = None) -> dict[str, Any]:
    """Run the four measurements and print their tables; returns them (also as JSON if asked)."""
    from compiler.bench import install_kills as kill_bench
    from compiler.bench.model_update import finetuned_minilm
    from compiler.packaging.signing import public_key_pem, resolve_key

    results: dict[str, Any] = {}
    key, _ = resolve_key(None)
    artifacts = workspace.current().artifacts
    bench_dir = artifacts / "ota-bench"
    with tempfile.TemporaryDirectory(prefix="edgebuild-ota-bench-") as temp:
        scratch = Path(temp)
        public_key = scratch / "signing.pub.pem"
        public_key.write_bytes(public_key_pem(key))
        step("building MiniLM v1 and a v2 with its last encoder layer changed (desktop-int8)")
        v1 = _build("minilm", key, artifacts)
        v2 = _build(str(finetuned_minilm(bench_dir / "v2-source", "1.1.0")), key, bench_dir)
        step("verify throughput")
        results["verify"] = verify_throughput(v1, public_key)
        step("delta v1 -> v2")
        results["delta"] = delta_figures(v1, v2, scratch)
        step(f"metadata for a catalogue of {CATALOGUE} bundles")
        results["metadata"] = metadata_figures(v1, scratch)
        step(f"kill -9 during install, {kills} rounds per method")
        results["kills"] = kill_bench.run(kills, scratch / "kills", out=lambda line: None)
    print_tables(results)
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return results


def print_tables(results: dict[str, Any]) -> None:
    verify, delta, metadata, kills = results["verify"], results["delta"], results["metadata"], results["kills"]
    print(f"\nVerify, MiniLM desktop-int8 bundle ({verify['bundle_bytes'] / 1e6:.1f} MB), best of 3-5:")
    print(f"  sha256 over the bundle        {verify['sha256_mb_s']:8.0f} MB/s")
    print(f"  edgebuild verify (everything) {verify['verify_mb_s']:8.0f} MB/s")
    print("\nDelta, MiniLM v1 -> v2 (last encoder layer changed, both quantized INT8):")
    print(f"  full bundle {delta['full_bytes'] / 1e6:8.2f} MB")
    print(f"  zstd delta  {delta['delta_bytes'] / 1e6:8.2f} MB ({100 * delta['ratio']:.1f}% of full)")
    print(f"  make {delta['make_s']:.1f} s (publisher), apply + sha256 check {delta['apply_s']:.2f} s (device)")
    print(f"\nMetadata a fresh device downloads to find one bundle among {metadata['bundles']}:")
    for label, figure in metadata.items():
        if not isinstance(figure, dict):
            continue
        total = f"all metadata files {figure['repository_metadata_bytes'] / 1e6:.2f} MB"
        if figure["device_bytes"] is None:
            role = figure["role_bytes"] / 1e6
            print(f"  {label:<28} refused: its {role:.1f} MB role exceeds ngclient's 5 MB limit ({total})")
        else:
            print(f"  {label:<28} {figure['device_bytes'] / 1e3:9.1f} kB   ({total})")
    print("\nKill -9 during install (v1 -> v2, random moment, health check skipped for speed):")
    for method in ("slots", "in-place"):
        counts = kills[method]
        print(
            f"  {method:<9} survived {counts['survived']}/{kills['n']} "
            f"(corrupt {counts['corrupt']}, ended on old {counts['old']}, new {counts['new']}, "
            f"{counts['killed']} kills landed mid-install)"
        )
