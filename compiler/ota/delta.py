"""Binary deltas between two versions of a bundle: zstd "patch-from" with long-distance matching.

The old bundle is the compression dictionary (raw content, like `zstd --patch-from OLD --long`),
so the patch holds only what changed. A patch is never trusted on its own: `apply_delta` checks the
patched result against the length and sha256 of the signed full bundle before anything uses it,
and writes to a temporary name that is renamed only when the check passes.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path

from compiler.errors import UserError

LEVEL = 19
MIN_WINDOW_LOG = 20
MAX_WINDOW_LOG = 31  # zstd's limit on 64-bit hosts (2 GiB)


class DeltaError(UserError):
    """A patch could not be made or applied, or its result is not the expected bundle."""


def window_log(old_size: int, new_size: int) -> int:
    """Smallest window that lets a match reach from the end of `new` back to the start of `old`."""
    needed = max(old_size + new_size, 1 << MIN_WINDOW_LOG)
    log = math.ceil(math.log2(needed))
    if log > MAX_WINDOW_LOG:
        raise DeltaError(f"bundles of {old_size + new_size} bytes are too large for a zstd delta window")
    return log


def _params(old_size: int, new_size: int):  # type: ignore[no-untyped-def]
    import zstandard

    return zstandard.ZstdCompressionParameters.from_level(
        LEVEL, window_log=window_log(old_size, new_size), enable_ldm=True, threads=0
    )


def make_delta(old: Path, new: Path, out: Path) -> int:
    """Write the patch that turns `old` into `new` to `out` (atomically); returns its size in bytes."""
    import zstandard

    old_bytes, new_bytes = old.read_bytes(), new.read_bytes()
    dictionary = zstandard.ZstdCompressionDict(old_bytes, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    compressor = zstandard.ZstdCompressor(
        dict_data=dictionary, compression_params=_params(len(old_bytes), len(new_bytes))
    )
    patch = compressor.compress(new_bytes)
    _write_atomic(out, patch)
    return len(patch)


def apply_delta(old: Path, patch: Path, out: Path, expected_length: int, expected_sha256: str) -> None:
    """Rebuild the new bundle from `old` + `patch` into `out`, only if it matches the signed digest.

    Raises DeltaError (and leaves no `out`) when the patch is corrupt, was made from another base,
    would expand beyond `expected_length`, or gives bytes whose sha256 is not `expected_sha256`.
    """
    import zstandard

    old_bytes = old.read_bytes()
    dictionary = zstandard.ZstdCompressionDict(old_bytes, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    decompressor = zstandard.ZstdDecompressor(
        dict_data=dictionary, max_window_size=1 << window_log(len(old_bytes), expected_length)
    )
    try:
        # max_output_size bounds memory when a hostile patch claims an endless output.
        data = decompressor.decompress(patch.read_bytes(), max_output_size=expected_length)
    except zstandard.ZstdError as error:
        raise DeltaError(f"delta {patch.name} does not apply to {old.name}: {error}") from error
    if len(data) != expected_length:
        raise DeltaError(f"delta {patch.name} gives {len(data)} bytes, the signed bundle has {expected_length}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise DeltaError(f"delta {patch.name} gives sha256 {digest}, the signed bundle has {expected_sha256}")
    _write_atomic(out, data)


def _write_atomic(dest: Path, data: bytes) -> None:
    handle, temp = tempfile.mkstemp(prefix=f".{dest.name}-", dir=dest.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, dest)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
