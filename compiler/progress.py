"""Progress output for long steps, on stderr so it never mixes with machine-readable stdout."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True, highlight=False, soft_wrap=True)


def progress_bar() -> Progress:
    """A rich progress bar; when stderr is not a terminal it stays quiet instead of spamming logs."""
    return Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not sys.stderr.isatty(),
    )


def step(message: str) -> None:
    """One line of build progress."""
    console.print(f"[bold cyan]>[/] {escape(message)}")
