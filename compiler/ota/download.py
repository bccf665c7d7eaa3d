"""Resumable, bounded downloads of bundle and delta targets.

TUF's ngclient fetches metadata; bundles are large, so the device fetches them itself: into
`<name>.part`, resuming with an HTTP Range request after an interruption, never reading past the
length that signed metadata gives (a server streaming endless data is cut off), with a timeout on
every read. The finished file is checked against the signed length and sha256 before it is renamed
to its final name: nothing unverified ever sits where a verified download is expected.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from compiler.digests import sha256_file
from compiler.errors import UserError

CHUNK = 1 << 16
TIMEOUT_S = 10.0
ATTEMPTS = 3


class DownloadError(UserError):
    """A download failed (HTTP status, timeout, too much data, disk full, digest mismatch)."""


def _fetch_once(url: str, part: Path, length: int, timeout: float) -> None:
    """Append the missing bytes of `url` to `part` (Range from its current size)."""
    import requests

    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
            if response.status_code not in (200, 206):
                raise DownloadError(f"GET {url}: HTTP {response.status_code}")
            if have and response.status_code == 200:
                have = 0  # the server ignored Range: start over
            with open(part, "ab" if have else "wb") as out:
                for chunk in response.iter_content(CHUNK):
                    if have + len(chunk) > length:
                        raise DownloadError(
                            f"GET {url}: the server sent more than the {length} bytes that signed metadata allows"
                        )
                    out.write(chunk)
                    have += len(chunk)
                out.flush()
                os.fsync(out.fileno())
    except requests.RequestException as error:
        raise DownloadError(f"GET {url}: {type(error).__name__}: {error}") from error
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(part.parent).free
            raise DownloadError(
                f"out of space while downloading {url} into {part.parent}: disk full "
                f"({free} bytes free, {length} needed)"
            ) from error
        if error.errno == errno.EFBIG:  # a file-size limit (ulimit -f) stops the write like a full disk
            raise DownloadError(
                f"out of space while downloading {url} into {part.parent}: file size limit reached "
                f"at {part.stat().st_size} of {length} bytes (ulimit -f or quota)"
            ) from error
        raise


def download(url: str, dest: Path, length: int, sha256: str, timeout: float = TIMEOUT_S) -> Path:
    """Fetch `url` into `dest`, verified against the signed `length` and `sha256`; returns `dest`.

    An existing verified `dest` is reused. Interrupted transfers resume from `dest.part` on the
    next attempt (also in a later process). Raises DownloadError naming the cause; a `.part` whose
    content turned out wrong is deleted so the next try starts clean.
    """
    if dest.is_file() and dest.stat().st_size == length and sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last: DownloadError | None = None
    for _ in range(ATTEMPTS):
        try:
            _fetch_once(url, part, length, timeout)
        except DownloadError as error:
            last = error
            if "more than" in str(error) or "out of space" in str(error) or "HTTP 4" in str(error):
                part.unlink(missing_ok=True)
                raise
            continue
        if part.stat().st_size < length:
            last = DownloadError(f"GET {url}: connection closed after {part.stat().st_size} of {length} bytes")
            continue
        break
    else:
        assert last is not None
        raise last
    actual = sha256_file(part)
    if actual != sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(f"GET {url}: sha256 {actual} differs from the signed {sha256} (tampered or corrupt)")
    os.replace(part, dest)
    return dest
