"""Pinned toolchain environments with a real, small lock: created once from the package index,
reused, rebuilt after an interrupted creation, and run as a subprocess that exchanges only JSON."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from compiler.errors import UserError
from compiler.toolchains import STAMP, Toolchain

WORKER = """
import json, sys
import six  # only in the toolchain, not in the main environment's worker contract
request = json.load(open(sys.argv[1]))
if request.get("fail"):
    raise SystemExit("worker says: the model has an op I cannot convert")
import shutil
json.dump({"six": six.__version__, "doubled": [2 * x for x in request["numbers"]], "python": sys.prefix,
           "python_on_path": shutil.which("python")}, open(request["result"], "w"))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Toolchain:
    root = tmp_path_factory.mktemp("toolchains")
    (root / "tiny.lock").write_text("# a one-package toolchain\nsix==1.17.0\n")
    toolchain = Toolchain("tiny", home_dir=root / "home", lock_dir=root)
    try:
        toolchain.ensure()
    except UserError as error:
        if "package index" in str(error):  # no network: nothing here can create an environment
            pytest.skip(str(error))
        raise
    return toolchain


def test_created_once_and_run_in_its_own_environment(tiny: Toolchain, tmp_path: Path) -> None:
    assert tiny.ready() and tiny.directory.name == f"tiny-{tiny.digest()[:12]}"
    assert tiny.versions() == {"six": "1.17.0"}
    stamp = (tiny.directory / STAMP).stat().st_mtime_ns
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)

    result = tiny.run(worker, {"numbers": [1, 2, 3]}, timeout_s=120)

    assert result["six"] == "1.17.0" and result["doubled"] == [2, 4, 6]
    assert Path(result["python"]).resolve() == tiny.directory.resolve()
    # Tools run by name (onnx2tf runs `onnxsim`) resolve to the toolchain's, even with the main venv active.
    assert Path(result["python_on_path"]).parent == tiny.directory / "bin"
    assert tiny.ensure() == tiny.python and (tiny.directory / STAMP).stat().st_mtime_ns == stamp  # reused


def test_search_path_puts_the_toolchain_first_and_drops_other_venvs(tiny: Toolchain, tmp_path: Path) -> None:
    other = tmp_path / "venv"
    (other / "bin").mkdir(parents=True)
    (other / "pyvenv.cfg").write_text("home = /usr/bin\n")
    path = tiny.search_path(f"{other / 'bin'}:/usr/local/bin:/usr/bin")
    assert path.split(":") == [str(tiny.directory / "bin"), "/usr/local/bin", "/usr/bin"]


def test_worker_failure_is_one_line(tiny: Toolchain, tmp_path: Path) -> None:
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    with pytest.raises(UserError, match="worker in toolchain 'tiny' failed .*the model has an op I cannot convert"):
        tiny.run(worker, {"numbers": [], "fail": True}, timeout_s=120)


def test_interrupted_creation_is_rebuilt(tiny: Toolchain, tmp_path: Path) -> None:
    copy = Toolchain("tiny", home_dir=tmp_path / "home", lock_dir=tiny.lock_dir)
    shutil.copytree(tiny.directory, copy.directory, symlinks=True)
    (copy.directory / STAMP).unlink()  # as if killed before the stamp
    (copy.directory / "half-written").write_text("debris")
    copy.ensure()
    assert copy.ready() and not (copy.directory / "half-written").exists()


def test_a_lock_must_pin_exact_versions(tmp_path: Path) -> None:
    (tmp_path / "loose.lock").write_text("six>=1\n")
    with pytest.raises(UserError, match=r"loose\.lock: every line must pin an exact version.*six>=1"):
        Toolchain("loose", home_dir=tmp_path, lock_dir=tmp_path).ensure()
    with pytest.raises(UserError, match="toolchain 'absent': no lock file"):
        Toolchain("absent", home_dir=tmp_path, lock_dir=tmp_path).ensure()


def test_an_uninstallable_pin_names_the_step_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "bad.lock").write_text("six==0.0.999\n")
    toolchain = Toolchain("bad", home_dir=tmp_path / "home", lock_dir=tmp_path)
    with pytest.raises(UserError, match=r"toolchain 'bad': could not install 1 pinned packages"):
        toolchain.ensure()
    assert not toolchain.directory.exists()
