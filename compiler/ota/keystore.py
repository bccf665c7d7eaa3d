"""The private TUF signing keys of one OTA repository, kept outside the directory that is served.

One Ed25519 key per signing identity, as an unencrypted PKCS#8 PEM file (mode 0600) named
`<name>.pem` in a keys directory: `root-1`, `root-2`, `targets`, `snapshot`, `timestamp`, and
`target-<hardware target>` for each delegated role. Ed25519 because its signatures are small and
deterministic: a device pays for signature bytes in every metadata file it downloads.

The directory is, in order: the `keys_dir` argument, $EDGEBUILD_REPO_KEYS, else
`$XDG_CONFIG_HOME/edgebuild/repo-keys/<repo basename>-<16 hex of sha256(absolute repo path)>`
(XDG_CONFIG_HOME defaults to ~/.config), so two repositories never share keys by accident.
These are development keys: a production repository keeps root offline (HSM, Sigstore, ...).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.errors import UserError

if TYPE_CHECKING:
    from securesystemslib.signer import CryptoSigner

KEYS_ENV = "EDGEBUILD_REPO_KEYS"
README = """\
DEVELOPMENT signing keys of the edgebuild OTA repository at
    {repo}
created by `edgebuild repo init`. Unencrypted private keys: anyone who can read this directory
can sign updates that every device of this repository will install. Never copy it into the served
repository, a container image or a git repository. A production repository keeps its root keys
offline and its online keys in an HSM or a KMS.
Files: root-1.pem and root-2.pem (root, threshold 2), targets.pem, snapshot.pem, timestamp.pem,
target-<hardware target>.pem (one delegated role per target); retired/ holds keys replaced by
`rotate_key` until you delete them.
"""


class KeystoreError(UserError):
    """A key directory or key file is missing, unreadable or unsafe."""


def default_keys_dir(repo: Path) -> Path:
    """$EDGEBUILD_REPO_KEYS, else the per-repository directory under $XDG_CONFIG_HOME/edgebuild/repo-keys."""
    override = os.environ.get(KEYS_ENV)
    if override:
        return Path(override).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    absolute = repo.expanduser().resolve()
    digest = hashlib.sha256(str(absolute).encode()).hexdigest()[:16]
    return base / "edgebuild" / "repo-keys" / f"{absolute.name}-{digest}"


class Keystore:
    """Signers by name, loaded from (and generated into) one keys directory.

    Needs: a directory outside the served repository. Guarantees: a key file is written with
    mode 0600 under a temporary name and renamed, so a crash never leaves half a key; an existing
    key is never overwritten except by `replace`, which first moves the old one to retired/.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[str, CryptoSigner] = {}

    @classmethod
    def for_repository(cls, repo: Path, keys_dir: Path | None = None) -> Keystore:
        """The keystore of `repo`: `keys_dir` when given, else `default_keys_dir(repo)`."""
        directory = keys_dir.expanduser() if keys_dir is not None else default_keys_dir(repo)
        absolute_repo, absolute_keys = repo.expanduser().resolve(), directory.resolve()
        if absolute_keys == absolute_repo or absolute_repo in absolute_keys.parents:
            raise KeystoreError(
                f"keys directory {directory} is inside the served repository {repo}: choose one outside it"
            )
        return cls(directory)

    def create(self, repo: Path) -> None:
        """Make the directory (0700) with a README saying these are development keys."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        readme = self.directory / "README.txt"
        if not readme.exists():
            readme.write_text(README.format(repo=repo.expanduser().resolve()))

    def path(self, name: str) -> Path:
        """Where the key `name` lives (whether or not it exists)."""
        return self.directory / f"{name}.pem"

    def has(self, name: str) -> bool:
        """Whether a key file for `name` exists."""
        return self.path(name).is_file()

    def signer(self, name: str) -> CryptoSigner:
        """The signer for `name`; KeystoreError when its file is missing, unsafe or not a key."""
        if name in self._cache:
            return self._cache[name]
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        from securesystemslib.signer import CryptoSigner

        path = self.path(name)
        if not path.is_file():
            raise KeystoreError(
                f"no signing key '{name}' in {self.directory}: pass the repository's keys directory "
                f"(--keys-dir or ${KEYS_ENV})"
            )
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeystoreError(f"key file {path} is readable by others (mode {mode:04o}): run `chmod 600 {path}`")
        try:
            signer = CryptoSigner(load_pem_private_key(path.read_bytes(), None))
        except (ValueError, TypeError) as error:
            raise KeystoreError(f"{path} is not an unencrypted PEM private key: {error}") from error
        self._cache[name] = signer
        return signer

    def generate(self, name: str) -> CryptoSigner:
        """Create and store a new Ed25519 key `name`; refuses when one exists."""
        if self.has(name):
            raise KeystoreError(f"{self.path(name)} already exists; refusing to overwrite a signing key")
        return self._store(name, _new_signer())

    def ensure(self, name: str) -> CryptoSigner:
        """The key `name`, generated on first use (delegated roles appear with their first bundle)."""
        return self.signer(name) if self.has(name) else self.generate(name)

    def replace(self, name: str) -> tuple[CryptoSigner, CryptoSigner]:
        """(old, new): a new key for `name`; the old file moves to retired/<name>-<keyid prefix>.pem."""
        old = self.signer(name)
        new = _new_signer()
        retired = self.directory / "retired"
        retired.mkdir(exist_ok=True, mode=0o700)
        os.replace(self.path(name), retired / f"{name}-{old.public_key.keyid[:16]}.pem")
        self._cache.pop(name, None)
        self._store(name, new)
        return old, new

    def _store(self, name: str, signer: CryptoSigner) -> CryptoSigner:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle, temp = tempfile.mkstemp(prefix=f".{name}-", dir=self.directory)
        try:
            os.fchmod(handle, 0o600)
            with os.fdopen(handle, "wb") as file:
                file.write(signer.private_bytes)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self.path(name))
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        self._cache[name] = signer
        return signer


def _new_signer() -> CryptoSigner:
    from securesystemslib.signer import CryptoSigner

    return CryptoSigner.generate_ed25519()
