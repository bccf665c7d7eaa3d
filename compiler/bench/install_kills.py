"""The kill -9 benchmark: how many installs interrupted by SIGKILL leave a corrupt device?

Each round resets a device store to "v1 active" (v0 in the other slot, as after any earlier
update), starts an installer process for v2, waits until it has imported everything, tells it
to go, and kills it with SIGKILL after a delay drawn uniformly from [0, the measured duration of
an uninterrupted install). The parent then runs recovery and checks that the device holds
exactly v1 or exactly v2, every file byte-identical to the signed bundle. The same seeded
schedule (as fractions of each method's own install time) is applied to the naive install that
unpacks straight over the active directory, which is what the slots are there to prevent.

    python -m compiler.bench.install_kills --kills 200 [--workdir DIR] [--health] [--mb 8]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compiler import workspace
from compiler.ota.slots import BUNDLE_COPY
from compiler.packaging import manifest as manifest_module
from compiler.packaging import signing, tarball
from compiler.packaging.bundle import SIGNATURE, render_readme, verify_bundle
from compiler.shipped import PACKAGES

METHODS = ("slots", "in-place")


@dataclass(frozen=True)
class BenchBundles:
    """Three signed releases of one model (increasing counters) and the key that verifies them."""

    v0: Path
    v1: Path
    v2: Path
    public_key: Path


def derive_bundle(
    source: Path,
    dest_dir: Path,
    private_key: Path,
    version: str,
    artifact: bytes | None = None,
    release_counter: int | None = None,
) -> Path:
    """A signed bundle like `source` with another version/counter and optionally other artifact bytes.

    The manifest, README and signature are made the way bundle.payload and bundle._package_once
    make them, so the result passes verify_bundle with the matching public key.
    """
    files, problems = tarball.read_tar(source)
    if problems:
        raise ValueError(f"{source}: {problems}")
    manifest = json.loads(files["manifest.json"])
    name = next(entry["name"] for entry in manifest["files"] if entry["role"] == "artifact")
    data = files[name] if artifact is None else artifact
    counter = manifest_module.release_counter(version) if release_counter is None else release_counter
    listed = [{"name": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "role": "artifact"}]
    draft = dict(manifest, model=dict(manifest["model"], version=version), release_counter=counter, files=listed)
    readme = render_readme(draft)
    listed.append(
        {"name": "README.md", "sha256": hashlib.sha256(readme).hexdigest(), "bytes": len(readme), "role": "readme"}
    )
    final = dict(draft, files=sorted(listed, key=lambda entry: entry["name"]))
    manifest_module.validate(final)
    out = {name: data, "README.md": readme, "manifest.json": manifest_module.dumps(final)}
    stem = f"{final['model']['name']}-{version}-{final['target']['name']}"
    with tempfile.TemporaryDirectory(prefix="edgebuild-derive-") as staging:
        content = Path(staging) / stem
        content.mkdir()
        for member, member_data in out.items():
            (content / member).write_bytes(member_data)
        signing.sign_directory(content, private_key, Path(staging) / SIGNATURE)
        out[SIGNATURE] = (Path(staging) / SIGNATURE).read_bytes()
    dest_dir.mkdir(parents=True, exist_ok=True)
    tarball.write_tar(dest_dir / f"{stem}.tar", out)
    return dest_dir / f"{stem}.tar"


def _dense_model(megabytes: float, seed: int) -> bytes:
    """x[batch, rows] @ W -> tanh: an ONNX model whose size is almost all weights."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cols = 256
    rows = max(1, int(megabytes * 2**20) // (4 * cols))
    weights = (np.random.default_rng(seed).standard_normal((rows, cols)) * 0.05).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])],
        "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", cols])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_bench_bundles(workdir: Path, megabytes: float = 8.0) -> BenchBundles:
    """Build a dense model with `edgebuild build`, then sign v0/v1/v2 with different weights."""
    keys = workdir / "keys"
    private_key, public_key = keys / signing.DEV_PRIVATE, keys / signing.DEV_PUBLIC
    if not private_key.is_file():
        signing.init_keys(keys)
    source = workdir / "bench.onnx"
    source.write_bytes(_dense_model(megabytes, seed=0))
    # Own state and config directories: the build's latency ledger must not land in the user's home.
    env = dict(os.environ, XDG_STATE_HOME=str(workdir / "state"), XDG_CONFIG_HOME=str(workdir / "config"))
    command = [sys.executable, "-m", "compiler.cli.main", "-C", str(workspace.current().root), "build"]
    command += ["--onnx", str(source), "-t", "desktop-fp32"]
    command += ["--artifacts", str(workdir / "artifacts"), "--key", str(private_key)]
    built = subprocess.run(command, env=env, cwd=PACKAGES, capture_output=True, text=True)
    if built.returncode != 0:
        raise RuntimeError(f"edgebuild build of the benchmark model failed:\n{built.stdout}{built.stderr}")
    base = next((workdir / "artifacts" / "bench" / "desktop-fp32").glob("*.tar"))
    versions = [("0.9.0", 1), ("1.0.0", 2), ("1.0.1", 3)]
    derived = [
        derive_bundle(base, workdir / "bundles", private_key, v, _dense_model(megabytes, s)) for v, s in versions
    ]
    return BenchBundles(*derived, public_key=public_key)


def install_in_place(bundle: Path, public_key: Path, directory: Path) -> None:
    """The naive install: verify, then overwrite the live files one by one (what slots replace)."""
    problems = verify_bundle(bundle, public_key)
    if problems:
        raise SystemExit(f"refused: {problems}")
    files, _ = tarball.read_tar(bundle)
    for name in sorted(files):
        (directory / name).write_bytes(files[name])


def _child(method: str, install_dir: Path, bundle: Path, public_key: Path, health: bool) -> None:
    """Installer process: import everything, say "ready", wait for "go", install, say "done"."""
    import model_signing.verifying  # noqa: F401  (imported before "ready": the kill window is the install)

    from compiler.ota.slots import SlotStore

    check = None
    if health:
        from compiler.ota import health as health_module

        check = health_module.check
    print("ready", flush=True)
    sys.stdin.readline()
    if method == "slots":
        SlotStore(install_dir).install(bundle, public_key, health_check=check)
    else:
        install_in_place(bundle, public_key, install_dir)
    print("done", flush=True)
    # Skip interpreter teardown: a kill landing there would be counted as a kill during install.
    os._exit(0)


def _expected(bundle: Path) -> dict[str, str]:
    files, _ = tarball.read_tar(bundle)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def _matches(directory: Path, expected: dict[str, str]) -> bool:
    for name, digest in expected.items():
        path = directory / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return False
    return True


def _outcome(method: str, directory: Path, old: dict[str, str], new: dict[str, str]) -> str:
    """Judge the bytes on disk after recovery: "old", "new" or "corrupt".

    `old`/`new` map each bundle member to its sha256, plus BUNDLE_COPY to the whole tar's.
    """
    if method == "in-place":
        old, new = ({k: v for k, v in d.items() if k != BUNDLE_COPY} for d in (old, new))
        return "old" if _matches(directory, old) else "new" if _matches(directory, new) else "corrupt"
    from compiler.errors import UserError
    from compiler.ota.slots import SlotStore

    try:
        SlotStore(directory).recover()
        active = SlotStore(directory).active()
    except UserError:
        return "corrupt"
    if active is None:
        return "corrupt"
    for label, expected in (("old", old), ("new", new)):
        if _matches(active.tar.parent, expected):
            return label
    return "corrupt"


class _Round:
    """One installer process for `method`, started and waiting for "go"."""

    def __init__(self, method: str, directory: Path, bundle: Path, public_key: Path, health: bool) -> None:
        command = [sys.executable, "-m", "compiler.bench.install_kills", "--child", method, str(directory), str(bundle)]
        command += [str(public_key)] + (["--health"] if health else [])
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=PACKAGES)
        assert self.process.stdout is not None and self.process.stdin is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"installer for {method} did not start (exit {self.process.wait()})")

    def go(self, kill_after: float | None) -> tuple[float, bool]:
        """(seconds from "go" to done or kill, whether it was killed before finishing)."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        start = time.perf_counter()
        stdin.write(b"go\n")
        stdin.flush()
        if kill_after is None:
            done = stdout.readline().strip() == b"done"
            elapsed = time.perf_counter() - start
            if self.process.wait() != 0 or not done:
                raise RuntimeError(f"uninterrupted install failed (exit {self.process.returncode})")
            return elapsed, False
        time.sleep(kill_after)
        self.process.send_signal(signal.SIGKILL)
        killed = self.process.wait() == -signal.SIGKILL
        return time.perf_counter() - start, killed


def run(
    n: int,
    workdir: Path,
    bundles: BenchBundles | None = None,
    seed: int = 0,
    health: bool = False,
    calibrate: int = 3,
    methods: tuple[str, ...] = METHODS,
    megabytes: float = 8.0,
    out: Callable[[str], None] = print,
) -> dict:
    """Kill `n` installs per method; print a table; return the counts per method.

    Result: {"n", "seed", "health_check", "bundle_bytes", "seconds", <method>: {"install_s",
    "killed", "corrupt", "old", "new", "survived"}}.
    """
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    bundles = bundles or make_bench_bundles(workdir, megabytes)
    old, new = _expected(bundles.v1), _expected(bundles.v2)
    old[BUNDLE_COPY] = hashlib.sha256(bundles.v1.read_bytes()).hexdigest()
    new[BUNDLE_COPY] = hashlib.sha256(bundles.v2.read_bytes()).hexdigest()
    templates = {"slots": workdir / "template-slots", "in-place": workdir / "template-in-place"}
    from compiler.ota.slots import SlotStore

    shutil.rmtree(templates["slots"], ignore_errors=True)
    for earlier in (bundles.v0, bundles.v1):
        SlotStore(templates["slots"]).install(earlier, bundles.public_key, health_check=None)
    shutil.rmtree(templates["in-place"], ignore_errors=True)
    templates["in-place"].mkdir()
    install_in_place(bundles.v1, bundles.public_key, templates["in-place"])

    rng = random.Random(seed)
    fractions = [rng.random() for _ in range(n)]
    device = workdir / "device"
    results: dict = {"n": n, "seed": seed, "health_check": health, "bundle_bytes": bundles.v2.stat().st_size}
    for method in methods:

        def start(method: str = method) -> _Round:
            shutil.rmtree(device, ignore_errors=True)
            shutil.copytree(templates[method], device)
            return _Round(method, device, bundles.v2, bundles.public_key, health)

        durations = []
        for _ in range(calibrate):
            durations.append(start().go(None)[0])
            if _outcome(method, device, old, new) != "new":
                raise RuntimeError(f"{method}: an uninterrupted install did not leave v2 installed")
        install_s = statistics.median(durations)
        counts = {"install_s": install_s, "killed": 0, "corrupt": 0, "old": 0, "new": 0}
        for fraction in fractions:
            _, killed = start().go(fraction * install_s)
            counts["killed"] += killed
            counts[_outcome(method, device, old, new)] += 1
        counts["survived"] = n - counts["corrupt"]
        results[method] = counts
    shutil.rmtree(device, ignore_errors=True)
    results["seconds"] = time.perf_counter() - started
    _table(results, methods, out)
    return results


def _table(results: dict, methods: tuple[str, ...], out: Callable[[str], None]) -> None:
    health = "health check ON" if results["health_check"] else "health check skipped (for speed)"
    out(
        f"kill -9 during install: {results['n']} rounds per method, v1 -> v2, "
        f"bundle {results['bundle_bytes'] / 2**20:.1f} MiB, seed {results['seed']}, {health}"
    )
    out(f"{'method':<12} {'install ms':>10} {'killed':>7} {'corrupt':>8} {'old':>5} {'new':>5}")
    for method in methods:
        c = results[method]
        row = f"{c['install_s'] * 1000:>10.1f} {c['killed']:>7} {c['corrupt']:>8} {c['old']:>5} {c['new']:>5}"
        out(f"{method:<12} {row}")
    for method in methods:
        c = results[method]
        landed = f"{c['killed']} kills landed before the install finished"
        out(f"{method}: kills during install survived {c['survived']} out of {results['n']} ({landed})")
    out(f"({results['seconds']:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compiler.bench.install_kills", description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200, help="rounds per method (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mb", type=float, default=8.0, help="artifact size in MiB (default 8)")
    parser.add_argument("--health", action="store_true", help="run the health check in every install (slower)")
    parser.add_argument("--workdir", type=Path, help="keep bundles and state here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--child", nargs=4, metavar=("METHOD", "DIR", "BUNDLE", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        method, directory, bundle, key = args.child
        _child(method, Path(directory), Path(bundle), Path(key), args.health)
        return 0
    if args.workdir:
        results = run(args.kills, args.workdir, seed=args.seed, health=args.health, megabytes=args.mb)
    else:
        with tempfile.TemporaryDirectory(prefix="edgebuild-kill-bench-") as temp:
            results = run(args.kills, Path(temp), seed=args.seed, health=args.health, megabytes=args.mb)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results.get("slots", {}).get("corrupt", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
