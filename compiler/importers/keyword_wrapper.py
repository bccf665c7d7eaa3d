"""Positional export inputs -> a keyword call of a transformers model (kept apart: it imports torch)."""

from __future__ import annotations

import torch


class KeywordWrapper(torch.nn.Module):
    """Positional inputs in the recipe's order -> keyword call -> the recipe's named outputs.

    transformers 5 models take keyword arguments only, and the exporter passes positionals.
    """

    def __init__(self, inner: torch.nn.Module, input_names: list[str], output_names: list[str]) -> None:
        super().__init__()
        self.inner, self.input_names, self.output_names = inner, input_names, output_names

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.inner(**dict(zip(self.input_names, args, strict=True)))
        return tuple(getattr(out, name) for name in self.output_names)
