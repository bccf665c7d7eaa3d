"""A static, read-only HTTP server for an OTA repository (development, tests and benchmarks).

GET and HEAD only, with single `Range: bytes=N-` / `bytes=N-M` requests answered 206 so an
interrupted bundle download resumes. Only regular files under REPO are served: no directory
listings, no dot-files (the temporary names that publishing renames into place), no path
that leaves REPO. One log line per request goes to the `edgebuild.ota.server` logger.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LOG = logging.getLogger("edgebuild.ota.server")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_CHUNK = 1 << 16


class _RepositoryHandler(BaseHTTPRequestHandler):
    root: Path  # set on the subclass made by `serve`
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._respond(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._respond(body=False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        LOG.info("%s %s", self.address_string(), format % args)

    def _file(self) -> Path | None:
        parts = [unquote(part) for part in urlsplit(self.path).path.split("/") if part]
        if not parts or any(part.startswith(".") or "/" in part or "\\" in part for part in parts):
            return None
        path = self.root.joinpath(*parts)
        # A symlink inside REPO must not reach a file outside it.
        return path if path.is_file() and path.resolve().is_relative_to(self.root) else None

    def _respond(self, body: bool) -> None:
        path = self._file()
        if path is None:
            self._status(HTTPStatus.NOT_FOUND)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        header = self.headers.get("Range")
        if header is not None:
            match = _RANGE.fullmatch(header.strip())
            if match is None or int(match.group(1)) >= size:
                self._status(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, {"Content-Range": f"bytes */{size}"})
                return
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            if end < start:
                self._status(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, {"Content-Range": f"bytes */{size}"})
                return
        self.send_response(HTTPStatus.PARTIAL_CONTENT if header is not None else HTTPStatus.OK)
        content_type = "application/json" if path.suffix == ".json" else "application/octet-stream"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if header is not None:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:
            with open(path, "rb") as handle:
                handle.seek(start)
                remaining = end - start + 1
                while remaining > 0:
                    chunk = handle.read(min(_CHUNK, remaining))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)

    def _status(self, status: HTTPStatus, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


class RepositoryServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that logs a client hanging up mid-response (a device that stopped reading
    endless or refused data, a killed download) as one line instead of printing a traceback."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            LOG.info("%s: client went away: %s", client_address[0], error)
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


def serve(repo: Path, host: str = "127.0.0.1", port: int = 0) -> tuple[RepositoryServer, threading.Thread]:
    """Start serving `repo` in a daemon thread; port 0 picks a free port (see `server.server_port`).

    Call `server.shutdown()` then `server.server_close()` to stop it.
    """
    handler = type("RepositoryHandler", (_RepositoryHandler,), {"root": repo.resolve()})
    server = RepositoryServer((host, port), handler)
    # A short poll interval makes shutdown() return quickly (tests start and stop many servers).
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"ota-server-{server.server_port}",
        daemon=True,
    )
    thread.start()
    return server, thread


@contextmanager
def serving(repo: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `repo` for the duration of a `with` block; yields the base URL (no trailing slash)."""
    server, thread = serve(repo, host, port)
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
