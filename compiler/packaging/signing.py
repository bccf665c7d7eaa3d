"""Signing with OpenSSF model-signing and ECDSA P-256 keys.

The signature is a Sigstore bundle (DSSE envelope around an in-toto statement listing the sha256
of every payload file). Key roles: a *development* key pair, created by `edgebuild keys init`
under ~/.config/edgebuild/keys (never in the repository or artifacts/), signs local builds; a
*release* key comes from `--key PATH` or EDGEBUILD_SIGNING_KEY.

model-signing's EC signer draws a random ECDSA nonce and serialises its statement in an order
that changes between processes, so its signature bytes would differ on every signing and no bundle
holding one could be reproducible. Our signer writes the same envelope with a canonical statement
and deterministic ECDSA (RFC 6979: the nonce is derived from the key and the message): the same key
and files give the same signature bytes, which model-signing's verifier accepts unchanged.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from compiler.errors import UserError

DEV_PRIVATE = "edgebuild-development-signing.key.pem"
DEV_PUBLIC = "edgebuild-development-signing.pub.pem"
KEY_ENV = "EDGEBUILD_SIGNING_KEY"


class SigningError(UserError):
    """A key is missing, unreadable, of the wrong kind, or would be overwritten."""


def default_key_dir() -> Path:
    """$XDG_CONFIG_HOME/edgebuild/keys, else ~/.config/edgebuild/keys."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgebuild" / "keys"


def init_keys(directory: Path) -> tuple[Path, Path]:
    """Create a development ECDSA P-256 key pair in `directory`; refuse to overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private_path, public_path = directory / DEV_PRIVATE, directory / DEV_PUBLIC
    for path in (private_path, public_path):
        if path.exists():
            raise SigningError(f"{path} already exists; refusing to overwrite a key (delete it yourself first)")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(public_pem)
    (directory / "README.txt").write_text(
        "DEVELOPMENT signing keys made by `edgebuild keys init`. Not for release bundles;\n"
        "never commit them. Release keys are passed with --key PATH or EDGEBUILD_SIGNING_KEY.\n"
    )
    return private_path, public_path


def resolve_key(key: Path | None) -> tuple[Path, bool]:
    """(private key path, is_development): --key, then EDGEBUILD_SIGNING_KEY, then the dev key."""
    chosen = key or (Path(os.environ[KEY_ENV]) if os.environ.get(KEY_ENV) else None)
    if chosen is not None:
        if not chosen.is_file():
            raise SigningError(f"signing key {chosen} does not exist")
        return chosen, False
    from filelock import FileLock

    directory = default_key_dir()
    private_path = directory / DEV_PRIVATE
    directory.parent.mkdir(parents=True, exist_ok=True)
    # Two builds started together must not both create (or read a half-written) development key.
    with FileLock(str(directory.parent / ".edgebuild-keys.lock")):
        if not private_path.is_file():
            init_keys(directory)
    return private_path, True


def public_key_pem(private_key: Path) -> bytes:
    """The PEM public key of `private_key` (for the packaging stamp and messages)."""
    from cryptography.hazmat.primitives import serialization

    key = _load_private(private_key)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_private(private_key: Path):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(private_key.read_bytes(), None)
    except (ValueError, TypeError) as error:
        raise SigningError(f"signing key {private_key}: not an unencrypted PEM private key ({error})") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise SigningError(f"signing key {private_key}: need an ECDSA P-256/384/521 key (model-signing)")
    return key


def _reproducible_signer(private_key: Path) -> Any:
    """model-signing's EC key signer (model-signing==1.1.1) made to give reproducible bytes."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from google.protobuf import json_format
    from model_signing._signing import sign_ec_key, sign_sigstore_pb
    from model_signing._signing import signing as signing_internals
    from sigstore_models import intoto
    from sigstore_models.bundle import v1 as bundle_v1

    class ReproducibleSigner(sign_ec_key.Signer):
        """Same DSSE envelope and Sigstore bundle, but the statement is canonical JSON (model-signing
        builds it from a protobuf map and a set, whose order changes from one process to the next)
        and the ECDSA nonce is derived from key and message (RFC 6979) instead of drawn at random."""

        def sign(self, payload: Any) -> Any:
            statement = json.loads(json_format.MessageToJson(payload.statement.pb))
            serialization = statement["predicate"]["serialization"]
            serialization["ignore_paths"] = sorted(serialization.get("ignore_paths", []))
            raw = json.dumps(statement, sort_keys=True, indent=2).encode()
            key = self._private_key
            algorithm = ec.ECDSA(sign_ec_key.get_ec_key_hash(key.public_key()), deterministic_signing=True)
            signature = intoto.Signature(sig=base64.b64encode(key.sign(sign_sigstore_pb.pae(raw), algorithm)), keyid="")
            envelope = intoto.Envelope(
                payload=base64.b64encode(raw),
                payload_type=signing_internals._IN_TOTO_JSON_PAYLOAD_TYPE,
                signatures=[signature],
            )
            return sign_sigstore_pb.Signature(
                bundle_v1.Bundle(
                    media_type=sign_sigstore_pb._BUNDLE_MEDIA_TYPE,
                    verification_material=self._get_verification_material(),
                    dsse_envelope=envelope,
                )
            )

    return ReproducibleSigner(private_key)


def _signing_config(private_key: Path) -> Any:
    """model-signing's configuration with the reproducible EC key signer."""
    from model_signing import signing

    config = signing.Config()
    config._signer = _reproducible_signer(private_key)
    return config


def sign_directory(directory: Path, private_key: Path, signature: Path) -> None:
    """Sign every file in `directory` with model-signing; write the signature atomically."""
    _load_private(private_key)
    handle, temp = tempfile.mkstemp(prefix=f".{signature.name}-", dir=signature.parent)
    os.close(handle)
    try:
        _signing_config(private_key).sign(directory, temp)
        os.chmod(temp, 0o644)
        os.replace(temp, signature)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def verify_directory(directory: Path, public_key: Path, signature: Path) -> str | None:
    """None when `signature` covers exactly the files in `directory` and was made by `public_key`."""
    from cryptography.exceptions import InvalidSignature
    from google.protobuf.json_format import ParseError
    from model_signing import verifying

    try:
        config = verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    except (ValueError, TypeError, OSError) as error:
        return f"public key {public_key}: unusable ({error})"
    try:
        config.verify(directory, signature)
    except InvalidSignature:
        return f"wrong key or forged signature: {signature.name} does not verify with {public_key}"
    except ValueError as error:
        message = str(error)
        if "Key mismatch" in message:
            return f"wrong key: {signature.name} was signed by a different key than {public_key}"
        message = re.sub(r": Expected 'Digest\(.*?\)', Actual 'Digest\(.*?\)'", " (digest differs)", message)
        return f"signature does not match the bundle's files: {message.splitlines()[0]}"
    except (ParseError, OSError) as error:
        return f"signature {signature.name} is unreadable: {error}"
    return None
