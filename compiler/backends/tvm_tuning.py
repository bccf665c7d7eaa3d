"""MetaSchedule tuning for the TVM backend, against a persistent per-target JSON database.

The database directory (one per hardware target, chosen by the caller) holds MetaSchedule's
`database_workload.json` / `database_tuning_record.json` plus `edgebuild_budgets.json`: for each
workload (structural hash of the fused TIR function) the largest per-task trial budget it has
already been tuned with. A task is covered, and not tuned again, when it has a valid record and
was tuned with at least the budget asked for now; so a rebuild with the same budget tunes nothing,
and a model sharing layers with an earlier one only tunes its new workloads. Records are matched
by workload hash, not by target, which is why the directory must be keyed by the full target.

Traps handled here (measured with apache-tvm 0.27): the default LocalBuilder imports
`tvm.s_tir.tensor_intrin` in every worker (26-34 s) and times out at 30 s, so every candidate
fails; MetaSchedule measures with one thread unless TVM_NUM_THREADS is set in the runner's
environment.

Tuning on a board (`runner = "rpc"`): candidates are built here (cross-compiled to a shared
library for a foreign ISA) and measured on a device that TVM's RPC tracker hands out for the
target's device key; a board farm runs `python -m tvm.exec.rpc_server --tracker HOST:PORT --key K`
on each board. The tracker is asked first, so a missing or empty farm is a one-line error.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tvm
import tvm_ffi
from filelock import FileLock
from tvm.s_tir import meta_schedule as ms

from compiler.errors import UserError
from compiler.progress import heartbeat

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
BUDGET_FILE = "edgebuild_budgets.json"
BUILD_TIMEOUT_S = 300  # a first build in a fresh worker pays for importing tvm (several seconds)
RUN_TIMEOUT_S = 120


def build_without_tensor_intrin(mod: tvm.IRModule, target: tvm.target.Target, _params: Any) -> Any:
    """MetaSchedule's default_build minus `import tvm.s_tir.tensor_intrin` (26-34 s per worker).

    CPU schedules from the default rules use no tensor intrinsics, so skipping the registry costs
    nothing. Runs in a builder subprocess, which imports this module by name.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def export_library(mod: Any, cross_gxx: str | None = None) -> str:
    """MetaSchedule export for RPC: a shared library linked here, by this host's g++ or by the
    cross compiler `cross_gxx`, so the board needs only the TVM runtime, no compiler (the default
    export writes a tar of objects that the device would have to link itself)."""
    import tvm.support.cc

    path = os.path.join(tempfile.mkdtemp(prefix="edgebuild-ms-export-"), "candidate.so")
    mod.export_library(path, fcompile=tvm.support.cc.cross_compiler(cross_gxx) if cross_gxx else None)
    return path


@dataclass(frozen=True)
class RpcTracker:
    """Where to measure candidates: a TVM RPC tracker and the device key its boards register with."""

    host: str
    port: int
    key: str

    @classmethod
    def parse(cls, address: str, key: str) -> RpcTracker:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not key:
            raise UserError(f"RPC tracker '{address}' with key '{key}': give the tracker as HOST:PORT and a device key")
        return cls(host, int(port), key)

    def __str__(self) -> str:
        return f"{self.host}:{self.port} (key '{self.key}')"

    def check(self) -> int:
        """The number of devices registered under the key; a UserError when there are none."""
        from tvm import rpc

        try:
            # TVM's client retries a refused connection for 60 s; a plain probe fails at once.
            socket.create_connection((self.host, self.port), timeout=10).close()
            summary = rpc.connect_tracker(self.host, self.port).summary()
        except (OSError, RuntimeError) as error:
            raise UserError(
                f"cannot reach the TVM RPC tracker at {self.host}:{self.port} ({error}); start one with "
                f"`python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port {self.port}`"
            ) from error
        # Every board's server stays connected to the tracker as "server:<key>", busy or free.
        devices = sum(1 for server in summary.get("server_info", []) if server.get("key") == f"server:{self.key}")
        if not devices:
            raise UserError(
                f"no device registered under key '{self.key}' at the RPC tracker {self.host}:{self.port}; on the "
                f"board run `python -m tvm.exec.rpc_server --tracker {self.host}:{self.port} --key {self.key}`"
            )
        return devices

    def runner(self, evaluator: ms.runner.EvaluatorConfig, devices: int) -> ms.runner.RPCRunner:
        """MetaSchedule's RPC runner, measuring on up to `devices` boards at once."""
        config = ms.runner.RPCConfig(
            tracker_host=self.host, tracker_port=self.port, tracker_key=self.key, session_timeout_sec=RUN_TIMEOUT_S
        )
        return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=max(1, devices))


def open_database(database_dir: Path) -> ms.database.JSONDatabase:
    database_dir.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(
        path_workload=str(database_dir / WORKLOAD_FILE),
        path_tuning_record=str(database_dir / RECORD_FILE),
        allow_missing=True,
    )


@contextmanager
def locked(database_dir: Path) -> Iterator[None]:
    """Hold the database's lock: two builds sharing a target must not interleave their commits."""
    database_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(database_dir / ".lock")):
        yield


@contextmanager
def thread_env(num_threads: int) -> Iterator[None]:
    """TVM_NUM_THREADS for runner subprocesses: tune with the thread count the model deploys with."""
    previous = os.environ.get("TVM_NUM_THREADS")
    os.environ["TVM_NUM_THREADS"] = str(num_threads)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TVM_NUM_THREADS", None)
        else:
            os.environ["TVM_NUM_THREADS"] = previous


def _workload_key(task: ms.ExtractedTask) -> str:
    return str(tvm_ffi.structural_hash(task.dispatched[0]))


def _valid_records(database: ms.database.JSONDatabase, task: ms.ExtractedTask) -> list[Any]:
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return []
    return list(database.get_top_k(database.commit_workload(mod), 1 << 20))


def _best_us(records: list[Any]) -> float | None:
    if not records or not records[0].run_secs:
        return None
    secs = [float(s) for s in records[0].run_secs]
    return round(sum(secs) / len(secs) * 1e6, 3)


def tune(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    trials: int,
    max_trials_per_task: int | None,
    num_threads: int,
    database_dir: Path,
    allow_tuning: bool,
    progress: Any,
    rpc: RpcTracker | None = None,
) -> tuple[ms.database.JSONDatabase, dict[str, Any]]:
    """Tune the uncovered workloads of a fused module; return the database and the tuning meta.

    Needs: `mod` after legalisation and fusion, with static shapes; the database lock held by the
    caller. `allow_tuning` False (a target this machine cannot run) only reads the database, unless
    `rpc` names a tracker whose devices measure the candidates.
    """
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks, extracted_tasks_to_tune_contexts

    started = time.perf_counter()
    database = open_database(database_dir)
    tasks = [t for t in extract_tasks(mod, target) if not t.mod.attrs.get("tirx.is_scheduled", False)]
    budget_path = database_dir / BUDGET_FILE
    budgets: dict[str, int] = json.loads(budget_path.read_text()) if budget_path.exists() else {}
    per_task = min(trials, max_trials_per_task) if max_trials_per_task else trials
    before = {t.task_name: len(_valid_records(database, t)) for t in tasks}
    # A workload once offered this budget is covered, records or not (a small global budget may
    # never reach it): the same build then tunes nothing, and only a bigger budget tunes again.
    uncovered = [t for t in tasks if trials > 0 and budgets.get(_workload_key(t), 0) < per_task]
    records_before = len(database.get_all_tuning_records())
    if uncovered and (allow_tuning or rpc):
        devices = rpc.check() if rpc else 0
        where = f"on the {devices} device(s) of RPC tracker {rpc}" if rpc else "on this host"
        progress(f"tvm: tuning {len(uncovered)} of {len(tasks)} tasks, {trials} trials, {num_threads} threads, {where}")
        # Small batches keep a tiny budget spread over all tasks instead of spent on the first one.
        per_iter = max(4, min(64, math.ceil(trials / len(uncovered))))
        with (
            tempfile.TemporaryDirectory(prefix="edgebuild-ms-") as work_dir,
            thread_env(num_threads),
            redirect_stdout(sys.stderr),  # MetaSchedule logs its task table to stdout, kept machine-readable
        ):
            # The evolutionary search's default population (512 per task and iteration) costs more
            # than the measurements themselves on a small budget; scale it with the budget.
            population = max(64, min(512, 8 * per_task))
            strategy = ms.search_strategy.EvolutionarySearch(
                population_size=population, init_min_unmeasured=min(50, population // 2)
            )
            # MetaSchedule builds its logging config from the handlers already on its logger; after
            # an earlier tuning in this process they point at a deleted work dir (and an unnamed one
            # crashes its dictConfig), so start clean.
            logging.getLogger("tvm.s_tir.meta_schedule").handlers.clear()
            contexts, weights = extracted_tasks_to_tune_contexts(uncovered, work_dir, strategy=strategy, seed=0)
            evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50)
            records = database_dir / RECORD_FILE
            baseline = _lines(records)

            def measured() -> str:
                return f"{_lines(records) - baseline} of {trials} trials measured"

            with heartbeat("tvm: tuning", measured):
                ms.tune.tune_tasks(
                    tasks=contexts,
                    task_weights=weights,
                    work_dir=work_dir,
                    max_trials_global=trials,
                    max_trials_per_task=per_task,
                    num_trials_per_iter=per_iter,
                    builder=ms.builder.LocalBuilder(
                        max_workers=max(1, num_threads),
                        timeout_sec=BUILD_TIMEOUT_S,
                        f_build=build_without_tensor_intrin,
                        f_export=_rpc_export(target) if rpc else None,
                    ),
                    runner=_runner(rpc, evaluator, devices),
                    database=database,
                    cost_model="xgb",
                    task_scheduler="gradient",
                )
        for task in uncovered:
            budgets[_workload_key(task)] = max(budgets.get(_workload_key(task), 0), per_task)
        tmp = budget_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(budgets, indent=1, sort_keys=True))
        tmp.replace(budget_path)  # atomic: a crash never leaves half a budget file
        database = open_database(database_dir)
    elif uncovered:
        progress(f"tvm: {len(uncovered)} tasks lack tuning records; this machine cannot run the target's code")

    report = []
    for task in tasks:
        records = _valid_records(database, task)
        report.append(
            {"name": task.task_name, "trials": len(records) - before[task.task_name], "best_us": _best_us(records)}
        )
    new_trials = len(database.get_all_tuning_records()) - records_before
    with_records = sum(1 for r in report if r["best_us"] is not None)
    source = "tuned" if new_trials else ("database" if with_records else "untuned")
    return database, {
        "requested_trials": trials,
        "new_trials": new_trials,
        "tasks": report,
        "tasks_with_records": with_records,
        "wall_s": round(time.perf_counter() - started, 2),
        "database_records": len(database.get_all_tuning_records()),
        "source": source,
        "runner": f"rpc {rpc}" if rpc else "local",
    }


def _lines(path: Path) -> int:
    """Records in a JSON database file (one per line); 0 before it exists."""
    try:
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    except OSError:
        return 0


def _runner(rpc: RpcTracker | None, evaluator: ms.runner.EvaluatorConfig, devices: int) -> ms.runner.Runner:
    if rpc is None:
        return ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S, evaluator_config=evaluator)
    return rpc.runner(evaluator, devices)


def _rpc_export(target: tvm.target.Target) -> Callable[[Any], str]:
    if str(target.attrs.get("mtriple", "")).startswith("aarch64"):
        return functools.partial(export_library, cross_gxx="aarch64-linux-gnu-g++")
    return export_library
