"""Whisper as two ONNX graphs: an encoder and a decoder step with a static KV cache.

The split is the one device code wants (and the one every runtime here can compile):

- `encoder.onnx`: log-mel `[batch, 80, 3000]` -> `cross_k`, `cross_v` `[layers, batch, 1500, d_model]`.
  The cross-attention keys and values of every decoder layer are computed once per clip here,
  so no decoder step repeats that work.
- `decoder.onnx` (one token per call): `tokens [batch, 1]`, `position [1]`, the self-attention
  cache `self_k`, `self_v` `[layers, batch, max_tokens, d_model]` and `cross_k`, `cross_v` ->
  `logits [batch, vocab]` and the updated cache. The cache has a fixed capacity (`max_tokens`):
  the new key/value is written at `position` with an `Equal` + `Where` (no scatter, no growing
  tensors) and positions after it are masked. Fixed shapes are what TVM, Core ML and LiteRT
  need, and ONNX Runtime runs it unchanged.
- `decoder_nocache.onnx` (checks and benchmarks only, never shipped): the whole token sequence
  in, the last position's logits out, everything recomputed each step.

The output projection is tied to the token embeddings. Both graphs keep ONE copy of that
`[vocab, d_model]` table, stored transposed (`[d_model, vocab]`): the logits are a plain MatMul
with it and the token lookup is a Gather along its axis 1, so constant folding cannot duplicate
the largest tensor of the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from compiler.errors import ModelError
from compiler.importers.torch_export import onnx_export

N_MELS = 80
N_FRAMES = 3000


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[batch, time, d_model] -> [batch, heads, time, head_dim]."""
    batch, time, width = x.shape
    return x.reshape(batch, time, heads, width // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    batch, heads, time, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, time, heads * head_dim)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    """Scaled dot-product attention; `q` is already scaled (Whisper scales the query projection)."""
    scores = _heads(q, heads) @ _heads(k, heads).transpose(-1, -2)
    if mask is not None:
        scores = scores + mask
    return _merge(torch.softmax(scores, dim=-1) @ _heads(v, heads))


class WhisperEncoderPart(nn.Module):
    """Log-mel -> the cross-attention keys and values of every decoder layer."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.encoder = model.model.encoder
        self.cross = nn.ModuleList(layer.encoder_attn for layer in model.model.decoder.layers)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(mel).last_hidden_state
        keys = torch.stack([attn.k_proj(hidden) for attn in self.cross])
        values = torch.stack([attn.v_proj(hidden) for attn in self.cross])
        return keys, values


class _DecoderBase(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        decoder = model.model.decoder
        self.layers = decoder.layers
        self.final_norm = decoder.layer_norm
        self.positions = decoder.embed_positions.weight
        self.heads = model.config.decoder_attention_heads
        # The one copy of the tied embedding table, transposed: MatMul for logits, Gather(axis=1) for lookup.
        self.table_t = nn.Parameter(decoder.embed_tokens.weight.detach().t().contiguous(), requires_grad=False)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, time = tokens.shape
        looked_up = torch.index_select(self.table_t, 1, tokens.reshape(-1))  # [d_model, batch*time]
        return looked_up.t().reshape(batch, time, -1)

    def block(
        self,
        index: int,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        self_mask: torch.Tensor | None,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
    ) -> torch.Tensor:
        """One decoder layer, given this layer's full self-attention keys/values."""
        layer = self.layers[index]
        h = layer.self_attn_layer_norm(x)
        q = layer.self_attn.q_proj(h) * layer.self_attn.scaling
        x = x + layer.self_attn.out_proj(_attend(q, k, v, self.heads, self_mask))
        h = layer.encoder_attn_layer_norm(x)
        q = layer.encoder_attn.q_proj(h) * layer.encoder_attn.scaling
        x = x + layer.encoder_attn.out_proj(_attend(q, cross_k, cross_v, self.heads, None))
        h = layer.final_layer_norm(x)
        return x + layer.fc2(F.gelu(layer.fc1(h)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_norm(x) @ self.table_t


class WhisperDecoderStep(_DecoderBase):
    """One token in, next-token logits and the updated fixed-capacity self-attention cache out."""

    def forward(
        self,
        tokens: torch.Tensor,  # [batch, 1] int64
        position: torch.Tensor,  # [1] int64: where this token goes in the cache
        self_k: torch.Tensor,  # [layers, batch, max_tokens, d_model]
        self_v: torch.Tensor,
        cross_k: torch.Tensor,  # [layers, batch, 1500, d_model]
        cross_v: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        slots = torch.arange(self_k.shape[2], dtype=torch.int64)
        write = (slots == position).reshape(1, -1, 1)  # [1, max_tokens, 1]
        mask = torch.where(slots <= position, 0.0, float("-inf")).reshape(1, 1, 1, -1)
        x = self.embed(tokens) + torch.index_select(self.positions, 0, position).unsqueeze(0)
        new_k, new_v = [], []
        for index, layer in enumerate(self.layers):
            h = layer.self_attn_layer_norm(x)
            k = torch.where(write, layer.self_attn.k_proj(h), self_k[index])
            v = torch.where(write, layer.self_attn.v_proj(h), self_v[index])
            new_k.append(k)
            new_v.append(v)
            x = self.block(index, x, k, v, mask, cross_k[index], cross_v[index])
        return self.logits(x)[:, -1, :], torch.stack(new_k), torch.stack(new_v)


class WhisperDecoderNoCache(_DecoderBase):
    """The whole token sequence in, the last position's logits out (recomputes everything)."""

    def forward(self, tokens: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        x = self.embed(tokens) + self.positions[:length].unsqueeze(0)
        causal = torch.triu(torch.full((length, length), float("-inf")), diagonal=1)
        for index, layer in enumerate(self.layers):
            h = layer.self_attn_layer_norm(x)
            k, v = layer.self_attn.k_proj(h), layer.self_attn.v_proj(h)
            x = self.block(index, x, k, v, causal, cross_k[index], cross_v[index])
        return self.logits(x)[:, -1, :]


def cache_shape(model: Any, max_tokens: int, batch: int = 1) -> tuple[int, int, int, int]:
    config = model.config
    return (config.decoder_layers, batch, max_tokens, config.d_model)


def _export(module: nn.Module, args: tuple, path: Path, names: list[str], outputs: list[str], axes: dict) -> None:
    onnx_export(module, args, path, names, outputs, axes, f"whisper {path.stem}")


def export_parts(model: Any, max_tokens: int, directory: Path, nocache: bool = True) -> dict[str, Path]:
    """Write encoder.onnx, decoder.onnx (and decoder_nocache.onnx) for `model` into `directory`."""
    model.eval()
    config = model.config
    if max_tokens > config.max_target_positions:
        raise ModelError(f"max_tokens = {max_tokens} exceeds the model's {config.max_target_positions} positions")
    encoder, step_decoder = WhisperEncoderPart(model).eval(), WhisperDecoderStep(model).eval()
    mel = torch.zeros(1, config.num_mel_bins, N_FRAMES)
    with torch.no_grad():
        cross_k, cross_v = encoder(mel)
    cache = torch.zeros(cache_shape(model, max_tokens))
    paths = {"encoder": directory / "encoder.onnx", "decoder": directory / "decoder.onnx"}
    _export(
        encoder,
        (mel,),
        paths["encoder"],
        ["mel"],
        ["cross_k", "cross_v"],
        {"mel": {0: "batch"}, "cross_k": {1: "batch"}, "cross_v": {1: "batch"}},
    )
    batch_axis = {1: "batch"}
    _export(
        step_decoder,
        (torch.tensor([[config.decoder_start_token_id]]), torch.tensor([0]), cache, cache.clone(), cross_k, cross_v),
        paths["decoder"],
        ["tokens", "position", "self_k", "self_v", "cross_k", "cross_v"],
        ["logits", "self_k_out", "self_v_out"],
        {
            "tokens": {0: "batch"},
            "self_k": batch_axis,
            "self_v": batch_axis,
            "cross_k": batch_axis,
            "cross_v": batch_axis,
            "logits": {0: "batch"},
            "self_k_out": batch_axis,
            "self_v_out": batch_axis,
        },
    )
    if nocache:
        paths["decoder_nocache"] = directory / "decoder_nocache.onnx"
        _export(
            WhisperDecoderNoCache(model).eval(),
            (torch.tensor([[config.decoder_start_token_id] * 2]), cross_k, cross_v),
            paths["decoder_nocache"],
            ["tokens", "cross_k", "cross_v"],
            ["logits"],
            {"tokens": {0: "batch", 1: "length"}, "cross_k": batch_axis, "cross_v": batch_axis, "logits": {0: "batch"}},
        )
    return paths


__all__ = [
    "WhisperDecoderNoCache",
    "WhisperDecoderStep",
    "WhisperEncoderPart",
    "cache_shape",
    "export_parts",
]
