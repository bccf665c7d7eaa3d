"""The device side of TUF: verified metadata, channel indexes and pointers through `tuf.ngclient`.

Only metadata and small JSON targets go through the updater here; bundles are large and are
fetched by `compiler.ota.download` with HTTP Range resume, at `target_url(...)`, then checked
against the length and sha256 that `target_info` returns. Every TUF failure becomes one OtaError
line naming what was wrong (expired, bad signature, rollback, download), never a traceback.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuf.api import exceptions
from tuf.api.metadata import Metadata, TargetFile
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

from compiler.errors import UserError

TIMEOUT_S = 10
SMALL_MAX_BYTES = 1 << 20  # a pointer or an index; a bigger "small" target is refused
_ROLE_IN_URL = re.compile(r"/(?:\d+\.)?([^/]+)\.json$")


class OtaError(UserError):
    """The repository could not be trusted or reached: expired, badly signed, rolled back, offline."""


class _CountingFetcher(Urllib3Fetcher):
    """Urllib3Fetcher that counts the bytes it receives and keeps the last body of each metadata role."""

    def __init__(self, timeout_s: int, metadata_url: str) -> None:
        super().__init__(socket_timeout=timeout_s, app_user_agent="edgebuild-device")
        self.metadata_url = metadata_url
        self.received = 0
        self.last_metadata: dict[str, bytes] = {}

    def _fetch(self, url: str) -> Iterator[bytes]:
        chunks = super()._fetch(url)
        role = _ROLE_IN_URL.search(url) if url.startswith(self.metadata_url) else None

        def counted() -> Iterator[bytes]:
            body = bytearray()
            for chunk in chunks:
                self.received += len(chunk)
                if role is not None:
                    body += chunk
                yield chunk
            if role is not None:
                self.last_metadata[role.group(1)] = bytes(body)

        return counted()


class TufClient:
    """A device's view of one OTA repository.

    Needs: a writable `metadata_dir` (the trusted metadata cache), the repository's metadata and
    targets URLs, and the root shipped with the device (`bootstrap_root`; later roots are
    followed through the repository's signed root chain). Guarantees: nothing returned by this
    class was not verified against that root (signatures, thresholds, versions, expiry, hashes).
    """

    def __init__(
        self, metadata_dir: Path, metadata_url: str, targets_url: str, bootstrap_root: bytes, timeout_s: int = TIMEOUT_S
    ) -> None:
        self.metadata_dir = metadata_dir
        self.metadata_url = metadata_url.rstrip("/") + "/"
        self.targets_url = targets_url.rstrip("/") + "/"
        self.bootstrap_root = bootstrap_root
        self.fetcher = _CountingFetcher(timeout_s, self.metadata_url)
        metadata_dir.mkdir(parents=True, exist_ok=True)
        self._updater = self._new_updater()
        self._refreshed = False

    def _new_updater(self) -> Updater:
        with self._errors("loading the bootstrap root"):
            return Updater(
                metadata_dir=str(self.metadata_dir),
                metadata_base_url=self.metadata_url,
                target_base_url=self.targets_url,
                fetcher=self.fetcher,
                config=UpdaterConfig(app_user_agent="edgebuild-device"),
                bootstrap=self.bootstrap_root,
            )

    @property
    def downloaded_bytes(self) -> int:
        """Bytes received from the repository by this client so far (metadata and small targets)."""
        return self.fetcher.received

    def refresh(self) -> None:
        """Update root, timestamp, snapshot and top-level targets (ngclient refreshes once per Updater)."""
        if self._refreshed:
            self._updater = self._new_updater()
        with self._errors("refreshing metadata"):
            self._updater.refresh()
        self._refreshed = True

    def target_info(self, path: str) -> TargetFile | None:
        """The signed TargetFile of `path` from the role trusted for it, or None (walks delegations, bins)."""
        if not self._refreshed:
            self.refresh()
        with self._errors(f"looking up {path}"):
            return self._updater.get_targetinfo(path)

    def fetch_small(self, path: str) -> bytes:
        """The verified bytes of a small target (an index or a pointer); OtaError when it is not listed."""
        info = self.target_info(path)
        if info is None:
            raise OtaError(f"{path} is not in the repository's signed targets at {self.metadata_url}")
        if info.length > SMALL_MAX_BYTES:
            raise OtaError(f"{path} is {info.length} bytes, too large for fetch_small: download it as a bundle")
        with tempfile.TemporaryDirectory(prefix="edgebuild-tuf-") as scratch, self._errors(f"downloading {path}"):
            return Path(self._updater.download_target(info, str(Path(scratch) / "target"))).read_bytes()

    def fetch_json(self, path: str) -> dict[str, Any]:
        """A verified small JSON target, parsed."""
        try:
            document = json.loads(self.fetch_small(path))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise OtaError(f"{path} is signed but not JSON: {error}") from error
        if not isinstance(document, dict):
            raise OtaError(f"{path} is signed but not a JSON object")
        return document

    def channel_index(self, channel: str) -> dict[str, Any]:
        """`channels/<channel>/index.json`: every hardware target serving `channel`, with compatibility fields."""
        return self.fetch_json(f"channels/{channel}/index.json")

    def pointer(self, channel: str, target: str) -> dict[str, Any]:
        """`channels/<channel>/<target>.json`: which version of each model `channel` serves on `target`."""
        document = self.fetch_json(f"channels/{channel}/{target}.json")
        if document.get("channel") != channel or document.get("target") != target:
            raise OtaError(f"pointer channels/{channel}/{target}.json names another channel or target")
        return document

    def target_url(self, target_file: TargetFile) -> str:
        """The URL the updater would fetch: consistent snapshots prefix the file name with its sha256."""
        directory, separator, name = target_file.path.rpartition("/")
        return f"{self.targets_url}{directory}{separator}{target_file.hashes['sha256']}.{name}"

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except exceptions.ExpiredMetadataError as error:
            raise OtaError(f"{action}: {self._expired(str(error))} (freeze attack or stale server)") from error
        except exceptions.UnsignedMetadataError as error:
            raise OtaError(f"{action}: metadata not signed by enough trusted keys: {error}") from error
        except exceptions.BadVersionNumberError as error:
            raise OtaError(f"{action}: metadata version went backwards (rollback attack?): {error}") from error
        except exceptions.LengthOrHashMismatchError as error:
            raise OtaError(f"{action}: downloaded bytes do not match their signed length/hash: {error}") from error
        except exceptions.RepositoryError as error:
            raise OtaError(f"{action}: repository metadata is invalid: {error}") from error
        except exceptions.DownloadHTTPError as error:
            raise OtaError(f"{action}: HTTP {error.status_code} from {self.metadata_url}") from error
        except exceptions.SlowRetrievalError as error:
            raise OtaError(f"{action}: {self.metadata_url} timed out") from error
        except exceptions.DownloadLengthMismatchError as error:
            raise OtaError(f"{action}: server sent more bytes than allowed: {error}") from error
        except exceptions.DownloadError as error:
            cause = error.__cause__ or error
            raise OtaError(f"{action}: cannot download from {self.metadata_url}: {cause}") from error
        except OSError as error:
            raise OtaError(f"{action}: local metadata cache {self.metadata_dir}: {error}") from error

    def _expired(self, message: str) -> str:
        """'<role> metadata expired at <time>' from ngclient's message and the body it just received."""
        match = re.search(r"([\w.-]+?)(?:\.json)? is expired", message)
        role = match.group(1) if match else None
        body = self.fetcher.last_metadata.get(role or "")
        if role is None or body is None:
            return message
        try:
            expires = Metadata.from_bytes(body).signed.expires
        except (ValueError, KeyError, TypeError):
            return f"{role} metadata expired"
        return f"{role} metadata expired at {expires.isoformat()}"


def metadata_bytes_for_lookup(
    metadata_dir: Path, repo_url: str, bootstrap_root: bytes, channel: str, target: str, bundle: str | None = None
) -> int:
    """Bytes a fresh device downloads to refresh, read `channel`'s index and pointer for `target`,
    and look up `bundle` (default: the first bundle the pointer names).
    """
    client = TufClient(metadata_dir, f"{repo_url}/metadata", f"{repo_url}/targets", bootstrap_root)
    client.refresh()
    client.channel_index(channel)
    pointer = client.pointer(channel, target)
    path = bundle or next(iter(pointer["models"].values()))["bundle"]
    if client.target_info(path) is None:
        raise OtaError(f"{path} is not in the repository")
    return client.downloaded_bytes
