"""Small real models and ORT helpers shared by the tests.

The models are real architectures (a Conv+BatchNorm+ReLU CNN, a 2-layer BERT from transformers)
exported with the same exporter settings as the importers, just small enough to keep tests quick.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from passes.base import Feeds, Fidelity, PassContext


def run_ort(model: onnx.ModelProto, feeds: Feeds) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def assert_numerically_close(
    original: onnx.ModelProto,
    rewritten: onnx.ModelProto,
    feeds: list[Feeds],
    min_cosine: float = 0.999,
    atol: float | None = None,
) -> None:
    """ORT outputs of both models agree on every batch (cosine, and optionally max abs error)."""
    for batch in feeds:
        for expected, actual in zip(run_ort(original, batch), run_ort(rewritten, batch), strict=True):
            assert expected.shape == actual.shape
            assert cosine(expected, actual) >= min_cosine, cosine(expected, actual)
            if atol is not None:
                np.testing.assert_allclose(actual, expected, atol=atol, rtol=0)


def export(
    module: torch.nn.Module, args: tuple, input_names: list[str], output_names: list[str], dynamic_axes: dict
) -> onnx.ModelProto:
    module.eval()
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            buffer,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=17,
            dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


class TinyCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1),
            torch.nn.BatchNorm2d(16),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.BatchNorm2d(32),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def tiny_cnn() -> tuple[onnx.ModelProto, list[Feeds]]:
    torch.manual_seed(0)
    net = TinyCNN()
    with torch.no_grad():  # non-trivial BN statistics, so folding BN is observable
        for bn in (net.features[1], net.features[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    model = export(net, (torch.randn(1, 1, 8, 8),), ["image"], ["logits"], {"image": {0: "batch"}})
    rng = np.random.default_rng(0)
    feeds = [{"image": rng.standard_normal((1, 1, 8, 8)).astype(np.float32)} for _ in range(8)]
    return model, feeds


class _LastHiddenState(torch.nn.Module):
    """transformers 5 models take keyword arguments only; the exporter passes positionals."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def tiny_bert() -> tuple[onnx.ModelProto, list[Feeds]]:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=200,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    net = _LastHiddenState(BertModel(config)).eval()
    ids = torch.randint(0, 200, (1, 16))
    mask = torch.ones_like(ids)
    model = export(
        net,
        (ids, mask),
        ["input_ids", "attention_mask"],
        ["last_hidden_state"],
        {
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "last_hidden_state": {0: "batch", 1: "seq"},
        },
    )
    rng = np.random.default_rng(0)
    feeds = [
        {
            "input_ids": rng.integers(0, 200, (1, 16)).astype(np.int64),
            "attention_mask": np.ones((1, 16), dtype=np.int64),
        }
        for _ in range(8)
    ]
    return model, feeds


def make_context(
    reference: onnx.ModelProto,
    feeds: list[Feeds],
    workdir: Path,
    architecture: str,
    min_cosine: float = 0.99,
    transformer_shape: dict | None = None,
) -> PassContext:
    """A real context: calibration = `feeds`; evaluate = mean output cosine vs `reference` on ORT."""
    expected = [run_ort(reference, batch) for batch in feeds]

    def evaluate(candidate: onnx.ModelProto) -> Fidelity:
        scores = [cosine(e[0], a[0]) for e, a in zip(expected, (run_ort(candidate, b) for b in feeds), strict=True)]
        mean = float(np.mean(scores))
        return Fidelity(
            "output_cosine",
            mean,
            mean >= min_cosine,
            f"mean cosine {mean:.4f}; budget >= {min_cosine}",
            {"min": float(min(scores))},
        )

    return PassContext(
        workdir=workdir,
        architecture=architecture,
        calibration=lambda: feeds,
        evaluate=evaluate,
        fingerprint="test",
        transformer_shape=transformer_shape or {},
    )
