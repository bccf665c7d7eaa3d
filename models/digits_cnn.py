"""DigitsCNN: a small real CNN trained on sklearn's bundled 8x8 digits (the vision example model).

The recipe's torch factory is `models.digits_cnn:build`; `train_data()` and `eval_data()` give the
pipeline its fine-tuning/calibration split and its held-out accuracy split. Everything is offline
(`load_digits` ships with scikit-learn) and deterministic: two `build()` calls in one environment
give bit-identical weights.

The layer widths are chosen so that the convolutions, not per-operator overhead, dominate ONNX
Runtime latency at batch 32-64; otherwise INT8 and channel pruning could not show their speed-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from passes.classifier_training import accuracy, fine_tune, reproducible

__all__ = ["DigitsCNN", "accuracy", "build", "eval_data", "fine_tune", "load_splits", "train_data"]

DEFAULT_EPOCHS = 12
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Splits:
    """A deterministic stratified train / held-out split: x float32 (N, 1, 8, 8) in 0..1, y int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()]


class DigitsCNN(nn.Module):
    """Five Conv-BN-ReLU blocks (32/64/64 at 8x8, 128/128 at 4x4), global average pool, linear head.

    ~7 M multiply-adds per image, almost all in the 3x3 convolutions, so that removing channels
    (which shrinks both a conv's outputs and the next conv's inputs) cuts compute ~quadratically.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 64, 128, 128), num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = widths
        self.features = nn.Sequential(
            *_conv_block(1, c1),
            *_conv_block(c1, c2),
            *_conv_block(c2, c3),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            *_conv_block(c3, c4),
            *_conv_block(c4, c5),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(c5, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_splits(seed: int = 0) -> Splits:
    """sklearn digits as images normalised to 0..1, split 80/20 stratified with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_FRACTION, stratify=y, random_state=seed)
    return Splits(x_train, y_train, x_test, y_test)


def train_data() -> tuple[np.ndarray, np.ndarray]:
    """The training split (x, y): for fine-tuning after pruning and for INT8 calibration."""
    splits = load_splits()
    return splits.x_train, splits.y_train


def eval_data() -> tuple[np.ndarray, np.ndarray]:
    """The held-out split (x, y) the accuracy metric is measured on; never used for training."""
    splits = load_splits()
    return splits.x_test, splits.y_test


def build(seed: int = 0, epochs: int = DEFAULT_EPOCHS) -> DigitsCNN:
    """Train a DigitsCNN from scratch on the training split; returns it in eval mode.

    The recipe's torch factory (called with no arguments). Deterministic: same seed, same
    environment -> bit-identical state_dict.
    """
    x, y = train_data()
    with reproducible(seed):
        model = DigitsCNN()  # initialised from the seeded generator
    return fine_tune(model, x, y, epochs=epochs, seed=seed)
