"""The stages of a speech build: import -> passes per graph -> compile per graph -> WER gate.

A speech model is two graphs (encoder, decoder step with a KV cache) and a generation loop, so
it runs its own sequence on the same machinery as every other build: each stage goes through the
content-addressed cache with `stage_key`, passes through `run_graph_passes`, compilation through
`compile_stage`. What differs is what is scored: transcripts, not tensors (evaluate.py).

1. import (importer.py): the CTranslate2 (or transformers) checkpoint becomes a transformers
   Whisper model, checked against ctranslate2's own greedy tokens; both graphs are exported; the
   FP32 PyTorch model transcribes every clip (the reference); the export must reproduce it.
2. passes: the target's list for each graph (`passes.speech-encoder`, `passes.speech-decoder`,
   else `passes.speech`, else `passes.default`); each pass row is scored on `pass_clips` clips
   with that graph swapped into the FP32 pair.
3. compile: each graph for the target's runtime.
4. verify: the compiled pair transcribes every clip (a spaced subset under emulation); the build
   fails when its WER is more than `[metric] max_increase` points over FP32's on the same clips.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from compiler.cache import Cache, canonical_json, sha256_bytes, sha256_file, sha256_tree, stage_key, tool_versions
from compiler.config import ROOT, ModelRecipe, TargetSpec
from compiler.errors import BudgetError, ConfigError, DataError
from compiler.importers.torch_export import OPSET
from compiler.progress import step
from compiler.speech.evaluate import THREADS, Transcripts, score_wer, spaced, transcribe
from compiler.speech.generate import GenerationConfig, OrtParts, Parts
from compiler.speech.importer import Decoder
from compiler.speech.part_context import PartContext
from compiler.speech.testset import Clip
from compiler.verify import speed_verdict
from passes.base import Fidelity, GraphPass, PassContext, TorchPass
from passes.catalogue import instantiate

PARTS = ("encoder", "decoder")
RUNTIMES = ("onnxruntime", "onnxruntime-mobile", "tvm")
SPEECH_CODE = ROOT / "compiler" / "speech"
# What each cached stage's result depends on (so editing, say, the bench re-runs nothing).
LOOP_CODE = [SPEECH_CODE / name for name in ("generate.py", "evaluate.py", "features.py", "wer.py")]
IMPORT_CODE = [
    *LOOP_CODE,
    SPEECH_CODE / "importer.py",
    SPEECH_CODE / "export.py",
    ROOT / "compiler" / "importers" / "ctranslate2_whisper.py",
    ROOT / "compiler" / "importers" / "torch_export.py",  # onnx_export
]
SCORE_CODE = [*LOOP_CODE, SPEECH_CODE / "part_context.py"]
VERIFY_CODE = [
    *LOOP_CODE,
    SPEECH_CODE / "tvm_parts.py",
    ROOT / "templates" / "whisper_runner.cc",
    ROOT / "templates" / "tvm_npy.h",
]
CONFIG_FILES = ("tokenizer.json", "generation_config.json", "preprocessing.json")


@dataclass(frozen=True)
class SpeechSettings:
    """The recipe's [data] and [bench] tables for a speech model, validated."""

    sentences: Path
    snrs: tuple[int, ...]
    limit: int | None  # first N sentences only (tests, quick looks)
    max_tokens: int  # decoder cache capacity, prompt included
    calibration_clips: int
    pass_clips: int  # clips scored per pass row
    emulated_clips: int  # clips verified under qemu-aarch64 (at most the target's emulated_batches)
    bench_clips: int  # clean clips timed for the host real-time factor

    @classmethod
    def of(cls, recipe: ModelRecipe) -> SpeechSettings:
        data, where = recipe.data, f"{recipe.path}: field 'data."
        if "sentences" not in data:
            raise ConfigError(f"{where}sentences' is missing; a speech recipe names its sentence file")
        snrs = data.get("snrs", [20, 10])
        if not isinstance(snrs, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in snrs):
            raise ConfigError(f"{where}snrs' must be a list of integers (dB), got {snrs!r}")
        values = {}
        defaults = (
            ("limit", None),
            ("max_tokens", 128),
            ("calibration_clips", 8),
            ("pass_clips", 24),
            ("emulated_clips", 6),
        )
        for key, default in defaults:
            value = data.get(key, default)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"{where}{key}' must be a positive integer, got {value!r}")
            values[key] = value
        base = recipe.path.parent if recipe.path else ROOT
        return cls(
            sentences=(base / data["sentences"]).resolve(),
            snrs=tuple(snrs),
            bench_clips=int(recipe.bench.get("clips", 8)),
            **values,
        )


def _fingerprint(*parts: Any) -> str:
    return sha256_bytes(canonical_json(list(parts)).encode())


def static_shapes(part: str, config: GenerationConfig) -> dict[str, list[int]]:
    """Each graph's inputs at batch 1: what TVM compiles for and what the memory estimate sizes."""
    if part == "encoder":
        return {"mel": [1, 80, 3000]}
    cache = [config.layers, 1, config.max_tokens, config.d_model]
    cross = [config.layers, 1, 1500, config.d_model]
    return {"tokens": [1, 1], "position": [1], "self_k": cache, "self_v": cache, "cross_k": cross, "cross_v": cross}


def artifact_parts(artifacts: dict[str, Path]) -> Parts | None:
    """Parts that run the compiled graphs in this process; None for libraries for another ISA."""
    from compiler.runtime import runs_on_host

    if all(path.suffix in (".onnx", ".ort") for path in artifacts.values()):
        return OrtParts(artifacts["encoder"], artifacts["decoder"], THREADS)
    if not all(runs_on_host(path) for path in artifacts.values()):
        return None
    from compiler.speech.tvm_parts import TvmParts

    return TvmParts(artifacts["encoder"], artifacts["decoder"], THREADS)


def _row(stage: str, kind: str, paths: list[Path], entry: dict[str, Any], fidelity: Fidelity) -> dict[str, Any]:
    """A row of the build report, in the shape profile_stages gives other models' rows. Speech rows
    are not timed one by one: the FP32 pair and the build are (`latency`, filled in afterwards)."""
    return {
        "stage": stage,
        "kind": kind,
        "path": str(paths[-1]),
        "bytes": sum(p.stat().st_size for p in paths),
        "nodes": None,
        "fidelity": fidelity.__dict__,
        "latency_ms": None,
        "latency_ratio": None,
        "latency_note": "not timed",
        **entry,
    }


@dataclass
class Compiled:
    """The compiled graphs and what the bundle needs besides them."""

    artifacts: dict[str, Path] = field(default_factory=dict)
    last_graph: dict[str, Path] = field(default_factory=dict)  # the last ONNX of each graph
    extra_files: dict[str, tuple[Path, str]] = field(default_factory=dict)  # name -> (path, role)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)


class SpeechBuild:
    """One speech build: the recipe's test set and reference, and the stages run over them."""

    def __init__(self, recipe: ModelRecipe, target: TargetSpec, cache: Cache) -> None:
        from compiler.speech.testset import build_testset, testset_digest

        if target.runtime not in RUNTIMES:
            raise ConfigError(
                f"target '{target.name}' ({target.runtime}) does not build speech models: its converter path is "
                f"not built for encoder-decoder generation (BUILD.md 'Speech models'); use a target on "
                f"{', '.join(RUNTIMES)}, e.g. desktop-int8 or arm64-int8"
            )
        if recipe.metric.get("kind") != "wer":
            raise ConfigError(f'{recipe.path}: a speech recipe is scored by word error rate: set [metric] kind = "wer"')
        self.recipe, self.target, self.cache = recipe, target, cache
        self.settings = SpeechSettings.of(recipe)
        self.passes = {part: self._passes(part) for part in PARTS}
        step(f"loading the speech test set for {recipe.name}")
        settings = self.settings
        self.clips = build_testset(settings.sentences, cache.root / "speech-testset", settings.snrs, settings.limit)
        if len(self.clips) < 2:
            raise DataError(f"{recipe.path}: the speech test set has {len(self.clips)} clips; it needs at least 2")
        self.data_digest = _fingerprint(testset_digest(settings.sentences, settings.snrs), settings.limit)

    def _passes(self, part: str) -> list[GraphPass]:
        passes = instantiate(self.target.passes_for(f"speech-{part}"), f"{self.target.path}: passes (speech {part})")
        torch_passes = [p.name for p in passes if isinstance(p, TorchPass)]
        if torch_passes:
            raise ConfigError(
                f"{self.target.path}: PyTorch-level passes ({', '.join(torch_passes)}) are not built for speech "
                "models; give the target a 'speech' pass list without them"
            )
        return [p for p in passes if isinstance(p, GraphPass)]

    # -- import -------------------------------------------------------------------------------

    def import_stage(self, source_digest: str) -> Any:
        from compiler.speech.importer import import_whisper

        key = stage_key(
            "import-speech",
            inputs={"source": source_digest, "data": self.data_digest},
            config={"source": [self.recipe.source_kind, self.recipe.source], "max_tokens": self.settings.max_tokens},
            code=sha256_tree(IMPORT_CODE),
            tools=tool_versions("torch", "transformers", "onnx", "onnxruntime", "ctranslate2", "tokenizers"),
        )

        def run(directory: Path) -> dict[str, Any]:
            started = time.perf_counter()
            meta = import_whisper(self.recipe, self.settings.max_tokens, self.clips, directory, THREADS)
            return {**meta, "_seconds": round(time.perf_counter() - started, 2)}

        imported = self.cache.get_or_build("import", key, run)
        if imported.hit:
            step("import: cached")
        self.imported = imported
        self.fp32 = {part: imported.path / f"{part}.onnx" for part in PARTS}
        self.config = GenerationConfig.from_json((imported.path / "generation_config.json").read_text())
        self.reference: dict[str, list[int]] = json.loads((imported.path / "reference.json").read_text())
        self.decode = Decoder(imported.path / "tokenizer.json")
        return imported

    def score(self, tokens: dict[str, list[int]], clips: list[Clip]) -> Fidelity:
        return score_wer(self.recipe.metric, clips, tokens, self.reference, self.decode)

    # -- passes and compilation -----------------------------------------------------------------

    def passes_and_compile(self, part: str, compiled: Compiled) -> list[dict[str, Any]]:
        """Run `part`'s passes and compile it; returns the report rows of its passes."""
        from compiler.stages import compile_stage, run_graph_passes

        settings, workdir = self.settings, self.cache.scratch()
        part_ctx = PartContext(
            part,
            self.fp32,
            self.clips,
            self.reference,
            self.config,
            settings.calibration_clips,
            settings.pass_clips,
            self.recipe.metric,
            self.decode,
            workdir,
        )
        reference_digest = sha256_file(self.imported.path / "reference.json")
        context = PassContext(
            workdir=workdir,
            model_family="speech",
            calibration=part_ctx.calibration,
            evaluate=part_ctx.evaluate,
            fingerprint=_fingerprint(
                "speech-context",
                part,
                self.data_digest,
                reference_digest,
                self.recipe.metric,
                settings.pass_clips,
                settings.calibration_clips,
            ),
        )
        rows, current, done = run_graph_passes(
            self.passes[part], self.fp32[part], context, self.cache, "speech", [], part
        )
        report = []
        for row in rows:
            path = Path(row["path"])
            entry = {k: row[k] for k in ("cached", "seconds", "stats", "options")}
            report.append(_row(f"{part}: {row['stage']}", "pass", [path], entry, self._score_pass(part_ctx, path)))
        shapes = static_shapes(part, self.config)
        entry = compile_stage(self.recipe, self.target, current, shapes, self.cache, done, lambda: {}, label=part)
        compiled.artifacts[part] = entry.path / entry.meta["artifact"]
        compiled.last_graph[part] = current
        compiled.meta[part] = entry.meta
        for name, role in sorted(entry.meta.get("extra_files", {}).items()):
            compiled.extra_files[f"{part}.{name}"] = (entry.path / name, role)
        return report

    def _score_pass(self, part_ctx: PartContext, model: Path) -> Fidelity:
        """A pass row's WER on `pass_clips` clips, cached by the graph's bytes."""
        other = "decoder" if part_ctx.part == "encoder" else "encoder"
        key = stage_key(
            "score-speech-pass",
            inputs={"model": sha256_file(model), "other": sha256_file(self.fp32[other]), "data": self.data_digest},
            config={"part": part_ctx.part, "metric": self.recipe.metric, "clips": len(part_ctx.scored)},
            code=sha256_tree(SCORE_CODE),
            tools=tool_versions("onnxruntime", "jiwer", "whisper-normalizer"),
        )

        def measure(_: Path) -> dict[str, Any]:
            step(f"{part_ctx.part}: scoring {model.parent.parent.name} on {len(part_ctx.scored)} clips")
            return part_ctx.score(model).__dict__

        return Fidelity(**self.cache.get_or_build("score-speech", key, measure).meta)

    # -- verification and timing ------------------------------------------------------------------

    def verify(self, artifacts: dict[str, Path]) -> tuple[Fidelity, bool, Path]:
        """The WER gate on the compiled pair: every clip on this host, a spaced subset under emulation.
        Returns the fidelity, whether it came from the cache, and the per-clip transcripts file."""
        from compiler.runtime import runs_on_host

        emulated = not all(runs_on_host(path) for path in artifacts.values())  # decided without loading them
        limit = min(self.target.emulated_batches, self.settings.emulated_clips) if emulated else None
        chosen = [self.clips[i] for i in spaced(len(self.clips), limit)]
        key = stage_key(
            "verify-speech",
            inputs={**{part: sha256_file(path) for part, path in artifacts.items()}, "data": self.data_digest},
            config={"metric": self.recipe.metric, "clips": [clip.id for clip in chosen], "threads": THREADS},
            code=sha256_tree(VERIFY_CODE),
            tools=tool_versions("onnxruntime", "apache-tvm", "jiwer", "whisper-normalizer"),
        )

        def measure(directory: Path) -> dict[str, Any]:
            where = "under qemu-aarch64" if emulated else "on this host"
            step(f"verifying: transcribing {len(chosen)} of {len(self.clips)} clips with the compiled graphs {where}")
            tokens = self._transcribe(artifacts, chosen)
            fidelity = self.score(tokens, chosen)
            if len(chosen) < len(self.clips):
                summary = f"{fidelity.summary} (on {len(chosen)} of {len(self.clips)} clips, run under qemu-aarch64)"
                fidelity = replace(fidelity, summary=summary)
            transcripts = {
                clip.id: {
                    "reference": clip.text,
                    "fp32": self.decode(self.reference[clip.id]),
                    "build": self.decode(tokens[clip.id]),
                }
                for clip in chosen
            }
            (directory / "transcripts.json").write_text(json.dumps(transcripts, indent=1, sort_keys=True) + "\n")
            return {"fidelity": fidelity.__dict__}

        entry = self.cache.get_or_build("verify-speech", key, measure)
        if entry.hit:
            step("verify: cached")
        return Fidelity(**entry.meta["fidelity"]), entry.hit, entry.path / "transcripts.json"

    def _transcribe(self, artifacts: dict[str, Path], clips: list[Clip]) -> dict[str, list[int]]:
        parts = artifact_parts(artifacts)
        if parts is not None:
            return transcribe(parts, clips, self.config, "verifying").tokens
        from compiler.speech.tvm_parts import transcribe_under_qemu

        return transcribe_under_qemu(artifacts["encoder"], artifacts["decoder"], clips, self.config)

    def latency(self, artifacts: dict[str, Path]) -> dict[str, Any]:
        """Real-time factor of the build and of the FP32 ONNX pair on the same clean clips, interleaved,
        recorded in the host ledger (the record carries the first measurement of these bytes here)."""
        from compiler.measurements import host_fingerprint, recall_or_measure

        parts = artifact_parts(artifacts)
        if parts is None:
            return {
                "artifact_ms": None,
                "ort_fp32_ms": None,
                "ratio_vs_ort_fp32": None,
                "threads": THREADS,
                "input_shapes": {},
                "note": "not measured: the graphs are for another ISA and ran under qemu-aarch64 only to be "
                "verified; emulated timings say nothing about the device",
            }
        clean = [clip for clip in self.clips if clip.noise == "clean"] or self.clips
        timed = [clean[i] for i in spaced(len(clean), self.settings.bench_clips)]
        subject = {
            "what": "speech-rtf",
            "models": [sha256_file(p) for p in (*self.fp32.values(), *artifacts.values())],
            "clips": [clip.id for clip in timed],
            "threads": THREADS,
            "code": sha256_tree(VERIFY_CODE),
            "tools": tool_versions("onnxruntime", "apache-tvm", "numpy"),
        }

        def measure() -> dict[str, Any]:
            step(f"timing the FP32 pair and the build on {len(timed)} clips (real-time factor)")
            runners = {"fp32": OrtParts(self.fp32["encoder"], self.fp32["decoder"], THREADS), "artifact": parts}
            runs: dict[str, list[Transcripts]] = {name: [] for name in runners}
            for runner in runners.values():
                transcribe(runner, timed[:1], self.config)  # warm-up
            for clip in timed:  # interleaved: the machine's load hits both alike
                for name, runner in runners.items():
                    runs[name].append(transcribe(runner, [clip], self.config))
            audio = sum(clip.seconds for clip in timed)
            return {
                name: {
                    "rtf": sum(t.seconds for t in done) / audio,
                    "ms_per_clip": 1000 * sum(t.seconds for t in done) / len(done),
                }
                for name, done in runs.items()
            }

        measured = recall_or_measure(subject, measure)
        return {
            "artifact_ms": measured["artifact"]["ms_per_clip"],
            "ort_fp32_ms": measured["fp32"]["ms_per_clip"],
            "ratio_vs_ort_fp32": measured["artifact"]["ms_per_clip"] / measured["fp32"]["ms_per_clip"],
            "real_time_factor": measured["artifact"]["rtf"],
            "fp32_real_time_factor": measured["fp32"]["rtf"],
            "threads": THREADS,
            "input_shapes": {"mel": [1, 80, 3000]},
            "host": host_fingerprint()["cpu"] or "build host",
            "note": f"greedy transcription of {len(timed)} clean clips, per clip (encoder + every decoder step); "
            "first measurement of these model bytes on this host (shared, noisy: compare ratios)",
        }


def run_speech_stages(recipe: ModelRecipe, target: TargetSpec, cache: Cache) -> Any:
    """Every stage of a speech build; returns the same StagesResult as other builds."""
    from compiler.pipeline import source_files

    build = SpeechBuild(recipe, target, cache)
    source_digest = sha256_tree(source_files(recipe))
    imported = build.import_stage(source_digest)
    reference = build.score(build.reference, build.clips)
    step(f"FP32 PyTorch reference: WER {reference.detail['wer']:.2f}% on {len(build.clips)} clips")
    import_stats = {k: imported.meta.get(k) for k in ("ctranslate2_check", "export_check", "parameters")}
    import_entry = {"cached": imported.hit, "seconds": imported.meta.get("_seconds", 0.0), "stats": import_stats}
    stages = [_row("import", "import", list(build.fp32.values()), import_entry, reference)]
    compiled = Compiled()
    for part in PARTS:
        stages += build.passes_and_compile(part, compiled)
    final, hit, transcripts = build.verify(compiled.artifacts)
    compile_entry = {
        "cached": hit,
        "seconds": round(sum(compiled.meta[p]["_seconds"] for p in PARTS), 2),
        "stats": {part: _compile_stats(compiled.meta[part]) for part in PARTS},
    }
    stages.append(
        _row(f"compile ({target.runtime})", "compile", list(compiled.artifacts.values()), compile_entry, final)
    )
    if not final.within_budget:
        raise BudgetError(
            f"{recipe.name} for {target.name}: {final.summary}; over the WER budget "
            f"(per-clip transcripts: {transcripts})"
        )
    latency = build.latency(compiled.artifacts)
    if latency["ratio_vs_ort_fp32"] is not None:  # the two measured rows: the FP32 pair and the build
        stages[0].update(latency_ms=latency["ort_fp32_ms"], latency_ratio=1.0)
        stages[-1].update(latency_ms=latency["artifact_ms"], latency_ratio=latency["ratio_vs_ort_fp32"])
    else:
        stages[-1]["latency_note"] = "n/a (emulated)"
    speed = speed_verdict(target.speed_gate, target.max_latency_ratio, latency["ratio_vs_ort_fp32"], target.name)
    return _result(build, compiled, stages, final, latency, [speed] if speed else [], source_digest)


def _compile_stats(meta: dict[str, Any]) -> dict[str, Any]:
    keys = ("converter", "toolchain", "ops", "tensor_dtypes", "target", "tuning", "isa_features", "execution")
    return {key: meta[key] for key in keys if key in meta}


def _bundle_files(build: SpeechBuild, compiled: Compiled) -> dict[str, tuple[Path, str]]:
    """name -> (path, manifest role) of every file the bundle carries."""
    from compiler.runtime import runs_on_host

    files = {f"{part}{path.suffix}": (path, "artifact") for part, path in compiled.artifacts.items()}
    files.update({name: (build.imported.path / name, "config") for name in CONFIG_FILES})
    files.update(compiled.extra_files)
    if any(path.suffix == ".so" and not runs_on_host(path) for path in compiled.artifacts.values()):
        from compiler.backends import aarch64
        from compiler.speech.tvm_parts import RUNNER_SOURCE

        files.update(aarch64.device_files())  # the TVM runtime, tvm_runner.cc and tvm_npy.h
        files[RUNNER_SOURCE.name] = (RUNNER_SOURCE, "source")
    return files


def _signature(compiled: Compiled, kind: str) -> list[dict[str, Any]]:
    """Both graphs' inputs or outputs, named "encoder.mel", "decoder.tokens", ... (a library's from its
    last ONNX graph)."""
    from compiler.runtime import session

    entries = []
    for part in PARTS:
        artifact = compiled.artifacts[part]
        sess = session(artifact if artifact.suffix in (".onnx", ".ort") else compiled.last_graph[part])
        values = sess.get_inputs() if kind == "inputs" else sess.get_outputs()
        entries += [{"name": f"{part}.{v.name}", "dtype": v.type, "shape": v.shape} for v in values]
    return entries


def _memory(build: SpeechBuild, compiled: Compiled) -> dict[str, Any]:
    from compiler.packaging.manifest import estimate_memory

    shapes = {part: static_shapes(part, build.config) for part in PARTS}
    estimates = [estimate_memory(compiled.last_graph[part], shapes[part]) for part in PARTS]
    weights = sum(path.stat().st_size for path in compiled.artifacts.values())
    activations = sum(estimate["activations_bytes"] for estimate in estimates)
    return {
        "method": estimates[0]["method"],
        "weights_bytes": weights,
        "activations_bytes": activations,
        "total_bytes": weights + activations,
        "input_shapes": {f"{part}.{name}": shape for part in PARTS for name, shape in shapes[part].items()},
    }


def _result(
    build: SpeechBuild,
    compiled: Compiled,
    stages: list[dict[str, Any]],
    final: Fidelity,
    latency: dict[str, Any],
    warnings: list[str],
    source_digest: str,
) -> Any:
    from compiler.stages import StagesResult

    bundle = _bundle_files(build, compiled)
    files = [
        {
            "name": name,
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            **({"role": role} if role != "artifact" else {}),
        }
        for name, (path, role) in sorted(bundle.items())
    ]
    size = sum(path.stat().st_size for path in compiled.artifacts.values())
    fp32_size = stages[0]["bytes"]
    settings, config = build.settings, build.config
    speech = {
        "graphs": {part: f"{part}{compiled.artifacts[part].suffix}" for part in PARTS},
        "tokenizer": "tokenizer.json",
        "generation_config": "generation_config.json",
        "preprocessing": json.loads((build.imported.path / "preprocessing.json").read_text()),
        "decoding": f"greedy; the decoder writes each token's keys and values into a cache of {config.max_tokens} "
        "positions (generation_config.json: max_tokens)",
        "wer": {k: round(v, 3) for k, v in final.detail.items()},
        "test_set": {
            "sentences": settings.sentences.name,
            "snrs_db": list(settings.snrs),
            "clips": int(final.detail["clips"]),
            "synthesiser": "espeak-ng (espeakng-loader)",
        },
    }
    return StagesResult(
        source_digest=source_digest,
        inputs=_signature(compiled, "inputs"),
        outputs=_signature(compiled, "outputs"),
        artifact_name=f"encoder{compiled.artifacts['encoder'].suffix}",
        files=files,
        file_sources={name: path for name, (path, _) in bundle.items()},
        metrics={
            "size_bytes": size,
            "fp32_size_bytes": fp32_size,
            "size_ratio": size / fp32_size,
            "latency": latency,
            "fidelity": final.__dict__,
            "memory": _memory(build, compiled),
        },
        stages=stages,
        verdict={
            "fidelity": "pass",
            "speed": "warn" if warnings else "pass",
            "speed_gate": build.target.speed_gate,
            "warnings": warnings,
        },
        pass_list=[
            {"pass": p.name, "options": p.options(), "graph": part} for part in PARTS for p in build.passes[part]
        ],
        import_meta={
            "exporter": "torch.onnx.export(dynamo=False)",
            "opset": OPSET,
            "export_check": build.imported.meta.get("export_check"),
        },
        record_extra={"speech": speech},
    )


__all__ = ["SpeechBuild", "SpeechSettings", "run_speech_stages", "static_shapes"]
