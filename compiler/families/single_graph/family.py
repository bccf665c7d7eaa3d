"""The one-graph families: `transformer`, `cnn` and `generic`.

They share everything but the pass list they take from a target (`passes.transformer`, ...) and
what their passes are told about the graph's architecture (fold-constants keeps attention intact
for a later fusion; fuse picks ORT's BERT fusions or Conv+BatchNorm folding). The recipe's tables:

- [data]: `representative` (a text file, one sample per line, with `tokenizer = "source"` and
  `max_length`), or `train` + `eval` (`module:function` returning (x, y) arrays, with `batch` and
  `calibration_samples`), or `arrays` (an .npz named by input, one sample per row, with `batch`),
  or nothing (seeded random batches from the input signature);
- [metric]: `kind` = embedding_cosine (`pooling`, `min_mean`, `min_each`, `mask_input`,
  `output_index`), top1_accuracy (`max_drop`, `output_index`) or output_cosine (`min_mean`);
- [bench]: a size for each dynamic axis of the inputs ("batch", "seq"), at which latency is timed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from compiler.errors import ConfigError
from compiler.families.base import FamilyBuild, ModelFamily
from compiler.tomlfile import Field, Schema, TomlTable

if TYPE_CHECKING:
    from compiler.backends.base import Backend
    from compiler.engine.cache import Cache
    from compiler.engine.specs import ModelRecipe, TargetSpec
    from passes.base import PassContext

SOURCE_KINDS = ("torch", "huggingface_dir", "huggingface_package", "onnx")
DATA = Schema(
    (
        Field("representative", str, doc="text file, one sample per line (relative to the recipe)"),
        Field("tokenizer", str, choices=("source",)),
        Field("max_length", int, minimum=1),
        Field("train", str, doc="module:function returning (x, y)"),
        Field("eval", str, doc="module:function returning held-out (x, y)"),
        Field("batch", int, minimum=1),
        Field("calibration_samples", int, minimum=1),
        Field("arrays", str, doc=".npz of arrays named by input, one sample per row (relative to the recipe)"),
    )
)
_OUTPUT_INDEX = Field("output_index", int, minimum=0)
METRICS = {
    "embedding_cosine": Schema(
        (
            Field("kind", str),
            Field("pooling", str, choices=("mean",)),
            Field("min_mean", float, minimum=-1, maximum=1),
            Field("min_each", float, minimum=-1, maximum=1),
            Field("mask_input", str),
            _OUTPUT_INDEX,
        )
    ),
    "top1_accuracy": Schema((Field("kind", str), Field("max_drop", float, minimum=0, maximum=100), _OUTPUT_INDEX)),
    "output_cosine": Schema((Field("kind", str), Field("min_mean", float, minimum=-1, maximum=1))),
}


class SingleGraphFamily(ModelFamily):
    """A model that is one ONNX graph, scored by a tensor metric against its FP32 outputs."""

    source_kinds: ClassVar[tuple[str, ...]] = SOURCE_KINDS
    bench: ClassVar[str | None] = "compiler.bench.desktop:bench_recipe"
    # What passes are told about the graph (PassContext.architecture).
    architecture: ClassVar[str] = "other"

    def check_recipe(self, recipe: ModelRecipe, top: TomlTable) -> None:
        data = DATA.check(top.table("data"))
        kinds = [kind for kind in ("representative", "train", "arrays") if kind in data]
        if len(kinds) > 1:
            raise ConfigError(f"{recipe.path}: [data] has {' and '.join(kinds)}; give one kind of data")
        if ("train" in data) != ("eval" in data):
            raise ConfigError(
                f"{recipe.path}: field 'data' needs both 'train' and 'eval' ('module:function' returning (x, y))"
            )
        if "representative" in data and not recipe.source_kind.startswith("huggingface"):
            raise ConfigError(
                f"{recipe.path}: field 'data.representative': text data needs a tokenizer; only Hugging Face "
                "sources have one (give [data] train/eval arrays instead)"
            )
        metric = top.table("metric", required=True)
        kind = metric.get("kind", str, choices=tuple(METRICS))
        METRICS[kind].check(metric)
        if kind == "top1_accuracy" and "eval" not in data:
            raise ConfigError(f"{recipe.path}: metric 'top1_accuracy' needs labelled evaluation data ([data] eval)")
        axes = tuple(dict.fromkeys(d for spec in recipe.inputs for d in spec.shape if isinstance(d, str)))
        Schema(tuple(Field(axis, int, minimum=1, doc="the axis size latency is timed at") for axis in axes)).check(
            top.table("bench")
        )

    def source_files(self, recipe: ModelRecipe) -> list[Path]:
        if recipe.source_kind == "onnx":
            from compiler.onnx_io import data_files

            return [Path(recipe.source), *data_files(Path(recipe.source))]  # the weights are part of the source
        if recipe.source_kind == "torch":
            from compiler.importers.torch_factory import factory_source_files

            return factory_source_files(recipe)
        from compiler.importers.huggingface import model_directory

        return [model_directory(recipe)]

    def data_files(self, recipe: ModelRecipe) -> list[Path]:
        if "representative" in recipe.data and recipe.path is not None:
            return [(recipe.path.parent / recipe.data["representative"]).resolve()]
        if "arrays" in recipe.data:
            from compiler.families.single_graph.data import arrays_path

            return [arrays_path(recipe)]
        return []

    def replay_context(
        self, recipe: ModelRecipe, workdir: Path, architecture: str, transformer_shape: dict[str, int]
    ) -> PassContext:
        """Random batches from the model's signature; fidelity as output cosine against the input model."""
        from compiler.families.single_graph.data import generated_dataset
        from compiler.families.single_graph.evaluator import Evaluator
        from compiler.ort_session import run_batches, session
        from passes.base import PassContext

        dataset = generated_dataset(recipe.inputs, {})
        reference = run_batches(session(Path(recipe.source)), dataset.verify)
        return PassContext(
            workdir=workdir,
            architecture=architecture,
            calibration=lambda: dataset.calibration,
            evaluate=Evaluator(recipe, dataset, reference),
            fingerprint="replay",
            transformer_shape=transformer_shape,
        )

    def start(self, recipe: ModelRecipe, target: TargetSpec, backend: Backend, cache: Cache) -> FamilyBuild:
        from compiler.families.single_graph.build import SingleGraphBuild

        return SingleGraphBuild(recipe, target, backend, cache, self.architecture)


class TransformerFamily(SingleGraphFamily):
    """Transformer encoders (BERT-like): attention kept intact for ORT's fusions."""

    name: ClassVar[str] = "transformer"
    architecture: ClassVar[str] = "attention"


class CnnFamily(SingleGraphFamily):
    """Convolutional networks: Conv+BatchNorm folding, static INT8."""

    name: ClassVar[str] = "cnn"
    architecture: ClassVar[str] = "convolution"


class GenericFamily(SingleGraphFamily):
    """Any other one-graph model (a bare ONNX file without convolutions, say)."""

    name: ClassVar[str] = "generic"


CONVOLUTIONS = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv"})  # 1-D, 2-D and 3-D alike


ATTENTION = frozenset({"Attention", "MultiHeadAttention", "GroupQueryAttention"})


def family_for_onnx(op_types: set[str]) -> str:
    """The family a bare ONNX file builds as: cnn when it convolves (or deconvolves) and has no
    attention (a ViT's patch embedding is a Conv, but its weights are in MatMuls: dynamic INT8
    suits it), else generic."""
    attention = bool(op_types & ATTENTION) or {"MatMul", "Softmax"} <= op_types
    return CnnFamily.name if op_types & CONVOLUTIONS and not attention else GenericFamily.name


__all__ = ["CnnFamily", "GenericFamily", "SingleGraphFamily", "TransformerFamily", "family_for_onnx"]
