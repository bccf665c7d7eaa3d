"""The generation loop that runs the exported Whisper parts: greedy and beam search.

This is the product's decoder and the template for device code (the bundle's README shows the
same loop): encode the log-mel once, feed the prompt, then one token per decoder call, writing
each token's keys and values into the fixed-capacity cache at its position.

    cross_k, cross_v = encoder(mel)                       # once per 30 s window
    k = v = zeros([layers, 1, max_tokens, d_model])
    for position, token in enumerate(prompt + generated):
        logits, k, v = decoder(token, position, k, v, cross_k, cross_v)
        next = argmax(suppress(logits))                  # stop at <|endoftext|>

Any runtime plugs in through `Parts` (ONNX Runtime here; TVM and the PyTorch reference elsewhere):
`encode(mel) -> (cross_k, cross_v)` and `step(tokens, position, k, v, cross_k, cross_v) -> (logits, k, v)`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

Array = np.ndarray


@dataclass(frozen=True)
class GenerationConfig:
    """Everything the loop needs besides the model; shipped in the bundle as generation_config.json."""

    prompt: tuple[int, ...]  # <|startoftranscript|><|notimestamps|> for English-only models
    eos: int  # <|endoftext|>
    suppress: tuple[int, ...]  # never generated: non-speech symbols and every special token but eos
    suppress_at_begin: tuple[int, ...]  # not as the first generated token (a blank, an immediate eos)
    max_tokens: int  # cache capacity, prompt included
    layers: int
    d_model: int
    vocab: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> GenerationConfig:
        values = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def suppress_mask(self) -> tuple[Array, Array]:
        """Additive masks (0 or -inf) over the vocabulary: always, and for the first generated token."""
        always = np.zeros(self.vocab, dtype=np.float32)
        always[list(self.suppress)] = -np.inf
        begin = always.copy()
        begin[list(self.suppress_at_begin)] = -np.inf
        return always, begin


class Parts(Protocol):
    def encode(self, mel: Array) -> tuple[Array, Array]: ...

    def step(
        self, tokens: Array, position: Array, self_k: Array, self_v: Array, cross_k: Array, cross_v: Array
    ) -> tuple[Array, Array, Array]: ...


@dataclass
class Transcription:
    tokens: list[int]
    encode_seconds: float
    decode_seconds: float
    steps: int  # decoder calls, prompt included
    extra: dict[str, Any] = field(default_factory=dict)


def _cache(config: GenerationConfig, batch: int) -> Array:
    return np.zeros((config.layers, batch, config.max_tokens, config.d_model), dtype=np.float32)


def _step(parts: Parts, tokens: Sequence[int], position: int, k: Array, v: Array, ck: Array, cv: Array):
    ids = np.asarray(tokens, dtype=np.int64).reshape(-1, 1)
    return parts.step(ids, np.array([position], dtype=np.int64), k, v, ck, cv)


def _prefill(parts: Parts, config: GenerationConfig, mel: Array, batch: int):
    """Encode and feed all prompt tokens but the last; returns the state for the first real step."""
    started = time.perf_counter()
    cross_k, cross_v = parts.encode(mel[None].astype(np.float32))
    encoded = time.perf_counter()
    if batch > 1:
        cross_k, cross_v = np.repeat(cross_k, batch, axis=1), np.repeat(cross_v, batch, axis=1)
    k, v = _cache(config, batch), _cache(config, batch)
    for position, token in enumerate(config.prompt[:-1]):
        _, k, v = _step(parts, [token] * batch, position, k, v, cross_k, cross_v)
    return cross_k, cross_v, k, v, encoded - started


def greedy(parts: Parts, mel: Array, config: GenerationConfig) -> Transcription:
    """Greedy decoding: the most likely token each step, until <|endoftext|> or the cache is full."""
    always, begin = config.suppress_mask()
    cross_k, cross_v, k, v, encode_seconds = _prefill(parts, config, mel, 1)
    started = time.perf_counter()
    generated: list[int] = []
    token, position = config.prompt[-1], len(config.prompt) - 1
    while position < config.max_tokens:
        logits, k, v = _step(parts, [token], position, k, v, cross_k, cross_v)
        token = int(np.argmax(logits[0] + (always if generated else begin)))
        if token == config.eos:
            break
        generated.append(token)
        position += 1
    steps = len(config.prompt) + len(generated)
    return Transcription(generated, encode_seconds, time.perf_counter() - started, steps)


def _log_softmax(x: Array) -> Array:
    x = x.astype(np.float64)
    top = x.max(axis=-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(axis=-1, keepdims=True))


def beam_search(parts: Parts, mel: Array, config: GenerationConfig, beam_size: int = 5) -> Transcription:
    """Beam search as Whisper does it: the `beam_size` best running sequences, each finished one
    scored by its summed log-probability over its length; stop once `beam_size` have finished."""
    always, begin = config.suppress_mask()
    cross_k, cross_v, k, v, encode_seconds = _prefill(parts, config, mel, beam_size)
    started = time.perf_counter()
    beams: list[list[int]] = [[] for _ in range(beam_size)]
    scores = np.array([0.0] + [-np.inf] * (beam_size - 1))  # all beams start equal: expand only the first
    finished: list[tuple[float, list[int]]] = []
    position, steps = len(config.prompt) - 1, len(config.prompt) - 1
    last = [config.prompt[-1]] * beam_size
    while position < config.max_tokens and len(finished) < beam_size:
        logits, k, v = _step(parts, last, position, k, v, cross_k, cross_v)
        steps += 1
        logprobs = _log_softmax(logits + (always if position >= len(config.prompt) else begin))
        candidates = (scores[:, None] + logprobs).ravel()
        order = np.argsort(-candidates, kind="stable")[: 2 * beam_size]
        keep: list[tuple[int, int, float]] = []  # (source beam, token, score)
        for flat in order:
            source, token, score = int(flat // config.vocab), int(flat % config.vocab), float(candidates[flat])
            if not np.isfinite(score):
                continue
            if token == config.eos:
                finished.append((score / (len(beams[source]) + 1), beams[source]))
            elif len(keep) < beam_size:
                keep.append((source, token, score))
            if len(keep) == beam_size and len(finished) >= beam_size:
                break
        if not keep:
            break
        while len(keep) < beam_size:  # fewer live candidates than beams: pad with dead copies
            keep.append((keep[0][0], keep[0][1], -np.inf))
        sources = np.array([s for s, _, _ in keep])
        k, v = k[:, sources], v[:, sources]
        beams = [beams[s] + [t] for s, t, _ in keep]
        scores = np.array([score for _, _, score in keep])
        last = [t for _, t, _ in keep]
        position += 1
    if not finished:  # the cache filled up first: take the best running beam
        best = int(np.argmax(scores))
        finished.append((scores[best] / max(len(beams[best]), 1), beams[best]))
    tokens = max(finished, key=lambda item: item[0])[1]
    return Transcription(tokens, encode_seconds, time.perf_counter() - started, steps, {"beam_size": beam_size})


class NoCacheDecoder(Protocol):
    def __call__(self, tokens: Array, cross_k: Array, cross_v: Array) -> Array: ...


def greedy_nocache(encode: Parts, decoder: NoCacheDecoder, mel: Array, config: GenerationConfig) -> Transcription:
    """Greedy decoding with a decoder that recomputes the whole sequence every step (the baseline
    the KV cache is measured against)."""
    always, begin = config.suppress_mask()
    started = time.perf_counter()
    cross_k, cross_v = encode.encode(mel[None].astype(np.float32))
    encoded = time.perf_counter()
    tokens = list(config.prompt)
    while len(tokens) <= config.max_tokens:  # as the cached loop: every fed token fits in the cache
        logits = decoder(np.array([tokens], dtype=np.int64), cross_k, cross_v)
        token = int(np.argmax(logits[0] + (always if len(tokens) > len(config.prompt) else begin)))
        if token == config.eos:
            break
        tokens.append(token)
    generated = tokens[len(config.prompt) :]
    return Transcription(generated, encoded - started, time.perf_counter() - encoded, len(generated) + 1)


class OrtParts:
    """The exported parts on ONNX Runtime (an .onnx or .ort file each)."""

    def __init__(self, encoder: Path, decoder: Path, threads: int = 1) -> None:
        from compiler.ort_session import session

        self.encoder, self.decoder = session(encoder, threads), session(decoder, threads)

    def encode(self, mel: Array) -> tuple[Array, Array]:
        cross_k, cross_v = self.encoder.run(None, {"mel": mel})
        return cross_k, cross_v

    def step(self, tokens, position, self_k, self_v, cross_k, cross_v):  # noqa: ANN001, ANN201 (Parts)
        feeds = {
            "tokens": tokens,
            "position": position,
            "self_k": self_k,
            "self_v": self_v,
            "cross_k": cross_k,
            "cross_v": cross_v,
        }
        logits, k, v = self.decoder.run(None, feeds)
        return logits, k, v


class OrtNoCache:
    def __init__(self, decoder: Path, threads: int = 1) -> None:
        from compiler.ort_session import session

        self.session = session(decoder, threads)

    def __call__(self, tokens: Array, cross_k: Array, cross_v: Array) -> Array:
        return self.session.run(None, {"tokens": tokens, "cross_k": cross_k, "cross_v": cross_v})[0]


class TorchParts:
    """The PyTorch FP32 model through the same wrappers the export traces: the reference."""

    def __init__(self, model: Any) -> None:
        import torch

        from compiler.families.speech.export import WhisperDecoderStep, WhisperEncoderPart

        self.torch = torch
        self.encoder, self.decoder = WhisperEncoderPart(model).eval(), WhisperDecoderStep(model).eval()

    def encode(self, mel: Array) -> tuple[Array, Array]:
        with self.torch.inference_mode():
            cross_k, cross_v = self.encoder(self.torch.from_numpy(mel))
        return cross_k.numpy(), cross_v.numpy()

    def step(self, tokens, position, self_k, self_v, cross_k, cross_v):  # noqa: ANN001, ANN201 (Parts)
        t = self.torch.from_numpy
        with self.torch.inference_mode():
            logits, k, v = self.decoder(t(tokens), t(position), t(self_k), t(self_v), t(cross_k), t(cross_v))
        return logits.numpy(), k.numpy(), v.numpy()


Run = Callable[[dict[str, Array]], list[Array]]


class PredictorParts:
    """Compiled graphs as generation `Parts`, through their backend's predictors (named feeds)."""

    DECODER_INPUTS = ("tokens", "position", "self_k", "self_v", "cross_k", "cross_v")

    def __init__(self, encoder: Run, decoder: Run) -> None:
        self.encoder, self.decoder = encoder, decoder

    def encode(self, mel: Array) -> tuple[Array, Array]:
        cross_k, cross_v = self.encoder({"mel": mel})
        return cross_k, cross_v

    def step(self, tokens, position, self_k, self_v, cross_k, cross_v):  # noqa: ANN001, ANN201 (Parts)
        values = (tokens, position, self_k, self_v, cross_k, cross_v)
        logits, k, v = self.decoder(dict(zip(self.DECODER_INPUTS, values, strict=True)))
        return logits, k, v


__all__ = [
    "GenerationConfig",
    "OrtNoCache",
    "OrtParts",
    "PredictorParts",
    "Parts",
    "TorchParts",
    "Transcription",
    "beam_search",
    "greedy",
    "greedy_nocache",
]
