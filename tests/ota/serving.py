"""Shared by the end-to-end OTA tests: the CLI in-process, and `edgebuild serve` as a real server."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner

from compiler.cli.main import main
from compiler.shipped import PACKAGES as ROOT


def cli(*args: str) -> str:
    """Run an edgebuild command in this process; its output (exit 0 required)."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@contextmanager
def edgebuild_serve(repo: Path, env: dict[str, str]) -> Iterator[str]:
    """`edgebuild serve --repo REPO --port 0` in a subprocess; its http://127.0.0.1:PORT address."""
    server = subprocess.Popen(
        [sys.executable, "-m", "compiler.cli.main", "serve", "--repo", str(repo), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert server.stderr is not None
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/", server.stderr.readline())
        assert match, "edgebuild serve did not report its address"
        yield match.group(1)
    finally:
        server.terminate()
        server.wait(timeout=10)
