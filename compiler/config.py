"""Model recipes (models/*.toml) and hardware targets (targets/*.toml), validated on load.

Every error names the file, the field, what was expected and the nearest valid name, and is a
`ConfigError` (one line, no traceback). Adding a target is adding a file: nothing here lists them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.errors import ConfigError, did_you_mean

ROOT = Path(__file__).resolve().parent.parent
TARGETS_DIR = ROOT / "targets"
MODELS_DIR = ROOT / "models"

FAMILIES = ("transformer", "cnn", "generic", "speech")
# A speech model is two graphs; a target may give each its own pass list ("speech-decoder" = [...]),
# else both take the "speech" list, else "default".
FAMILY_PARTS = ("speech-encoder", "speech-decoder")
RUNTIMES = ("onnxruntime", "onnxruntime-mobile", "tvm", "litert", "coreml")
TUNE_RUNNERS = ("local", "rpc")
PRECISIONS = ("fp32", "fp16", "int8", "int4", "mixed")
SPEED_GATES = ("off", "warn", "fail")
METRICS = ("embedding_cosine", "top1_accuracy", "output_cosine", "wer")
DTYPES = ("float32", "float16", "int64", "int32", "uint8", "int8", "bool")
ORT_LEVELS = ("disabled", "basic", "extended")


@dataclass(frozen=True)
class PassSpec:
    """One entry of a target's pass list: the pass name and its options as written."""

    name: str
    options: dict[str, Any]


@dataclass(frozen=True)
class TargetSpec:
    name: str
    description: str
    path: Path
    platform: dict[str, Any]
    runtime: str
    runtime_min_version: str
    graph_optimization: str  # ORT level saved into the artifact: not tied to the build CPU
    precision: str
    preset: str | None
    passes: dict[str, tuple[PassSpec, ...]]  # family -> pass list; "default" always present
    speed_gate: str
    max_latency_ratio: float
    tune: dict[str, Any]
    channel: str
    emulated_batches: int = 24  # verification batches run under emulation (evenly spaced subset)

    def passes_for(self, family: str) -> tuple[PassSpec, ...]:
        """The pass list for a family ("transformer") or one graph of it ("speech-decoder")."""
        for key in (family, family.partition("-")[0]):
            if key in self.passes:
                return self.passes[key]
        return self.passes["default"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int | str, ...]  # str = a dynamic axis name


@dataclass(frozen=True)
class ModelRecipe:
    name: str
    version: str
    description: str
    path: Path | None  # None for a recipe synthesised from a bare .onnx file
    family: str
    source_kind: str  # "torch" | "huggingface_dir" | "huggingface_package" | "onnx" | "whisper_package" | "whisper_dir"
    source: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    data: dict[str, Any]
    metric: dict[str, Any]
    bench: dict[str, int]  # values for the dynamic axes when measuring latency
    extra: dict[str, Any] = field(default_factory=dict)


class TomlTable:
    """A TOML table with the file and dotted path it came from, for error messages."""

    def __init__(self, data: dict[str, Any], path: Path, where: str = "") -> None:
        self.data, self.path, self.where = data, path, where

    def _at(self, key: str) -> str:
        return f"{self.path}: field '{self.where + key}'"

    def reject_unknown(self, allowed: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                raise ConfigError(f"{self._at(key)} is not a known field; {did_you_mean(key, allowed)}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., choices: tuple | None = None) -> Any:
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self._at(key)} is missing; add it (see BUILD.md)")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ConfigError(f"{self._at(key)} must be {names}, got {value!r}")
        if choices is not None and value not in choices:
            raise ConfigError(f"{self._at(key)} is {value!r}; {did_you_mean(str(value), choices)}")
        return value

    def table(self, key: str, required: bool = False) -> TomlTable:
        value = self.get(key, dict, default=... if required else {})
        return TomlTable(value, self.path, f"{self.where}{key}.")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from error
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: malformed TOML: {error}") from error


def _resolve(name_or_path: str, directory: Path, what: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml":
        if not candidate.is_file():
            raise ConfigError(f"{what} file {candidate} does not exist")
        return candidate
    path = directory / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown {what} '{name_or_path}'; {did_you_mean(name_or_path, available(directory))}")
    return path


def available(directory: Path) -> list[str]:
    """Names of the recipes or targets in `directory` (one TOML file each)."""
    return sorted(p.stem for p in directory.glob("*.toml"))


def load_target(name_or_path: str, check_passes: bool = True) -> TargetSpec:
    """Load and validate targets/<name>.toml (or an explicit .toml path).

    `check_passes=False` defers validating pass names and options (which imports every pass and
    its libraries) to `check_target_passes`, so an up-to-date build can answer without them.
    """
    path = _resolve(name_or_path, TARGETS_DIR, "target")
    top = TomlTable(read_toml(path), path)
    top.reject_unknown(
        ("name", "description", "preset", "platform", "runtime", "precision", "passes", "tune", "verify", "package")
    )
    name = top.get("name", str)
    if name != path.stem:
        raise ConfigError(f"{path}: field 'name' is {name!r} but the file is {path.name}; make them agree")
    platform = top.table("platform", required=True)
    platform.reject_unknown(("os", "arch", "triple", "cpu", "features", "mattr"))
    for key in ("os", "arch"):
        platform.get(key, str)
    runtime = top.table("runtime", required=True)
    runtime.reject_unknown(("name", "min_version", "graph_optimization"))
    verify = top.table("verify")
    verify.reject_unknown(("speed_gate", "max_latency_ratio", "emulated_batches"))
    tune = top.table("tune")
    tune.reject_unknown(("trials", "max_trials_per_task", "runner", "tracker", "key"))
    package = top.table("package")
    package.reject_unknown(("channel",))

    raw_passes = top.get("passes", (list, dict), default=[])
    by_family = raw_passes if isinstance(raw_passes, dict) else {"default": raw_passes}
    if "default" not in by_family:
        raise ConfigError(
            f"{path}: field 'passes' as a table needs a 'default' list "
            f"(used for families not named: {', '.join(FAMILIES)})"
        )
    passes: dict[str, tuple[PassSpec, ...]] = {}
    for family, entries in by_family.items():
        where = f"{path}: passes.{family}" if isinstance(raw_passes, dict) else f"{path}: passes"
        if family not in (*FAMILIES, *FAMILY_PARTS, "default"):
            known = (*FAMILIES, *FAMILY_PARTS, "default")
            raise ConfigError(f"{where}: unknown model family; {did_you_mean(family, known)}")
        passes[family] = _pass_specs(entries, where)

    spec = TargetSpec(
        name=name,
        description=top.get("description", str),
        path=path,
        platform=platform.data,
        runtime=runtime.get("name", str, choices=RUNTIMES),
        runtime_min_version=runtime.get("min_version", str),
        graph_optimization=runtime.get("graph_optimization", str, default="extended", choices=ORT_LEVELS),
        precision=top.get("precision", str, choices=PRECISIONS),
        preset=top.get("preset", str, default=None),
        passes=passes,
        speed_gate=verify.get("speed_gate", str, default="warn", choices=SPEED_GATES),
        max_latency_ratio=float(verify.get("max_latency_ratio", (int, float), default=1.0)),
        emulated_batches=verify.get("emulated_batches", int, default=24),
        tune={
            "trials": tune.get("trials", int, default=0),
            "max_trials_per_task": tune.get("max_trials_per_task", int, default=None),
            "runner": tune.get("runner", str, default="local", choices=TUNE_RUNNERS),
            "tracker": tune.get("tracker", str, default=None),
            "key": tune.get("key", str, default=None),
        },
        channel=package.get("channel", str, default="stable"),
    )
    if spec.emulated_batches < 1:
        raise ConfigError(f"{path}: field 'verify.emulated_batches' must be 1 or more, got {spec.emulated_batches}")
    if spec.tune["runner"] == "rpc" and not (spec.tune["tracker"] and spec.tune["key"]):
        raise ConfigError(
            f'{path}: [tune] runner = "rpc" needs tracker = "HOST:PORT" and key = "<device key>" '
            "(or keep runner local and pass --rpc-tracker and --rpc-key on the command line)"
        )
    if check_passes:
        check_target_passes(spec)
    return spec


def _pass_specs(entries: Any, where: str) -> tuple[PassSpec, ...]:
    if not isinstance(entries, list):
        raise ConfigError(f'{where} must be a list of tables like {{ pass = "fold-constants" }}')
    specs = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("pass"), str):
            raise ConfigError(f"{where}[{index}] must be a table with a 'pass' name, got {entry!r}")
        specs.append(PassSpec(entry["pass"], {k: v for k, v in entry.items() if k != "pass"}))
    return tuple(specs)


def check_target_passes(spec: TargetSpec) -> None:
    """Validate every pass list of a target against the catalogue (names, options, ordering)."""
    from passes.catalogue import validate_pass_list

    for family, specs in spec.passes.items():
        validate_pass_list(specs, f"{spec.path}: passes" + (f".{family}" if len(spec.passes) > 1 else ""))


def _tensor_specs(top: TomlTable, key: str, required: bool) -> tuple[TensorSpec, ...]:
    entries = top.get(key, list, default=... if required else [])
    specs = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(
                f"{top.path}: field '{key}[{index}]' must be a table like "
                '{ name = "x", dtype = "float32", shape = ["batch", 3] }'
            )
        table = TomlTable(entry, top.path, f"{key}[{index}].")
        table.reject_unknown(("name", "dtype", "shape"))
        shape = table.get("shape", list, default=[])
        for dim in shape:
            if not isinstance(dim, int | str) or isinstance(dim, bool):
                raise ConfigError(f"{top.path}: field '{key}[{index}].shape' has {dim!r}; use integers or axis names")
        specs.append(TensorSpec(table.get("name", str), table.get("dtype", str, choices=DTYPES), tuple(shape)))
    return tuple(specs)


def load_recipe(name_or_path: str) -> ModelRecipe:
    """Load and validate models/<name>.toml (or an explicit .toml path)."""
    path = _resolve(name_or_path, MODELS_DIR, "model")
    top = TomlTable(read_toml(path), path)
    top.reject_unknown(
        ("name", "version", "description", "family", "source", "inputs", "outputs", "data", "metric", "bench")
    )
    source = top.table("source", required=True)
    kinds = ("torch", "huggingface_dir", "huggingface_package", "onnx", "whisper_package", "whisper_dir")
    source.reject_unknown(kinds)
    given = [k for k in kinds if k in source.data]
    if len(given) != 1:
        raise ConfigError(f"{path}: field 'source' needs exactly one of {', '.join(kinds)}")
    metric = top.table("metric", required=True)
    metric.get("kind", str, choices=METRICS)
    data = top.table("data")
    bench = top.table("bench")
    for key in bench.data:
        bench.get(key, int)
    recipe = ModelRecipe(
        name=top.get("name", str),
        version=top.get("version", str),
        description=top.get("description", str, default=""),
        path=path,
        family=top.get("family", str, choices=FAMILIES),
        source_kind=given[0],
        source=source.get(given[0], str),
        inputs=_tensor_specs(top, "inputs", required=True),
        outputs=_tensor_specs(top, "outputs", required=False),
        data=data.data,
        metric=metric.data,
        bench=bench.data,
    )
    if recipe.name != path.stem:
        raise ConfigError(f"{path}: field 'name' is {recipe.name!r} but the file is {path.name}; make them agree")
    return recipe
