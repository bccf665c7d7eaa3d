"""Model recipes (models/*.toml) and hardware targets (targets/*.toml), validated on load.

Every error names the file, the field, what was expected and the nearest valid name, and is a
`ConfigError` (one line, no traceback). Names resolve in the workspace first, then among the
built-ins (compiler/workspace.py). A recipe's `[data]`, `[metric]` and `[bench]` tables are
checked by its model family (compiler/families/), a target's pass-list keys against the families'
graphs and its runtime against the backend catalogue: nothing here lists families or runtimes.
"""

from __future__ import annotations

from typing import Any

from compiler import workspace
from compiler.engine.specs import DEFAULT_PASS_LIST, DTYPES, ModelRecipe, TargetSpec, TensorSpec
from compiler.errors import ConfigError
from compiler.tomlfile import TomlTable, read_toml
from passes.spec import PassSpec

TUNE_RUNNERS = ("local", "rpc")
PRECISIONS = ("fp32", "fp16", "int8", "int4", "mixed")
SPEED_GATES = ("off", "warn", "fail")
ORT_LEVELS = ("disabled", "basic", "extended")


def available(kind: str) -> list[str]:
    """Names of the recipes ("models") or targets ("targets") here: the workspace's and the built-ins."""
    return workspace.names(kind)


def load_target(name_or_path: str, check_passes: bool = True) -> TargetSpec:
    """Load and validate a target by name (workspace first, then built-in) or .toml path.

    `check_passes=False` defers validating pass names and options (which imports every pass and
    its libraries) to `check_target_passes`, so an up-to-date build can answer without them.
    """
    from compiler.backends.catalogue import RUNTIMES
    from compiler.families.catalogue import pass_list_keys

    path = workspace.resolve("targets", name_or_path, "target")
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
    by_key = raw_passes if isinstance(raw_passes, dict) else {DEFAULT_PASS_LIST: raw_passes}
    keys = pass_list_keys()
    if DEFAULT_PASS_LIST not in by_key:
        raise ConfigError(
            f"{path}: field 'passes' as a table needs a '{DEFAULT_PASS_LIST}' list "
            f"(used for families and graphs not named: {', '.join(keys)})"
        )
    passes: dict[str, tuple[PassSpec, ...]] = {}
    for key, entries in by_key.items():
        where = f"{path}: passes.{key}" if isinstance(raw_passes, dict) else f"{path}: passes"
        if key not in (*keys, DEFAULT_PASS_LIST):
            from compiler.errors import did_you_mean

            raise ConfigError(f"{where}: unknown model family or graph; {did_you_mean(key, (*keys, 'default'))}")
        passes[key] = _pass_specs(entries, where)

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

    for key, specs in spec.passes.items():
        validate_pass_list(specs, f"{spec.path}: passes" + (f".{key}" if len(spec.passes) > 1 else ""))


def tensor_specs(top: TomlTable, key: str, required: bool) -> tuple[TensorSpec, ...]:
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
    """Load and validate a recipe by name (workspace first, then built-in) or .toml path; its family
    checks [source], [data], [metric] and [bench] before any work is done."""
    from compiler.families.catalogue import FAMILY_NAMES, family

    path = workspace.resolve("models", name_or_path, "model")
    top = TomlTable(read_toml(path), path)
    top.reject_unknown(
        ("name", "version", "description", "family", "source", "inputs", "outputs", "data", "metric", "bench")
    )
    model_family = family(top.get("family", str, choices=FAMILY_NAMES))
    source = top.table("source", required=True)
    kinds = model_family.source_kinds
    source.reject_unknown(kinds)
    given = [k for k in kinds if k in source.data]
    if len(given) != 1:
        raise ConfigError(
            f"{path}: field 'source' needs exactly one of {', '.join(kinds)} "
            f"(what family '{model_family.name}' imports)"
        )
    recipe = ModelRecipe(
        name=top.get("name", str),
        version=top.get("version", str),
        description=top.get("description", str, default=""),
        path=path,
        family=model_family.name,
        source_kind=given[0],
        source=source.get(given[0], str),
        inputs=tensor_specs(top, "inputs", required=True),
        outputs=tensor_specs(top, "outputs", required=False),
        data=top.table("data").data,
        metric=top.table("metric", required=True).data,
        bench=top.table("bench").data,
    )
    if recipe.name != path.stem:
        raise ConfigError(f"{path}: field 'name' is {recipe.name!r} but the file is {path.name}; make them agree")
    model_family.check_recipe(recipe, top)
    return recipe


__all__ = [
    "DTYPES",
    "DEFAULT_PASS_LIST",
    "ModelRecipe",
    "PassSpec",
    "TargetSpec",
    "TensorSpec",
    "available",
    "check_target_passes",
    "load_recipe",
    "load_target",
    "tensor_specs",
]
