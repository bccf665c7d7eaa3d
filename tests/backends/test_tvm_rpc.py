"""Tuning through TVM's RPC tracker, as a board farm does it: a real `tvm.exec.rpc_tracker` and a
real `tvm.exec.rpc_server` (each its own process) on 127.0.0.1, serving the host target under a
device key; MetaSchedule builds candidates here and measures them on the server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.backends.tvm_relax import TuneOptions, TvmTarget, compile_model, load_runner
from compiler.backends.tvm_tuning import RpcTracker
from compiler.errors import UserError
from tests.backends.test_tvm import _matmul_relu
from tests.onnx_helpers import run_ort

pytestmark = pytest.mark.slow  # end-to-end builds of real models (minutes)

HOST = TvmTarget(kind="llvm", mtriple="x86_64-linux-gnu", mcpu=None, mattr=(), num_cores=1)
KEY = "edgebuild-test-host"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT, env=env)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RpcTracker]:
    """A tracker and one server registered under KEY, both on 127.0.0.1; stopped afterwards."""
    logs = tmp_path_factory.mktemp("rpc")
    port, server_port = _free_port(), _free_port()
    tracker = _start(
        ["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)],
        logs / "tracker.log",
    )
    server = None
    try:
        address = RpcTracker("127.0.0.1", port, KEY)
        deadline = time.monotonic() + 60
        while True:  # the tracker first, then a server that registers with it
            try:
                address.check()
                break
            except UserError as error:
                if time.monotonic() > deadline:
                    raise AssertionError(f"RPC farm did not come up: {error}") from error
                if server is None and "no device" in str(error):
                    server = _start(
                        [
                            "tvm.exec.rpc_server",
                            "--host", "127.0.0.1",
                            "--port", str(server_port),
                            "--port-end", str(server_port + 1),
                            "--tracker", f"127.0.0.1:{port}",
                            "--key", KEY,
                        ],
                        logs / "server.log",
                    )  # fmt: skip
                time.sleep(0.5)
        yield address
    finally:
        for process in (server, tracker):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)


def test_tunes_through_the_tracker_and_the_records_serve_a_local_build(farm: RpcTracker, tmp_path: Path) -> None:
    model = _matmul_relu()
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    database = tmp_path / "db"
    tune = TuneOptions(trials=8, max_trials_per_task=8, runner="rpc", tracker=f"{farm.host}:{farm.port}", key=KEY)
    (tmp_path / "rpc").mkdir()
    meta = compile_model(path, {"x": [4, 32]}, HOST, tune, database, tmp_path / "rpc")
    tuning = meta["tuning"]
    assert tuning["runner"] == f"rpc {farm}"
    assert tuning["source"] == "tuned" and tuning["new_trials"] > 0
    assert all(task["best_us"] is not None and task["best_us"] > 0 for task in tuning["tasks"])
    x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
    got = load_runner(tmp_path / "rpc" / "model.so", ["x"])({"x": x})[0]
    np.testing.assert_allclose(got, run_ort(model, {"x": x})[0], rtol=1e-4, atol=1e-4)

    # The same budget again, now without the farm: the measured records cover every task.
    (tmp_path / "again").mkdir()
    local = TuneOptions(trials=8, max_trials_per_task=8)
    again = compile_model(path, {"x": [4, 32]}, HOST, local, database, tmp_path / "again")["tuning"]
    assert again["new_trials"] == 0 and again["source"] == "database"


def test_a_key_with_no_device_is_a_one_line_error(farm: RpcTracker, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(_matmul_relu(), path)
    tune = TuneOptions(trials=4, max_trials_per_task=4, runner="rpc", tracker=f"{farm.host}:{farm.port}", key="rpi5")
    with pytest.raises(UserError, match="no device registered under key 'rpi5'.*rpc_server --tracker"):
        compile_model(path, {"x": [4, 32]}, HOST, tune, tmp_path / "db", tmp_path)


def test_an_unreachable_tracker_names_the_address() -> None:
    with pytest.raises(UserError, match=r"cannot reach the TVM RPC tracker at 127\.0\.0\.1:\d+"):
        RpcTracker("127.0.0.1", _free_port(), KEY).check()


@pytest.mark.parametrize("address", ["nohost", "host:port", ":9190"])
def test_a_malformed_tracker_address_is_refused(address: str) -> None:
    with pytest.raises(UserError, match="HOST:PORT"):
        RpcTracker.parse(address, KEY)
