"""The stages of a speech build: import -> passes per graph -> compile per graph -> WER gate.

A speech model is two graphs (encoder, decoder step with a KV cache) and a generation loop, so
it runs its own sequence on the same machinery as every other build: each stage goes through the
content-addressed cache with `stage_key`, passes through `run_graph_passes`, compilation through
`compile_stage`. What differs is what is scored: transcripts, not tensors (evaluate.py).

1. import: the CTranslate2 (or transformers) checkpoint becomes a transformers Whisper model,
   checked against ctranslate2's own greedy tokens; both graphs are exported; the FP32 PyTorch
   model transcribes every clip (the reference); the ONNX export must give identical tokens.
2. passes: the target's list for each graph (`passes.speech-encoder`, `passes.speech-decoder`,
   else `passes.speech`, else `passes.default`); each pass row is scored on a few clips with that
   graph swapped into the FP32 pair.
3. compile: each graph for the target's runtime.
4. verify: the compiled pair transcribes every clip (a spaced subset under emulation); the build
   fails when its WER is more than `[metric] max_increase` points over FP32's on the same clips.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from compiler.cache import Cache, canonical_json, sha256_bytes, sha256_file, sha256_tree, stage_key, tool_versions
from compiler.config import ROOT, ModelRecipe, TargetSpec
from compiler.errors import BudgetError, ConfigError, DataError, ModelError
from compiler.progress import step
from compiler.speech.evaluate import Transcripts, score_wer, spaced, transcribe
from compiler.speech.generate import GenerationConfig, OrtParts, Parts
from compiler.speech.testset import Clip
from compiler.verify import speed_verdict
from passes.base import Fidelity, GraphPass, PassContext, TorchPass
from passes.catalogue import instantiate

PARTS = ("encoder", "decoder")
RUNTIMES = ("onnxruntime", "onnxruntime-mobile", "tvm")
SPEECH_CODE = ROOT / "compiler" / "speech"
IMPORT_CODE = [SPEECH_CODE, ROOT / "compiler" / "importers" / "ctranslate2_whisper.py"]
THREADS = 1  # verification and timing: fixed, so transcripts (and the manifest) do not depend on the host


@dataclass(frozen=True)
class SpeechSettings:
    """The recipe's [data] and [bench] tables for a speech model, validated."""

    sentences: Path
    snrs: tuple[int, ...]
    limit: int | None  # first N sentences only (tests, quick looks)
    max_tokens: int  # decoder cache capacity, prompt included
    calibration_clips: int
    pass_clips: int  # clips scored per pass row
    bench_clips: int  # clips timed for the host real-time factor

    @classmethod
    def of(cls, recipe: ModelRecipe) -> SpeechSettings:
        data, where = recipe.data, f"{recipe.path}: field 'data."
        if "sentences" not in data:
            raise ConfigError(f"{where}sentences' is missing; a speech recipe names its sentence file")
        snrs = data.get("snrs", [20, 10])
        if not isinstance(snrs, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in snrs):
            raise ConfigError(f"{where}snrs' must be a list of integers (dB), got {snrs!r}")
        values = {}
        for key, default in (("limit", None), ("max_tokens", 128), ("calibration_clips", 8), ("pass_clips", 24)):
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


def _check_target(target: TargetSpec) -> None:
    if target.runtime not in RUNTIMES:
        raise ConfigError(
            f"target '{target.name}' ({target.runtime}) does not build speech models: its converter path is "
            f"not built for encoder-decoder generation (BUILD.md 'Speech'); use a target on {', '.join(RUNTIMES)}, "
            "e.g. desktop-int8 or arm64-int8"
        )


def _passes(target: TargetSpec, part: str) -> list[GraphPass]:
    specs = target.passes_for(f"speech-{part}")
    passes = instantiate(specs, f"{target.path}: passes (speech {part})")
    torch_passes = [p.name for p in passes if isinstance(p, TorchPass)]
    if torch_passes:
        raise ConfigError(
            f"{target.path}: PyTorch-level passes ({', '.join(torch_passes)}) are not built for speech models; "
            "give the target a 'speech' pass list without them"
        )
    return [p for p in passes if isinstance(p, GraphPass)]


def generation_config(model: Any, max_tokens: int) -> GenerationConfig:
    """The loop's settings from the converted model (English-only: no language or task tokens)."""
    config, generation = model.config, model.generation_config
    no_timestamps = getattr(generation, "no_timestamps_token_id", None)
    if no_timestamps is None:
        raise ModelError("the Whisper model has no <|notimestamps|> token id in its generation config")
    eos = int(config.eos_token_id)
    specials = range(eos + 1, config.vocab_size)  # every special token but <|endoftext|>: no timestamps, no tasks
    suppress = sorted({*map(int, generation.suppress_tokens or []), *specials})
    return GenerationConfig(
        prompt=(int(config.decoder_start_token_id), int(no_timestamps)),
        eos=eos,
        suppress=tuple(suppress),
        suppress_at_begin=tuple(int(t) for t in (generation.begin_suppress_tokens or [])),
        max_tokens=max_tokens,
        layers=int(config.decoder_layers),
        d_model=int(config.d_model),
        vocab=int(config.vocab_size),
    )


class Decoder:
    """Token ids -> text with the model's tokenizer.json (what a device would ship)."""

    def __init__(self, tokenizer_json: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))

    def __call__(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True).strip()


def _import(recipe: ModelRecipe, settings: SpeechSettings, clips: list[Clip], directory: Path) -> dict[str, Any]:
    from compiler.importers.ctranslate2_whisper import load_whisper, verify_against_ctranslate2
    from compiler.speech.export import export_parts
    from compiler.speech.features import PREPROCESSING, log_mel
    from compiler.speech.generate import TorchParts
    from compiler.speech.source import whisper_directory

    source = whisper_directory(recipe)
    step(f"importing {recipe.name} from {source}")
    model = load_whisper(source)
    meta: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    if (source / "model.bin").is_file():
        step("checking the conversion against ctranslate2's greedy tokens on 3 clips")
        check = verify_against_ctranslate2(model, source, [log_mel(clip.audio) for clip in clips[:3]])
        meta["ctranslate2_check"] = {k: v for k, v in check.items() if k in ("match", "clips", "encoder_max_abs_diff")}
    paths = export_parts(model, settings.max_tokens, directory)
    config = generation_config(model, settings.max_tokens)
    (directory / "generation_config.json").write_text(config.to_json())
    (directory / "preprocessing.json").write_text(json.dumps(PREPROCESSING, indent=1, sort_keys=True) + "\n")
    if not (source / "tokenizer.json").is_file():
        raise ModelError(f"{source}: no tokenizer.json; the bundle needs it to turn tokens into text")
    shutil.copyfile(source / "tokenizer.json", directory / "tokenizer.json")

    step(f"FP32 PyTorch reference: transcribing {len(clips)} clips")
    reference = transcribe(TorchParts(model), clips, config)
    check_clips = clips[:8]
    exported = transcribe(OrtParts(paths["encoder"], paths["decoder"], THREADS), check_clips, config)
    differ = [clip.id for clip in check_clips if exported.tokens[clip.id] != reference.tokens[clip.id]]
    if differ:
        raise ModelError(f"the exported ONNX graphs transcribe {', '.join(differ)} differently from PyTorch FP32")
    (directory / "reference.json").write_text(json.dumps(reference.tokens, sort_keys=True) + "\n")
    meta["export_check"] = {"clips": len(check_clips), "identical_tokens": True}
    meta["reference_rtf"] = round(reference.real_time_factor, 4)
    return meta


def _fingerprint(*parts: Any) -> str:
    return sha256_bytes(canonical_json(list(parts)).encode())


class PartContext:
    """Calibration feeds and a WER evaluation for one graph, the other graph staying FP32."""

    def __init__(
        self,
        part: str,
        fp32: dict[str, Path],
        clips: list[Clip],
        reference: dict[str, list[int]],
        config: GenerationConfig,
        settings: SpeechSettings,
        metric: dict[str, Any],
        decode: Decoder,
        workdir: Path,
    ) -> None:
        self.part, self.fp32, self.clips, self.reference = part, fp32, clips, reference
        self.config, self.settings, self.metric, self.decode, self.workdir = config, settings, metric, decode, workdir
        self.scored = [clips[i] for i in spaced(len(clips), settings.pass_clips)]

    def score(self, candidate: Path) -> Fidelity:
        paths = {**self.fp32, self.part: candidate}
        result = transcribe(OrtParts(paths["encoder"], paths["decoder"], THREADS), self.scored, self.config)
        fidelity = score_wer(self.metric, self.scored, result.tokens, self.reference, self.decode)
        return replace(fidelity, summary=f"{fidelity.summary} ({self.part} swapped into the FP32 pair)")

    def evaluate(self, model: onnx.ModelProto) -> Fidelity:
        path = self.workdir / f"candidate-{self.part}.onnx"
        onnx.save(model, str(path))
        return self.score(path)

    def calibration(self) -> list[dict[str, np.ndarray]]:
        from compiler.speech.features import log_mel

        clean = [clip for clip in self.clips if clip.noise == "clean"] or self.clips
        chosen = [clean[i] for i in spaced(len(clean), self.settings.calibration_clips)]
        if self.part == "encoder":
            return [{"mel": log_mel(clip.audio)[None]} for clip in chosen]
        recorder = _RecordingParts(OrtParts(self.fp32["encoder"], self.fp32["decoder"], THREADS))
        transcribe(recorder, chosen, self.config)
        return recorder.feeds[::4]


class _RecordingParts:
    """Wraps parts and keeps every decoder call's inputs (the decoder's calibration data)."""

    def __init__(self, parts: Parts) -> None:
        self.parts, self.feeds = parts, []

    def encode(self, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.parts.encode(mel)

    def step(self, tokens, position, self_k, self_v, cross_k, cross_v):  # noqa: ANN001, ANN201 (Parts)
        names = ("tokens", "position", "self_k", "self_v", "cross_k", "cross_v")
        self.feeds.append(dict(zip(names, (tokens, position, self_k, self_v, cross_k, cross_v), strict=True)))
        return self.parts.step(tokens, position, self_k, self_v, cross_k, cross_v)


def _static_shapes(part: str, config: GenerationConfig) -> dict[str, list[int]]:
    if part == "encoder":
        return {"mel": [1, 80, 3000]}
    cache = [config.layers, 1, config.max_tokens, config.d_model]
    cross = [config.layers, 1, 1500, config.d_model]
    return {"tokens": [1, 1], "position": [1], "self_k": cache, "self_v": cache, "cross_k": cross, "cross_v": cross}


def _artifact_parts(artifacts: dict[str, Path]) -> Parts | None:
    """Parts that run the compiled artifacts in this process; None for an artifact for another ISA."""
    from compiler.runtime import runs_on_host

    if all(path.suffix in (".onnx", ".ort") for path in artifacts.values()):
        return OrtParts(artifacts["encoder"], artifacts["decoder"], THREADS)
    if not all(runs_on_host(path) for path in artifacts.values()):
        return None
    from compiler.speech.tvm_parts import TvmParts

    return TvmParts(artifacts["encoder"], artifacts["decoder"], THREADS)


def _transcribe_artifacts(
    artifacts: dict[str, Path], clips: list[Clip], config: GenerationConfig
) -> dict[str, list[int]]:
    parts = _artifact_parts(artifacts)
    if parts is not None:
        return transcribe(parts, clips, config).tokens
    from compiler.speech.tvm_parts import transcribe_under_qemu

    return transcribe_under_qemu(artifacts["encoder"], artifacts["decoder"], clips, config)


def _row(stage: str, kind: str, paths: list[Path], cached: bool, seconds: float, stats: dict, fidelity: Fidelity,
         options: dict | None = None) -> dict[str, Any]:
    row = {
        "stage": stage,
        "kind": kind,
        "path": str(paths[-1]),
        "bytes": sum(p.stat().st_size for p in paths),
        "nodes": None,
        "cached": cached,
        "seconds": seconds,
        "stats": stats,
        "fidelity": fidelity.__dict__,
        "latency_ms": None,
        "latency_ratio": None,
    }
    if options is not None:
        row["options"] = options
    return row


def run_speech_stages(recipe: ModelRecipe, target: TargetSpec, cache: Cache) -> Any:
    from compiler.pipeline import source_files
    from compiler.speech.testset import build_testset, testset_digest
    from compiler.stages import StagesResult, compile_stage, run_graph_passes

    _check_target(target)
    if recipe.metric.get("kind") != "wer":
        raise ConfigError(f"{recipe.path}: a speech recipe is scored by word error rate: set [metric] kind = \"wer\"")
    settings = SpeechSettings.of(recipe)
    part_passes = {part: _passes(target, part) for part in PARTS}
    pass_list = [{"pass": p.name, "options": p.options(), "graph": part} for part in PARTS for p in part_passes[part]]

    step(f"loading the speech test set for {recipe.name}")
    clips = build_testset(settings.sentences, cache.root / "speech-testset", settings.snrs, settings.limit)
    if len(clips) < 2:
        raise DataError(f"{recipe.path}: the speech test set has {len(clips)} clips; it needs at least 2")
    data_digest = _fingerprint(testset_digest(settings.sentences, settings.snrs), settings.limit)
    source_digest = sha256_tree(source_files(recipe))

    import_key = stage_key(
        "import-speech",
        inputs={"source": source_digest, "data": data_digest},
        config={"source": [recipe.source_kind, recipe.source], "max_tokens": settings.max_tokens},
        code=sha256_tree(IMPORT_CODE),
        tools=tool_versions("torch", "transformers", "onnx", "onnxruntime", "ctranslate2", "tokenizers"),
    )

    def run_import(directory: Path) -> dict[str, Any]:
        started = time.perf_counter()
        meta = _import(recipe, settings, clips, directory)
        return {**meta, "_seconds": round(time.perf_counter() - started, 2)}

    imported = cache.get_or_build("import", import_key, run_import)
    if imported.hit:
        step("import: cached")
    fp32 = {part: imported.path / f"{part}.onnx" for part in PARTS}
    config = GenerationConfig.from_json((imported.path / "generation_config.json").read_text())
    reference: dict[str, list[int]] = json.loads((imported.path / "reference.json").read_text())
    decode = Decoder(imported.path / "tokenizer.json")
    fidelity_fp32 = score_wer(recipe.metric, clips, reference, reference, decode)
    step(f"FP32 PyTorch reference: {fidelity_fp32.summary.split(' vs ')[0]} on {len(clips)} clips")

    stages = [
        _row("import", "import", list(fp32.values()), imported.hit, imported.meta.get("_seconds", 0.0),
             {k: imported.meta.get(k) for k in ("ctranslate2_check", "export_check", "parameters")}, fidelity_fp32)
    ]
    artifacts: dict[str, Path] = {}
    extra_files: dict[str, tuple[Path, str]] = {}
    compile_meta: dict[str, dict[str, Any]] = {}
    last_graph: dict[str, Path] = {}
    done_all: list[str] = []
    workdir = cache.scratch()
    for part in PARTS:
        part_ctx = PartContext(part, fp32, clips, reference, config, settings, recipe.metric, decode, workdir)
        context = PassContext(
            workdir=workdir,
            model_family="speech",
            calibration=part_ctx.calibration,
            evaluate=part_ctx.evaluate,
            fingerprint=_fingerprint("speech-context", part, data_digest, sha256_file(imported.path / "reference.json"),
                                     recipe.metric, settings.pass_clips, settings.calibration_clips),
        )
        rows, current, done = run_graph_passes(part_passes[part], fp32[part], context, cache, "speech", [], part)
        for row in rows:
            scored = _score_row(cache, part_ctx, Path(row["path"]), data_digest)
            stages.append(_row(f"{part}: {row['stage']}", "pass", [Path(row["path"])], row["cached"], row["seconds"],
                               row["stats"], scored, row["options"]))
        compiled = compile_stage(
            recipe, target, current, _static_shapes(part, config), cache, done, lambda: {}, label=part
        )
        artifacts[part] = compiled.path / compiled.meta["artifact"]
        compile_meta[part] = compiled.meta
        last_graph[part] = current
        done_all += [f"{part}:{name}" for name in done]
        for name, role in sorted(compiled.meta.get("extra_files", {}).items()):
            extra_files[f"{part}.{name}"] = (compiled.path / name, role)

    verified = _verify(recipe, target, cache, settings, clips, artifacts, reference, config, decode, data_digest)
    final = Fidelity(**verified["fidelity"])
    stats = {part: _compile_stats(compile_meta[part]) for part in PARTS}
    stages.append(_row(f"compile ({target.runtime})", "compile", list(artifacts.values()), verified["hit"],
                       sum(compile_meta[p]["_seconds"] for p in PARTS), stats, final))
    if not final.within_budget:
        raise BudgetError(
            f"{recipe.name} for {target.name}: {final.summary}; the build fails over the WER budget "
            f"(report in the cache: {verified['path']})"
        )
    latency = _latency(target, settings, clips, fp32, artifacts, config)
    speed = speed_verdict(target.speed_gate, target.max_latency_ratio, latency["ratio_vs_ort_fp32"], target.name)
    return _result(recipe, target, imported, artifacts, extra_files, last_graph, stages, final, latency, pass_list,
                   source_digest, config, settings, [speed] if speed else [], StagesResult)


def _score_row(cache: Cache, part_ctx: PartContext, model: Path, data_digest: str) -> Fidelity:
    """A pass row's WER on `pass_clips` clips, cached by the graph's bytes."""
    key = stage_key(
        "score-speech-pass",
        inputs={"model": sha256_file(model), "other": sha256_file(part_ctx.fp32[_other(part_ctx.part)]),
                "data": data_digest},
        config={"part": part_ctx.part, "metric": part_ctx.metric, "clips": len(part_ctx.scored)},
        code=sha256_tree([SPEECH_CODE]),
        tools=tool_versions("onnxruntime", "jiwer", "whisper-normalizer"),
    )

    def measure(_: Path) -> dict[str, Any]:
        step(f"{part_ctx.part}: scoring {model.parent.parent.name} on {len(part_ctx.scored)} clips")
        return part_ctx.score(model).__dict__

    return Fidelity(**cache.get_or_build("score-speech", key, measure).meta)


def _other(part: str) -> str:
    return "decoder" if part == "encoder" else "encoder"


def _verify(
    recipe: ModelRecipe, target: TargetSpec, cache: Cache, settings: SpeechSettings, clips: list[Clip],
    artifacts: dict[str, Path], reference: dict[str, list[int]], config: GenerationConfig, decode: Decoder,
    data_digest: str,
) -> dict[str, Any]:
    """The WER gate on the compiled pair: every clip on this host, a spaced subset under emulation."""
    from compiler.runtime import runs_on_host

    emulated = not all(runs_on_host(path) for path in artifacts.values())
    chosen = [clips[i] for i in spaced(len(clips), target.emulated_batches if emulated else None)]
    key = stage_key(
        "verify-speech",
        inputs={**{part: sha256_file(path) for part, path in artifacts.items()}, "data": data_digest},
        config={"metric": recipe.metric, "clips": [clip.id for clip in chosen], "threads": THREADS},
        code=sha256_tree([SPEECH_CODE, ROOT / "templates" / "whisper_runner.cc"]),
        tools=tool_versions("onnxruntime", "apache-tvm", "jiwer", "whisper-normalizer"),
    )

    def measure(directory: Path) -> dict[str, Any]:
        where = "under qemu-aarch64" if emulated else "on this host"
        step(f"verifying: transcribing {len(chosen)} of {len(clips)} clips with the compiled graphs {where}")
        tokens = _transcribe_artifacts(artifacts, chosen, config)
        fidelity = score_wer(recipe.metric, chosen, tokens, reference, decode)
        if emulated and len(chosen) < len(clips):
            fidelity = replace(fidelity, summary=f"{fidelity.summary} (on {len(chosen)} of {len(clips)} clips, "
                                                 "run under qemu-aarch64)")
        transcripts = {clip.id: {"reference": clip.text, "fp32": decode(reference[clip.id]),
                                 "build": decode(tokens[clip.id])} for clip in chosen}
        (directory / "transcripts.json").write_text(json.dumps(transcripts, indent=1, sort_keys=True) + "\n")
        return {"fidelity": fidelity.__dict__}

    entry = cache.get_or_build("verify-speech", key, measure)
    if entry.hit:
        step("verify: cached")
    return {**entry.meta, "hit": entry.hit, "path": str(entry.path / "transcripts.json")}


def _latency(
    target: TargetSpec, settings: SpeechSettings, clips: list[Clip], fp32: dict[str, Path],
    artifacts: dict[str, Path], config: GenerationConfig,
) -> dict[str, Any]:
    """Real-time factor of the artifacts and of the FP32 ONNX pair on the same clips, side by side,
    recorded in the host ledger (the bundle carries the first measurement of these bytes here)."""
    from compiler.measurements import host_fingerprint, recall_or_measure

    parts = _artifact_parts(artifacts)
    if parts is None:
        return {"artifact_ms": None, "ort_fp32_ms": None, "ratio_vs_ort_fp32": None, "threads": THREADS,
                "input_shapes": {}, "note": "not measured: the graphs are for another ISA and ran under "
                "qemu-aarch64 only to be verified; emulated timings say nothing about the device"}
    clean = [clip for clip in clips if clip.noise == "clean"] or clips
    timed = [clean[i] for i in spaced(len(clean), settings.bench_clips)]
    subject = {"what": "speech-rtf", "models": [sha256_file(p) for p in (*fp32.values(), *artifacts.values())],
               "clips": [clip.id for clip in timed], "threads": THREADS, "code": sha256_tree([SPEECH_CODE]),
               "tools": tool_versions("onnxruntime", "apache-tvm", "numpy")}

    def measure() -> dict[str, Any]:
        step(f"timing the FP32 pair and the build on {len(timed)} clips (real-time factor)")
        baseline = OrtParts(fp32["encoder"], fp32["decoder"], THREADS)
        transcribe(parts, timed[:1], config)  # warm-up
        transcribe(baseline, timed[:1], config)
        runs: dict[str, list[Transcripts]] = {"fp32": [], "artifact": []}
        for clip in timed:  # interleaved: the machine's load hits both alike
            runs["fp32"].append(transcribe(baseline, [clip], config))
            runs["artifact"].append(transcribe(parts, [clip], config))
        audio = sum(clip.seconds for clip in timed)
        return {
            name: {"rtf": sum(t.seconds for t in values) / audio,
                   "ms_per_clip": 1000 * sum(t.seconds for t in values) / len(values)}
            for name, values in runs.items()
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


def _compile_stats(meta: dict[str, Any]) -> dict[str, Any]:
    keys = ("converter", "toolchain", "ops", "tensor_dtypes", "target", "tuning", "isa_features", "execution")
    return {key: meta[key] for key in keys if key in meta}


def _result(
    recipe: ModelRecipe, target: TargetSpec, imported: Any, artifacts: dict[str, Path],
    extra_files: dict[str, tuple[Path, str]], last_graph: dict[str, Path], stages: list[dict[str, Any]],
    final: Fidelity, latency: dict[str, Any], pass_list: list[dict[str, Any]], source_digest: str,
    config: GenerationConfig, settings: SpeechSettings, warnings: list[str], result_type: type,
) -> Any:
    from compiler.packaging.manifest import estimate_memory
    from compiler.runtime import runs_on_host

    sources: dict[str, Path] = {f"{part}{path.suffix}": path for part, path in artifacts.items()}
    roles = {name: "artifact" for name in sources}
    for name in ("tokenizer.json", "generation_config.json", "preprocessing.json"):
        sources[name], roles[name] = imported.path / name, "config"
    for name, (path, role) in extra_files.items():
        sources[name], roles[name] = path, role
    if any(path.suffix == ".so" and not runs_on_host(path) for path in artifacts.values()):
        from compiler.backends import aarch64
        from compiler.speech.tvm_parts import RUNNER_SOURCE

        for name, (path, role) in aarch64.device_files().items():
            sources[name], roles[name] = path, role
        sources[RUNNER_SOURCE.name], roles[RUNNER_SOURCE.name] = RUNNER_SOURCE, "source"
    files = [
        {"name": name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
         **({"role": roles[name]} if roles[name] != "artifact" else {})}
        for name, path in sorted(sources.items())
    ]
    inputs, outputs = [], []
    for part in PARTS:
        for entry in _signature(artifacts[part], last_graph[part], "inputs"):
            inputs.append({**entry, "name": f"{part}.{entry['name']}"})
        for entry in _signature(artifacts[part], last_graph[part], "outputs"):
            outputs.append({**entry, "name": f"{part}.{entry['name']}"})
    shapes = _static_shapes("encoder", config), _static_shapes("decoder", config)
    memory_parts = [estimate_memory(last_graph[part], shape) for part, shape in zip(PARTS, shapes, strict=True)]
    weights = sum(path.stat().st_size for path in artifacts.values())
    activations = sum(m["activations_bytes"] for m in memory_parts)
    memory = {"method": memory_parts[0]["method"], "weights_bytes": weights, "activations_bytes": activations,
              "total_bytes": weights + activations, "input_shapes": {**shapes[0], **shapes[1]}}
    size = weights
    fp32_size = stages[0]["bytes"]
    preprocessing = json.loads((imported.path / "preprocessing.json").read_text())
    speech = {
        "graphs": {part: f"{part}{artifacts[part].suffix}" for part in PARTS},
        "tokenizer": "tokenizer.json",
        "generation_config": "generation_config.json",
        "preprocessing": preprocessing,
        "decoding": "greedy; the decoder writes each token's keys and values into a cache of "
        f"{config.max_tokens} positions (generation_config.json: max_tokens)",
        "wer": {k: round(v, 3) for k, v in final.detail.items()},
        "test_set": {"sentences": settings.sentences.name, "snrs_db": list(settings.snrs),
                     "clips": int(final.detail["clips"]), "synthesiser": "espeak-ng (espeakng-loader)"},
    }
    return result_type(
        source_digest=source_digest,
        inputs=inputs,
        outputs=outputs,
        artifact_name=f"encoder{artifacts['encoder'].suffix}",
        files=files,
        file_sources=sources,
        metrics={
            "size_bytes": size,
            "fp32_size_bytes": fp32_size,
            "size_ratio": size / fp32_size,
            "latency": latency,
            "fidelity": final.__dict__,
            "memory": memory,
        },
        stages=stages,
        verdict={"fidelity": "pass", "speed": "warn" if warnings else "pass", "speed_gate": target.speed_gate,
                 "warnings": warnings},
        pass_list=pass_list,
        import_meta={"exporter": "torch.onnx.export(dynamo=False)", "opset": 17,
                     "export_check": imported.meta.get("export_check")},
        record_extra={"speech": speech},
    )


def _signature(artifact: Path, graph: Path, kind: str) -> list[dict[str, Any]]:
    """Names, dtypes and shapes of a graph's inputs or outputs (from the last ONNX for a library)."""
    from compiler.runtime import session

    sess = session(artifact if artifact.suffix in (".onnx", ".ort") else graph)
    values = sess.get_inputs() if kind == "inputs" else sess.get_outputs()
    return [{"name": v.name, "dtype": v.type, "shape": v.shape} for v in values]


__all__ = ["SpeechSettings", "generation_config", "run_speech_stages"]
