"""Modern exports with random weights, written the way a user's own export script would write them.

Each function writes one ONNX file into a directory and returns its path: torchvision-style CNN
blocks built from their definitions (no torchvision here), transformers models from small configs
(ViT, a BERT-like encoder, a GPT-2-like decoder), a detection head, and a dynamo export whose
weights are external data. Random weights with BatchNorm statistics calibrated on random inputs
(a few training-mode passes), so outputs are not degenerate.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

SEED = 0


def _calibrate_batchnorm(module: nn.Module, example: torch.Tensor, passes: int = 8) -> nn.Module:
    """Running statistics from random inputs (a fresh BatchNorm has mean 0, var 1: not what its
    inputs have), then eval mode."""
    module.train()
    with torch.no_grad():
        for _ in range(passes):
            module(torch.randn_like(example))
    return module.eval()


def _export(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> Path:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            inputs,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=17,
            dynamo=False,
        )
    return path


class InvertedResidual(nn.Module):
    """MobileNetV2's block (expand 1x1, depthwise 3x3, project 1x1, residual), from its definition."""

    def __init__(self, channels: int, expand: int = 4) -> None:
        super().__init__()
        hidden = channels * expand
        self.block = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class BasicBlock(nn.Module):
    """ResNet-18's block, from its definition."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(out)))


def small_cnn(kind: str) -> nn.Module:
    block = {"resnet": BasicBlock, "mobilenet": InvertedResidual}[kind]
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        block(16),
        block(16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def resnet_block_cnn(directory: Path) -> Path:
    torch.manual_seed(SEED)
    x = torch.randn(1, 3, 32, 32)
    model = _calibrate_batchnorm(small_cnn("resnet"), x)
    return _export(model, (x,), directory / "resnet_blocks.onnx", ["image"], ["logits"], {"image": {0: "batch"}})


def mobilenet_block_cnn(directory: Path) -> Path:
    torch.manual_seed(SEED)
    x = torch.randn(1, 3, 32, 32)
    model = _calibrate_batchnorm(small_cnn("mobilenet"), x)
    return _export(model, (x,), directory / "mobilenet_blocks.onnx", ["image"], ["logits"], {"image": {0: "batch"}})


class DetectionHead(nn.Module):
    """A YOLO-like single-scale head: a conv backbone, then per-cell boxes and class scores."""

    def __init__(self, classes: int = 4, anchors: int = 2) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.SiLU(),
        )  # fmt: skip
        self.boxes = nn.Conv2d(32, anchors * 4, 1)
        self.scores = nn.Conv2d(32, anchors * classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        boxes = self.boxes(features).flatten(2).transpose(1, 2)
        scores = torch.sigmoid(self.scores(features)).flatten(2).transpose(1, 2)
        return boxes, scores


def detection_head(directory: Path) -> Path:
    torch.manual_seed(SEED)
    x = torch.randn(1, 3, 64, 64)
    model = _calibrate_batchnorm(DetectionHead(), x)
    return _export(model, (x,), directory / "detection_head.onnx", ["image"], ["boxes", "scores"], {})


class _HiddenState(nn.Module):
    """A transformers model returning its last hidden state only (one output, as exported)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.inner(*inputs).last_hidden_state


def vit(directory: Path) -> Path:
    """A 2-layer ViT (random weights): its output dims get names the exporter invents."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(SEED)
    config = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                       image_size=32, patch_size=8, add_pooling_layer=False)  # fmt: skip
    model = _HiddenState(ViTModel(config, add_pooling_layer=False))
    x = torch.randn(1, 3, 32, 32)
    axes = {"pixel_values": {0: "batch"}, "last_hidden_state": {0: "batch"}}
    return _export(model, (x,), directory / "vit.onnx", ["pixel_values"], ["last_hidden_state"], axes)


def bert_like(directory: Path) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(SEED)
    config = BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64)  # fmt: skip
    model = _HiddenState(BertModel(config, add_pooling_layer=False))
    ids, mask = torch.randint(0, 512, (1, 16)), torch.ones(1, 16, dtype=torch.int64)
    axes = {name: {0: "batch", 1: "seq"} for name in ("input_ids", "attention_mask", "last_hidden_state")}
    return _export(model, (ids, mask), directory / "bert_like.onnx", ["input_ids", "attention_mask"],
                   ["last_hidden_state"], axes)  # fmt: skip


def gpt2_like(directory: Path) -> Path:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(SEED)
    config = GPT2Config(vocab_size=512, n_positions=64, n_embd=64, n_layer=2, n_head=2, use_cache=False)
    model = _HiddenState(GPT2Model(config))
    # Explicit positions and mask: without them transformers' packed-sequence check uses aten::diff,
    # which the TorchScript exporter cannot export.
    ids, mask = torch.randint(0, 512, (1, 16)), torch.ones(1, 16, dtype=torch.int64)
    positions = torch.arange(16).unsqueeze(0)
    names = ["input_ids", "past_key_values", "attention_mask", "token_type_ids", "position_ids"]
    inputs = (ids, None, mask, None, positions)
    axes = {name: {0: "batch", 1: "seq"} for name in ("input_ids", "attention_mask", "position_ids")}
    axes["last_hidden_state"] = {0: "batch", 1: "seq"}
    kept = [name for name, value in zip(names, inputs, strict=True) if value is not None]
    return _export(model, inputs, directory / "gpt2_like.onnx", kept, ["last_hidden_state"], axes)


def dynamo_external_data(directory: Path) -> Path:
    """The dynamo exporter's default form: weights in `model.onnx.data` beside the graph."""
    torch.manual_seed(SEED)
    x = torch.randn(1, 3, 32, 32)
    model = _calibrate_batchnorm(small_cnn("resnet"), x)
    path = directory / "dynamo_cnn.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, input_names=["image"], output_names=["logits"])
        program.save(str(path), external_data=True)
    return path


EXPORTS: dict[str, Callable[[Path], Path]] = {
    "resnet_blocks": resnet_block_cnn,
    "mobilenet_blocks": mobilenet_block_cnn,
    "detection_head": detection_head,
    "vit": vit,
    "bert_like": bert_like,
    "gpt2_like": gpt2_like,
    "dynamo_external_data": dynamo_external_data,
}

__all__ = ["EXPORTS"]
