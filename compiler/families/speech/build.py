"""One build of a speech model: the test set, the import, WER scores, real-time factor, what ships.

1. import (importer.py): the CTranslate2 (or transformers) checkpoint becomes a transformers
   Whisper model, checked against ctranslate2's own greedy tokens; both graphs are exported; the
   FP32 PyTorch model transcribes every clip (the reference); the export must reproduce it.
2. passes: each pass row is scored on `pass_clips` clips with that graph swapped into the FP32
   pair (part_context.py); the "after passes" gate holds each graph to the WER budget.
3. verify: the compiled pair transcribes every clip (a spaced subset under emulation, where the
   whole loop runs natively through the backend); the build fails when its WER is more than
   `[metric] max_increase` points over FP32's on the same clips.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from compiler.backends.base import Backend, CompiledGraph, CompileRequest, Shipped, reported_meta
from compiler.digests import canonical_json, sha256_bytes, sha256_file, sha256_tree, tool_versions
from compiler.engine.cache import Cache, stage_key
from compiler.engine.fingerprint import code_digest
from compiler.engine.record import StageRow
from compiler.engine.specs import ModelRecipe, TargetSpec
from compiler.errors import ConfigError, DataError
from compiler.families.base import FamilyBuild, Finished, Imported, Scored
from compiler.families.speech.evaluate import THREADS, score_wer, spaced, transcribe
from compiler.families.speech.generate import GenerationConfig, OrtParts, Parts, PredictorParts
from compiler.families.speech.importer import Decoder
from compiler.families.speech.part_context import PartContext
from compiler.families.speech.testset import Clip
from compiler.families.speech.timing import VERIFYING, real_time_factors, timed_clips
from compiler.progress import step
from compiler.shipped import builtin_root
from passes.base import Fidelity, PassContext, TorchPass

PARTS = ("encoder", "decoder")
CONFIG_FILES = ("tokenizer.json", "generation_config.json", "preprocessing.json")
IMPORTER = "compiler.families.speech.importer"
SCORING = "compiler.families.speech.part_context"


@dataclass(frozen=True)
class SpeechSettings:
    """The recipe's [data] and [bench] tables for a speech model (validated by the family at load)."""

    sentences: Path
    snrs: tuple[int, ...]
    limit: int | None  # first N sentences only (tests, quick looks)
    max_tokens: int  # decoder cache capacity, prompt included
    calibration_clips: int
    pass_clips: int  # clips scored per pass row
    emulated_clips: int  # clips verified under emulation (at most the target's emulated_batches)
    bench_clips: int  # clean clips timed for the host real-time factor

    @classmethod
    def of(cls, recipe: ModelRecipe) -> SpeechSettings:
        data = recipe.data
        base = recipe.path.parent if recipe.path else builtin_root() / "models"
        return cls(
            sentences=(base / data["sentences"]).resolve(),
            snrs=tuple(data.get("snrs", [20, 10])),
            limit=data.get("limit"),
            max_tokens=data.get("max_tokens", 128),
            calibration_clips=data.get("calibration_clips", 8),
            pass_clips=data.get("pass_clips", 24),
            emulated_clips=data.get("emulated_clips", 6),
            bench_clips=int(recipe.bench.get("clips", 8)),
        )


def _fingerprint(*parts: Any) -> str:
    return sha256_bytes(canonical_json(list(parts)).encode())


def static_shapes(part: str, config: GenerationConfig) -> dict[str, list[int]]:
    """Each graph's inputs at batch 1: what fixed-shape backends compile for and what memory is sized at."""
    if part == "encoder":
        return {"mel": [1, 80, 3000]}
    cache = [config.layers, 1, config.max_tokens, config.d_model]
    cross = [config.layers, 1, 1500, config.d_model]
    return {"tokens": [1, 1], "position": [1], "self_k": cache, "self_v": cache, "cross_k": cross, "cross_v": cross}


class SpeechBuild(FamilyBuild):
    """One speech build: the recipe's test set and reference, and the scores over them."""

    def __init__(self, recipe: ModelRecipe, target: TargetSpec, backend: Backend, cache: Cache) -> None:
        from compiler.families.speech.testset import build_testset, testset_digest

        super().__init__(recipe, target, backend, cache)
        self.settings = settings = SpeechSettings.of(recipe)
        step(f"loading the speech test set for {recipe.name}")
        self.clips = build_testset(settings.sentences, cache.root / "speech-testset", settings.snrs, settings.limit)
        if len(self.clips) < 2:
            raise DataError(f"{recipe.path}: the speech test set has {len(self.clips)} clips; it needs at least 2")
        self.data_digest = _fingerprint(testset_digest(settings.sentences, settings.snrs), settings.limit)
        self.contexts: dict[str, PartContext] = {}

    # -- import -------------------------------------------------------------------------------

    def import_stage(self, torch_passes: list[TorchPass]) -> Imported:
        from compiler.families.catalogue import family
        from compiler.families.speech.importer import import_whisper

        if torch_passes:
            raise ConfigError(
                f"{self.target.path}: PyTorch-level passes ({', '.join(p.name for p in torch_passes)}) are not built "
                "for speech models; give the target a 'speech' pass list without them"
            )
        recipe = self.recipe
        source_digest = sha256_tree(family(recipe.family).source_files(recipe))
        key = stage_key(
            "import-speech",
            inputs={"source": source_digest, "data": self.data_digest},
            config={"source": [recipe.source_kind, recipe.source], "max_tokens": self.settings.max_tokens},
            code=code_digest([IMPORTER]),
            tools=tool_versions("torch", "transformers", "onnx", "onnxruntime", "ctranslate2", "tokenizers"),
        )

        def run(directory: Path) -> dict[str, Any]:
            started = time.perf_counter()
            meta = import_whisper(recipe, self.settings.max_tokens, self.clips, directory, THREADS)
            return {**meta, "_seconds": round(time.perf_counter() - started, 2)}

        imported = self.cache.get_or_build("import", key, run)
        if imported.hit:
            step("import: cached")
        self.imported = imported
        self.fp32 = {part: imported.path / f"{part}.onnx" for part in PARTS}
        self.config = GenerationConfig.from_json((imported.path / "generation_config.json").read_text())
        self.reference: dict[str, list[int]] = json.loads((imported.path / "reference.json").read_text())
        self.decode = Decoder(imported.path / "tokenizer.json")
        reference = self.score(self.reference, self.clips)
        step(f"FP32 PyTorch reference: WER {reference.detail['wer']:.2f}% on {len(self.clips)} clips")
        row = StageRow(
            stage="import",
            kind="import",
            path=self.fp32["decoder"],
            cached=imported.hit,
            seconds=imported.meta.get("_seconds", 0.0),
            stats={k: imported.meta.get(k) for k in ("ctranslate2_check", "export_check", "parameters")},
            graph="encoder+decoder",
            bytes=sum(path.stat().st_size for path in self.fp32.values()),
            fidelity=reference,
        )
        from compiler.importers.torch_export import OPSET

        meta = {
            "exporter": "torch.onnx.export(dynamo=False)",
            "opset": OPSET,
            "export_check": imported.meta.get("export_check"),
        }
        return Imported(dict(self.fp32), [row], source_digest, meta)

    def score(self, tokens: dict[str, list[int]], clips: list[Clip]) -> Fidelity:
        return score_wer(self.recipe.metric, clips, tokens, self.reference, self.decode)

    # -- passes ---------------------------------------------------------------------------------

    def pass_context(self, graph: str) -> PassContext:
        settings, workdir = self.settings, self.cache.scratch()
        part_ctx = PartContext(
            graph,
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
        self.contexts[graph] = part_ctx
        fingerprint = _fingerprint(
            "speech-context",
            graph,
            self.data_digest,
            sha256_file(self.imported.path / "reference.json"),
            self.recipe.metric,
            settings.pass_clips,
            settings.calibration_clips,
            code_digest([SCORING]),
        )
        return PassContext(
            workdir=workdir,
            architecture="other",
            calibration=part_ctx.calibration,
            evaluate=part_ctx.evaluate,
            fingerprint=fingerprint,
        )

    def score_graph(self, graph: str, row: StageRow) -> Fidelity:
        """A pass row's WER on `pass_clips` clips, that graph swapped into the FP32 pair, cached."""
        part_ctx = self.contexts[graph]
        other = "decoder" if graph == "encoder" else "encoder"
        key = stage_key(
            "score-speech-pass",
            inputs={"model": sha256_file(row.path), "other": sha256_file(self.fp32[other]), "data": self.data_digest},
            config={"part": graph, "metric": self.recipe.metric, "clips": len(part_ctx.scored)},
            code=code_digest([SCORING, __name__]),
            tools=tool_versions("onnxruntime", "jiwer", "whisper-normalizer"),
        )

        def measure(_: Path) -> dict[str, Any]:
            step(f"{graph}: scoring {row.path.parent.parent.name} on {len(part_ctx.scored)} clips")
            return part_ctx.score(row.path).__dict__

        row.latency_note = "not timed"
        return Fidelity(**self.cache.get_or_build("score-speech", key, measure).meta)

    # -- compilation and verification -------------------------------------------------------------

    def compile_request(self, graph: str, model: Path, passes_applied: tuple[str, ...]) -> CompileRequest:
        return CompileRequest(
            model=model,
            name=self.recipe.name,
            graph=graph,
            shapes=static_shapes(graph, self.config),
            cache_root=self.cache.root,
            passes_applied=passes_applied,
        )

    def _runs_here(self, compiled: dict[str, CompiledGraph]) -> bool:
        """Whether this process can call the compiled graphs (decided without loading them)."""
        return all(self.backend.execution(c.artifact).where == "host" for c in compiled.values())

    def _parts(self, compiled: dict[str, CompiledGraph]) -> Parts | None:
        """Parts this process calls step by step (in-process sessions, or sessions in an emulated
        process where the backend keeps them); None when only a native program can run them."""
        if not self._runs_here(compiled) and not self.backend.remote_predictor:
            return None
        encoder, decoder = (self.backend.predictor(compiled[part].artifact, THREADS) for part in PARTS)
        return PredictorParts(encoder, decoder)

    def score_compiled(self, compiled: dict[str, CompiledGraph]) -> Scored:
        """The WER gate's figure: every clip on this host, a spaced subset where the graphs run elsewhere."""
        artifacts = {part: c.artifact for part, c in compiled.items()}
        executions = [self.backend.execution(path) for path in artifacts.values()]
        elsewhere = next((e for e in executions if e.where != "host"), None)
        limit = min(self.target.emulated_batches, self.settings.emulated_clips) if elsewhere else None
        chosen = [self.clips[i] for i in spaced(len(self.clips), limit)]
        key = stage_key(
            "verify-speech",
            inputs={**{part: sha256_file(path) for part, path in artifacts.items()}, "data": self.data_digest},
            config={"metric": self.recipe.metric, "clips": [clip.id for clip in chosen], "threads": THREADS},
            code=code_digest([*VERIFYING, __name__]) + self.backend.fingerprint(),
            tools=tool_versions("onnxruntime", "jiwer", "whisper-normalizer", *self.backend.tools),
        )

        def measure(directory: Path) -> dict[str, Any]:
            where = elsewhere.how.removeprefix("run ") if elsewhere else "on this host"
            step(f"verifying: transcribing {len(chosen)} of {len(self.clips)} clips with the compiled graphs {where}")
            tokens = self._transcribe(compiled, chosen)
            fidelity = self.score(tokens, chosen)
            if elsewhere is not None and len(chosen) < len(self.clips):
                summary = f"{fidelity.summary} (on {len(chosen)} of {len(self.clips)} clips, {elsewhere.how})"
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
        return Scored(Fidelity(**entry.meta["fidelity"]), entry.hit, entry.path / "transcripts.json")

    def _transcribe(self, compiled: dict[str, CompiledGraph], clips: list[Clip]) -> dict[str, list[int]]:
        parts = self._parts(compiled)
        if parts is not None:
            return transcribe(parts, clips, self.config, "verifying").tokens
        from compiler.families.speech.native_loop import transcribe_natively

        encoder, decoder = (compiled[part].artifact for part in PARTS)
        return transcribe_natively(self.backend, encoder, decoder, clips, self.config)

    def failure_advice(self, stage: str, scored: Scored | None) -> str:
        where = f" (per-clip transcripts: {scored.details})" if scored is not None and scored.details else ""
        return f"The build is over the WER budget{where}; relax [metric] max_increase or change the passes"

    # -- latency and what ships -------------------------------------------------------------------

    def latency(self, rows: list[StageRow], compiled: dict[str, CompiledGraph]) -> dict[str, Any]:
        """Real-time factor of the build and of the FP32 ONNX pair on the same clean clips, interleaved,
        recorded in the host ledger (the record carries the first measurement of these bytes here)."""
        for row in rows:
            row.latency_note = row.latency_note or "not timed"
        if not self._runs_here(compiled):
            rows[-1].latency_note = "n/a (emulated)"
            return {
                "artifact_ms": None,
                "ort_fp32_ms": None,
                "ratio_vs_ort_fp32": None,
                "threads": THREADS,
                "input_shapes": {},
                "note": "not measured: the graphs are for another ISA and ran under qemu-aarch64 only to be "
                "verified; emulated timings say nothing about the device",
            }
        from compiler.engine.measurements import host_fingerprint

        def runners() -> dict[str, Parts]:  # loaded only when the ledger has no figure yet
            parts = self._parts(compiled)
            assert parts is not None
            return {"fp32": OrtParts(self.fp32["encoder"], self.fp32["decoder"], THREADS), "artifact": parts}

        measured = real_time_factors(self, compiled, runners)
        ratio = measured["artifact"]["ms_per_clip"] / measured["fp32"]["ms_per_clip"]
        rows[0].latency_ms, rows[0].latency_ratio = measured["fp32"]["ms_per_clip"], 1.0
        rows[-1].latency_ms, rows[-1].latency_ratio = measured["artifact"]["ms_per_clip"], ratio
        return {
            "artifact_ms": measured["artifact"]["ms_per_clip"],
            "ort_fp32_ms": measured["fp32"]["ms_per_clip"],
            "ratio_vs_ort_fp32": ratio,
            "real_time_factor": measured["artifact"]["rtf"],
            "fp32_real_time_factor": measured["fp32"]["rtf"],
            "threads": THREADS,
            "input_shapes": {"mel": [1, 80, 3000]},
            "host": host_fingerprint()["cpu"] or "build host",
            "note": f"greedy transcription of {len(timed_clips(self))} clean clips, per clip (encoder + every "
            "decoder step); first measurement of these model bytes on this host (shared, noisy: compare ratios)",
        }

    def finish(self, rows: list[StageRow], compiled: dict[str, CompiledGraph], scored: Scored) -> Finished:
        from compiler.families.speech.native_loop import RUNNER_SOURCE

        names = {part: self.backend.shipped_name(part, compiled[part].artifact) for part in PARTS}
        files: dict[str, Shipped] = {}
        for part in PARTS:
            files.update(self.backend.ship(compiled[part], names[part], prefix=f"{part}."))
        files.update({name: Shipped(self.imported.path / name, "config") for name in CONFIG_FILES})
        if not self._runs_here(compiled) and not self.backend.remote_predictor:  # a native loop runs on the device
            files[RUNNER_SOURCE.name] = Shipped(RUNNER_SOURCE, "source")
        inputs, outputs = [], []
        for part in PARTS:
            part_inputs, part_outputs = self.backend.signature(compiled[part])
            inputs += [{**entry, "name": f"{part}.{entry['name']}"} for entry in part_inputs]
            outputs += [{**entry, "name": f"{part}.{entry['name']}"} for entry in part_outputs]
        return Finished(
            inputs,
            outputs,
            names["encoder"],
            dict(sorted(files.items())),
            self._memory(compiled),
            {"speech": self._section(names, scored.fidelity)},
        )

    def compile_stats(self, compiled: dict[str, CompiledGraph]) -> dict[str, Any]:
        return {part: reported_meta(c.meta) for part, c in compiled.items()}

    def _memory(self, compiled: dict[str, CompiledGraph]) -> dict[str, Any]:
        from compiler.packaging.manifest import estimate_memory

        shapes = {part: static_shapes(part, self.config) for part in PARTS}
        estimates = [estimate_memory(compiled[part].source, shapes[part]) for part in PARTS]
        weights = sum(c.artifact.stat().st_size for c in compiled.values())
        activations = sum(estimate["activations_bytes"] for estimate in estimates)
        return {
            "method": estimates[0]["method"],
            "weights_bytes": weights,
            "activations_bytes": activations,
            "total_bytes": weights + activations,
            "input_shapes": {f"{part}.{name}": shape for part in PARTS for name, shape in shapes[part].items()},
        }

    def _section(self, names: dict[str, str], final: Fidelity) -> dict[str, Any]:
        settings, config = self.settings, self.config
        return {
            "graphs": names,
            "tokenizer": "tokenizer.json",
            "generation_config": "generation_config.json",
            "preprocessing": json.loads((self.imported.path / "preprocessing.json").read_text()),
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


__all__ = ["SpeechBuild", "SpeechSettings", "static_shapes"]
