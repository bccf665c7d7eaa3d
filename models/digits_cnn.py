"""DigitsCNN: a small real CNN trained on sklearn's bundled 8x8 digits (the vision example model).

The recipe's torch factory is `models.digits_cnn:build`; `train_data()` and `eval_data()` give the
pipeline its fine-tuning/calibration split and its held-out accuracy split. Everything is offline
(`load_digits` ships with scikit-learn) and deterministic: two `build()` calls in one environment
give bit-identical weights.

The layer widths are chosen so that the convolutions, not per-operator overhead, dominate ONNX
Runtime latency at batch 32-64; otherwise INT8 and channel pruning could not show their speed-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# Fixed so that training is bit-reproducible whatever the machine's core count (the result of a
# float reduction can depend on how it is split across threads).
TRAIN_THREADS = 2
DEFAULT_EPOCHS = 12
BATCH_SIZE = 64
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Splits:
    """A deterministic stratified train / held-out split: x float32 (N, 1, 8, 8) in 0..1, y int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU()]


class DigitsCNN(nn.Module):
    """Five Conv-BN-ReLU blocks (32/64/64 at 8x8, 128/128 at 4x4), global average pool, linear head.

    ~7 M multiply-adds per image, almost all in the 3x3 convolutions, so that removing channels
    (which shrinks both a conv's outputs and the next conv's inputs) cuts compute ~quadratically.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 64, 128, 128), num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = widths
        self.features = nn.Sequential(
            *_conv_block(1, c1), *_conv_block(c1, c2), *_conv_block(c2, c3),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            *_conv_block(c3, c4), *_conv_block(c4, c5),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
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
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=seed)
    return Splits(x_train, y_train, x_test, y_test)


def train_data() -> tuple[np.ndarray, np.ndarray]:
    """The training split (x, y): for fine-tuning after pruning and for INT8 calibration."""
    splits = load_splits()
    return splits.x_train, splits.y_train


def eval_data() -> tuple[np.ndarray, np.ndarray]:
    """The held-out split (x, y) the accuracy metric is measured on; never used for training."""
    splits = load_splits()
    return splits.x_test, splits.y_test


@contextmanager
def _reproducible(seed: int) -> Iterator[None]:
    """Seeded, deterministic, fixed-thread torch for the duration; global state restored after."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(TRAIN_THREADS)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic)
            torch.set_num_threads(threads)


def fine_tune(module: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float = 3e-3,
              seed: int = 0) -> nn.Module:
    """Train `module` in place on (x, y) with Adam + one-cycle LR and cross-entropy; returns it in eval mode.

    Deterministic for a given seed (its own shuffling generator, fixed threads); the caller's global
    RNG and thread settings are left as they were.
    """
    inputs, labels = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    steps_per_epoch = -(-len(inputs) // BATCH_SIZE)
    with _reproducible(seed):
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(module.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr,
                                                       total_steps=epochs * steps_per_epoch)
        module.train()
        for _ in range(epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for start in range(0, len(inputs), BATCH_SIZE):
                batch = order[start:start + BATCH_SIZE]
                optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(module(inputs[batch]), labels[batch])
                loss.backward()
                optimizer.step()
                schedule.step()
    return module.eval()


def accuracy(module: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy in percent of `module` (switched to eval mode) on (x, y)."""
    module.eval()
    with torch.no_grad():
        predictions = module(torch.from_numpy(np.ascontiguousarray(x))).argmax(dim=1).numpy()
    return float((predictions == y).mean() * 100.0)


def build(seed: int = 0, epochs: int = DEFAULT_EPOCHS) -> DigitsCNN:
    """Train a DigitsCNN from scratch on the training split; returns it in eval mode.

    The recipe's torch factory (called with no arguments). Deterministic: same seed, same
    environment -> bit-identical state_dict.
    """
    x, y = train_data()
    with _reproducible(seed):
        model = DigitsCNN()  # initialised from the seeded generator
    return fine_tune(model, x, y, epochs=epochs, seed=seed)
