"""Deterministic supervised fine-tuning and accuracy for classifiers (shared by PyTorch-level passes).

Used by `prune-channels` to recover accuracy after removing channels, and by the digits example
model to train from scratch. Deterministic for a given seed: its own shuffling generator, a fixed
thread count, deterministic algorithms; the caller's global RNG and thread settings are restored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

# Fixed so that training is bit-reproducible whatever the machine's core count (the result of a
# float reduction can depend on how it is split across threads).
TRAIN_THREADS = 2
BATCH_SIZE = 64


@contextmanager
def reproducible(seed: int) -> Iterator[None]:
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


def fine_tune(
    module: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float = 3e-3, seed: int = 0
) -> nn.Module:
    """Train `module` in place on (x, y) with Adam + one-cycle LR and cross-entropy; returns it in eval mode.

    Deterministic for a given seed (its own shuffling generator, fixed threads); the caller's global
    RNG and thread settings are left as they were.
    """
    inputs, labels = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    steps_per_epoch = -(-len(inputs) // BATCH_SIZE)
    with reproducible(seed):
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(module.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
        module.train()
        for _ in range(epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for start in range(0, len(inputs), BATCH_SIZE):
                batch = order[start : start + BATCH_SIZE]
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
