"""Progress output for long steps, on stderr so it never mixes with machine-readable stdout.

On a terminal, counted work shows a rich progress bar. Anywhere else (a CI log, a file) the same
calls print plain lines: "label: 12/48 (25%), 31 s" at most every `LOG_EVERY_S` seconds and when
the work ends, so a log never sits silent for minutes. Steps that cannot count their work
(tuning, a converter or an emulator in a subprocess, creating a toolchain) run inside
`heartbeat()`, which prints "label: still running, 2 min 30 s" on the same schedule.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True, highlight=False, soft_wrap=True)
LOG_EVERY_S = 30.0


def on_terminal() -> bool:
    return sys.stderr.isatty()


def step(message: str) -> None:
    """One line of build progress."""
    console.print(f"[bold cyan]>[/] {escape(message)}")


def elapsed(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


@dataclass
class _Task:
    description: str
    total: float | None
    visible: bool
    completed: float = 0.0
    started: float = field(default_factory=time.monotonic)
    last_line: float = field(default_factory=time.monotonic)


class LogProgress:
    """The part of rich's Progress the build uses, printing plain lines for logs."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self.every_s = every_s
        self.tasks: list[_Task] = []

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        for task in self.tasks:
            if task.visible and task.completed and exc[0] is None:
                self._line(task, done=True)

    def add_task(self, description: str, total: float | None = None, visible: bool = True, **_: Any) -> int:
        self.tasks.append(_Task(description, total, visible))
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(
        self, task_id: int, *, advance: float | None = None, completed: float | None = None, **fields: Any
    ) -> None:
        task = self.tasks[task_id]
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        if "total" in fields:
            task.total = fields["total"]
        if "description" in fields:
            task.description = fields["description"]
        if task.visible and time.monotonic() - task.last_line >= self.every_s:
            self._line(task)

    def _line(self, task: _Task, done: bool = False) -> None:
        task.last_line = time.monotonic()
        count = f"{task.completed:g}"
        if task.total:
            count += f"/{task.total:g} ({100 * task.completed / task.total:.0f}%)"
        state = "done" if done else "running"
        step(f"{task.description}: {count}, {state}, {elapsed(time.monotonic() - task.started)}")


def progress_bar() -> Progress | LogProgress:
    """A rich progress bar on a terminal; plain periodic lines anywhere else."""
    if not on_terminal():
        return LogProgress()
    return Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


@contextmanager
def heartbeat(label: str, status: Callable[[], str] | None = None, every_s: float = LOG_EVERY_S) -> Iterator[None]:
    """Print "label: still running, T" (plus `status()`, e.g. trials measured) every `every_s` seconds
    while the block runs, from a background thread; the block's own output is untouched."""
    stop = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not stop.wait(every_s):
            extra = ""
            if status is not None:
                try:
                    extra = f"; {status()}"
                except Exception:  # a status probe must never break the step it reports on
                    extra = ""
            step(f"{label}: still running, {elapsed(time.monotonic() - started)}{extra}")

    thread = threading.Thread(target=beat, name=f"heartbeat: {label}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


__all__ = ["LOG_EVERY_S", "LogProgress", "console", "elapsed", "heartbeat", "on_terminal", "progress_bar", "step"]
