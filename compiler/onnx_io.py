"""ONNX files on disk, with their external data: load, save, list and hash them as one model.

An ONNX file may keep tensors outside the protobuf ("external data": what the dynamo exporter writes
by default, and what any model over protobuf's 2 GB limit must use). Such a model is the .onnx plus
every file its tensors name, relative to the .onnx's directory. Everything here treats the two as one:
- `load(path)` reads the tensors back in (a missing data file is a one-line ModelError);
- `save(model, path)` writes one self-contained .onnx, or, when the tensors would pass the 2 GB
  limit (or `external=True`), the .onnx plus `<name>.data` beside it;
- `data_files(path)` lists the external files; `digest(path)` hashes the .onnx and each of them, so a
  cache key changes when only the weights change.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import onnx
from onnx.external_data_helper import uses_external_data

from compiler.errors import ModelError

PROTOBUF_LIMIT = 2**31  # bytes: protobuf cannot serialise a message this large
# Tensors above this many bytes in total go to a .data file: margin for the graph itself.
EXTERNAL_ABOVE = PROTOBUF_LIMIT - (64 << 20)
SMALL_TENSOR = 1024  # bytes: tensors smaller than this stay inside the .onnx when saving externally


def _tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    from onnx.external_data_helper import _get_all_tensors

    return list(_get_all_tensors(model))


def locations(model: onnx.ModelProto) -> list[str]:
    """The external data locations `model`'s tensors name (relative paths), in first-use order."""
    found: dict[str, None] = {}
    for tensor in _tensors(model):
        if uses_external_data(tensor):
            entry = {item.key: item.value for item in tensor.external_data}
            found[entry.get("location", "")] = None
    return list(found)


def data_files(path: Path) -> list[Path]:
    """The external data files of the ONNX file `path` (none for a self-contained one). Parsing the
    graph is the cost; it is done once per file version (path, size, mtime) in a process, since
    stage keys, sizes and digests all ask."""
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    stat = path.stat()
    return [path.parent / location for location in _locations_of(str(path), stat.st_size, stat.st_mtime_ns)]


@lru_cache(maxsize=256)
def _locations_of(path: str, size: int, mtime_ns: int) -> tuple[str, ...]:
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as error:  # protobuf raises DecodeError, onnx several kinds
        raise ModelError(f"{path}: not a readable ONNX model ({type(error).__name__})") from error
    return tuple(locations(model))


def load(path: Path) -> onnx.ModelProto:
    """`path` with its external data read in; a missing or short data file is a ModelError."""
    missing = [file for file in data_files(path) if not file.is_file()]
    if missing:
        raise ModelError(
            f"{path}: its weights are stored in {missing[0].name}, which is not next to it ({missing[0]}); "
            "copy the .onnx together with its data file(s)"
        )
    try:
        return onnx.load(str(path))
    except Exception as error:  # a truncated data file: onnx raises ValueError or OSError
        raise ModelError(f"{path}: cannot read its external data ({type(error).__name__}: {error})") from error


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of tensor data held in `model` (raw and typed fields; external data not loaded is 0)."""
    total = 0
    for tensor in _tensors(model):
        if tensor.HasField("raw_data"):
            total += len(tensor.raw_data)
        else:
            total += tensor.ByteSize()
    return total


def save(model: onnx.ModelProto, path: Path, external: bool | None = None) -> list[Path]:
    """Write `model` to `path`; the external data files written beside it (none: self-contained).

    `external=None` decides by size: tensors over EXTERNAL_ABOVE bytes go to `<name>.data`.
    """
    if external is None:
        external = tensor_bytes(model) > EXTERNAL_ABOVE
    if not external:
        onnx.save(model, str(path))
        return []
    location = f"{path.name}.data"
    (path.parent / location).unlink(missing_ok=True)  # onnx appends to an existing data file
    copy = onnx.ModelProto()  # saving externally empties the tensors of the model it is given
    copy.CopyFrom(model)
    onnx.save(
        copy,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=SMALL_TENSOR,
    )
    return [path.parent / location]


def check_file(path: Path, what: str) -> None:
    """onnx.checker on the file `path` (for models too large to check in memory); a ModelError."""
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as error:
        raise ModelError(f"{what} wrote an invalid ONNX model: {str(error).strip().splitlines()[0]}") from error


def size_on_disk(path: Path) -> int:
    """Bytes of the ONNX file `path` with its external data files (a file that is no ONNX model: its own)."""
    try:
        external = data_files(path) if path.is_file() else []
    except ModelError:
        external = []
    return path.stat().st_size + sum(file.stat().st_size for file in external if file.is_file())


def digest(path: Path) -> str:
    """sha256 over the .onnx and each external data file (name and bytes), in location order."""
    hasher = hashlib.sha256()
    for file in (path, *data_files(path)):
        hasher.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
    return hasher.hexdigest()


__all__ = [
    "EXTERNAL_ABOVE",
    "check_file",
    "data_files",
    "digest",
    "load",
    "locations",
    "save",
    "tensor_bytes",
]
