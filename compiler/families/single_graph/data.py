"""Representative data for a recipe: calibration batches, verification batches, a benchmark batch.

Three kinds of source, chosen by the recipe's `[data]` table:
- `representative = "data/sentences.txt"` + `tokenizer = "source"`: text, one sample per line,
  tokenized with the model's own tokenizer; even lines calibrate, odd lines verify (disjoint);
- `train = "module:function"` / `eval = "module:function"`: arrays (x, y) from code shipped with
  the recipe (digits); calibration and fine-tuning use train, verification the held-out eval split;
- `arrays = "samples.npz"` (or `edgebuild build --onnx model.onnx --data samples.npz`): arrays named
  by input, one sample per row along axis 0, in batches of `batch` rows (default 1); even batches
  calibrate, odd ones verify;
- nothing (a bare .onnx): random batches generated from the model's input signature, seeded; an
  integer input that indexes a table (an Embedding's Gather) draws below the table's size
  (index_ranges.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compiler.engine.specs import ModelRecipe, TensorSpec
from compiler.errors import ConfigError, DataError
from compiler.importers.callables import load_callable

Feeds = dict[str, np.ndarray]
DEFAULT_DIM = 16  # stand-in for a dynamic axis that the recipe gives no value for
NUMPY_DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "uint8": np.uint8,
    "int8": np.int8,
    "bool": np.bool_,
}


@dataclass
class Dataset:
    calibration: list[Feeds]
    verify: list[Feeds]
    labels: np.ndarray | None  # verification labels, concatenated over batches (accuracy metrics)
    bench: Feeds  # one batch at the recipe's benchmark shape
    train: tuple[np.ndarray, np.ndarray] | None = None
    eval: tuple[np.ndarray, np.ndarray] | None = None

    def digest(self) -> str:
        """sha256 over every array, in order: part of every downstream cache key."""
        digest = hashlib.sha256()
        groups: list[list[Feeds]] = [self.calibration, self.verify, [self.bench]]
        for group in groups:
            for feeds in group:
                for name in sorted(feeds):
                    digest.update(name.encode() + np.ascontiguousarray(feeds[name]).tobytes())
        for extra in (self.labels, *(self.train or ()), *(self.eval or ())):
            if extra is not None:
                digest.update(np.ascontiguousarray(extra).tobytes())
        return digest.hexdigest()


def _data_path(recipe: ModelRecipe) -> Path:
    assert recipe.path is not None
    return (recipe.path.parent / recipe.data["representative"]).resolve()


def load_dataset(
    recipe: ModelRecipe, tokenizer_dir: Path | None = None, signature: tuple[TensorSpec, ...] | None = None
) -> Dataset:
    """Build the recipe's dataset (see module docstring)."""
    if "representative" in recipe.data:
        return _text_dataset(recipe, tokenizer_dir)
    if "train" in recipe.data or "eval" in recipe.data:
        return _array_dataset(recipe)
    if "arrays" in recipe.data:
        return npz_dataset(recipe)
    bounds = {}
    if recipe.source_kind == "onnx":
        from compiler.families.single_graph.index_ranges import file_index_bounds

        bounds = file_index_bounds(Path(recipe.source))
    return generated_dataset(signature or recipe.inputs, recipe.bench, bounds=bounds)


def arrays_path(recipe: ModelRecipe) -> Path:
    """The recipe's [data] arrays file (relative to the recipe file; as given for a bare ONNX file)."""
    path = Path(recipe.data["arrays"])
    return path if path.is_absolute() or recipe.path is None else (recipe.path.parent / path).resolve()


def npz_dataset(recipe: ModelRecipe) -> Dataset:
    """Batches from an .npz of arrays named by input, one sample per row (see the module docstring)."""
    path = arrays_path(recipe)
    where = f"{recipe.path}: field 'data.arrays'" if recipe.path else f"--data {path}"
    try:
        with np.load(path) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise DataError(
            f"{where}: cannot read {path} as an .npz of arrays ({error}); write it with numpy.savez"
        ) from error
    names = [spec.name for spec in recipe.inputs]
    missing = [name for name in names if name not in arrays]
    if missing:
        raise DataError(f"{where}: {path.name} has no array for input(s) {missing} (it has {sorted(arrays)})")
    rows = {len(arrays[name]) for name in names}
    if len(rows) != 1:
        raise DataError(f"{where}: the arrays have different numbers of rows {sorted(rows)}; one sample per row")
    for spec in recipe.inputs:
        array = arrays[spec.name]
        if array.ndim != len(spec.shape) or any(
            isinstance(d, int) and d != a for d, a in zip(spec.shape[1:], array.shape[1:], strict=False)
        ):
            raise DataError(
                f"{where}: array '{spec.name}' has shape {list(array.shape)}; the input takes {list(spec.shape)} "
                "(samples along axis 0)"
            )
        if array.dtype != NUMPY_DTYPES[spec.dtype]:
            arrays[spec.name] = array.astype(NUMPY_DTYPES[spec.dtype])
    first = recipe.inputs[0].shape[0] if recipe.inputs else 1
    batch = int(recipe.data.get("batch", first if isinstance(first, int) else 1))
    count = rows.pop() // batch
    if count < 2:
        raise DataError(f"{where}: {path.name} holds {count} batch(es) of {batch}; calibration and verification need 2")
    batches = [{name: arrays[name][i * batch : (i + 1) * batch] for name in names} for i in range(count)]
    return Dataset(calibration=batches[0::2], verify=batches[1::2], labels=None, bench=batches[0])


def _text_dataset(recipe: ModelRecipe, tokenizer_dir: Path | None) -> Dataset:
    path = _data_path(recipe)
    where = f"{recipe.path}: field 'data.representative'"
    if not path.is_file():
        raise DataError(f"{where}: file {path} does not exist; point it at a text file, one sample per line")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) < 2:
        raise DataError(
            f"{where}: {path} has {len(lines)} non-empty lines; calibration and verification "
            "need at least 2 (one sample per line)"
        )
    if tokenizer_dir is None:
        raise ConfigError(f"{recipe.path}: text data needs a tokenizer; only Hugging Face sources have one")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    max_length = int(recipe.data.get("max_length", 128))
    names = [spec.name for spec in recipe.inputs]

    def encode(text: str, **padding: Any) -> Feeds:
        encoded = tokenizer(text, truncation=True, max_length=max_length, return_tensors="np", **padding)
        missing = [n for n in names if n not in encoded]
        if missing:
            raise ConfigError(
                f"{recipe.path}: inputs {missing} are not produced by the tokenizer (it gives {sorted(encoded)})"
            )
        return {n: encoded[n].astype(np.int64) for n in names}

    samples = [encode(line) for line in lines]
    bench_batch = recipe.bench.get("batch", 1)
    bench_rows = [encode(lines[i % len(lines)], padding="max_length") for i in range(bench_batch)]
    bench_seq = recipe.bench.get("seq", max_length)
    bench = {n: np.concatenate([r[n] for r in bench_rows])[:, :bench_seq] for n in names}
    return Dataset(calibration=samples[0::2], verify=samples[1::2], labels=None, bench=bench)


def _array_dataset(recipe: ModelRecipe) -> Dataset:
    where = f"{recipe.path}: field 'data'"
    if "train" not in recipe.data or "eval" not in recipe.data:
        raise ConfigError(f"{where} needs both 'train' and 'eval' ('module:function' returning (x, y))")
    train = load_callable(recipe.data["train"], f"{where}.train", recipe.root)()
    held_out = load_callable(recipe.data["eval"], f"{where}.eval", recipe.root)()
    for split, (x, y) in (("train", train), ("eval", held_out)):
        if len(x) == 0 or len(x) != len(y):
            raise DataError(
                f"{where}.{split}: returned {len(x)} inputs and {len(y)} labels; need a non-empty, matching (x, y)"
            )
    name = recipe.inputs[0].name
    batch = int(recipe.data.get("batch", 64))
    samples = int(recipe.data.get("calibration_samples", 128))
    calibration = [{name: train[0][i : i + 1]} for i in range(min(samples, len(train[0])))]
    verify = [{name: held_out[0][i : i + batch]} for i in range(0, len(held_out[0]), batch)]
    bench = {name: np.resize(held_out[0], (recipe.bench.get("batch", 1), *held_out[0].shape[1:]))}
    return Dataset(
        calibration=calibration, verify=verify, labels=np.asarray(held_out[1]), bench=bench, train=train, eval=held_out
    )


def concrete_shape(spec: TensorSpec, dims: dict[str, int]) -> tuple[int, ...]:
    return tuple(
        d if isinstance(d, int) else dims.get(d, 1 if i == 0 else DEFAULT_DIM) for i, d in enumerate(spec.shape)
    )


def generated_dataset(
    signature: tuple[TensorSpec, ...], dims: dict[str, int], batches: int = 16, bounds: dict[str, int] | None = None
) -> Dataset:
    """Seeded random batches shaped by the input signature, for models with no recipe data.

    Integer inputs named like masks get ones and token-type inputs zeros, so a transformer
    exported from Hugging Face still sees a plausible batch; other integer inputs draw from
    [0, bounds[name]) (the table they index), else [0, DEFAULT_BOUND).
    """
    from compiler.families.single_graph.index_ranges import DEFAULT_BOUND

    bounds = bounds or {}
    rng = np.random.default_rng(0)

    def batch(shape_dims: dict[str, int]) -> Feeds:
        feeds = {}
        for spec in signature:
            shape = concrete_shape(spec, shape_dims)
            dtype = NUMPY_DTYPES[spec.dtype]
            if spec.dtype.startswith("float"):
                feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
            elif "mask" in spec.name:
                feeds[spec.name] = np.ones(shape, dtype=dtype)
            elif "type" in spec.name:
                feeds[spec.name] = np.zeros(shape, dtype=dtype)
            elif spec.dtype == "bool":
                feeds[spec.name] = rng.integers(0, 2, shape).astype(dtype)
            else:
                feeds[spec.name] = rng.integers(0, bounds.get(spec.name, DEFAULT_BOUND), shape).astype(dtype)
        return feeds

    return Dataset(
        calibration=[batch(dims) for _ in range(batches)],
        verify=[batch(dims) for _ in range(batches)],
        labels=None,
        bench=batch(dims),
    )
