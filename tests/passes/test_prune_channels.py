"""prune-channels: real channel removal on DigitsCNN, exact index mapping, refusals."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from compiler.errors import ConfigError, PassError
from models import digits_cnn
from passes import base, classifier_training
from passes.base import TorchPassContext
from passes.prune_channels import PruneChannels

EXAMPLE = (torch.zeros(1, 1, 8, 8),)


def context(tmp_path: Path, train: bool = False, evaluate: bool = False) -> TorchPassContext:
    return TorchPassContext(
        workdir=tmp_path,
        example_inputs=EXAMPLE,
        train_data=digits_cnn.train_data() if train else None,
        eval_data=digits_cnn.eval_data() if evaluate else None,
        fingerprint="test",
    )


def onnx_bytes(module: nn.Module) -> int:
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            module.eval(),
            EXAMPLE,
            buffer,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return len(buffer.getvalue())


@pytest.fixture(scope="module")
def trained() -> digits_cnn.DigitsCNN:
    return digits_cnn.build(epochs=4)  # a few epochs: ~99% already, and quick


@pytest.fixture(scope="module")
def pruned(trained: digits_cnn.DigitsCNN, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict, dict]:
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    ctx = context(tmp_path_factory.mktemp("prune"), train=True, evaluate=True)
    module, stats = PruneChannels(PruneChannels.Config(ratio=0.5, fine_tune_epochs=6)).run(trained, ctx)
    return module, stats, before


def test_halving_channels_quarters_parameters_and_shrinks_onnx(trained: nn.Module, pruned: tuple) -> None:
    module, stats, _ = pruned
    assert stats["layers"]["features.3"] == {"channels_before": 64, "channels_after": 32}
    assert module.features[3].weight.shape == (32, 16, 3, 3)  # its input shrank with features.0
    assert module.head.in_features == 64
    ratio = stats["parameters_after"] / stats["parameters_before"]
    assert 0.2 < ratio < 0.3, ratio  # ~(1 - 0.5)^2: each conv loses inputs and outputs
    assert stats["parameters_after"] == sum(p.numel() for p in module.parameters())
    assert onnx_bytes(module) < 0.35 * onnx_bytes(trained)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert module(x).shape == trained(x).shape == (5, 10)


def test_fine_tuned_accuracy_within_one_point(trained: nn.Module, pruned: tuple) -> None:
    module, stats, _ = pruned
    reference = digits_cnn.accuracy(trained, *digits_cnn.eval_data())
    assert stats["fine_tuned"] and stats["accuracy_before"] == pytest.approx(reference)
    assert stats["accuracy_fine_tuned"] >= reference - 1.0, stats
    assert digits_cnn.accuracy(module, *digits_cnn.eval_data()) == pytest.approx(stats["accuracy_fine_tuned"])
    assert not module.training


def test_input_module_is_not_mutated(trained: nn.Module, pruned: tuple) -> None:
    _, _, before = pruned
    after = trained.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trained.features[0].out_channels == 32 and not trained.training


def test_fine_tuning_is_deterministic(trained: nn.Module, tmp_path: Path) -> None:
    config = PruneChannels.Config(ratio=0.5, fine_tune_epochs=1)
    first, _ = PruneChannels(config).run(trained, context(tmp_path, train=True))
    second, _ = PruneChannels(config).run(trained, context(tmp_path, train=True))
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


class FlattenNet(nn.Module):
    """Conv chain flattened at 8x8 into a Linear: removed channels map to 64-feature blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Dropout2d(0.1),
        )
        self.head = nn.Linear(16 * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.body(x), 1))


@pytest.mark.parametrize("make", [digits_cnn.DigitsCNN, FlattenNet])
def test_removing_dead_channels_is_exact(make: type[nn.Module], tmp_path: Path) -> None:
    """Channels whose BN zeroes them (gamma 0, beta -1, then ReLU) rank last; removing them is exact."""
    torch.manual_seed(0)
    net = make().eval()
    with torch.no_grad():
        for norm in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            dead = torch.randperm(norm.num_features)[: norm.num_features // 2]
            norm.weight[dead], norm.bias[dead] = 0.0, -1.0
    module, stats = PruneChannels(PruneChannels.Config(ratio=0.5)).run(net, context(tmp_path))
    assert not stats["fine_tuned"] and "no training data" in stats["note"]
    assert all(layer["channels_after"] * 2 == layer["channels_before"] for layer in stats["layers"].values())
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(module(x), net(x), atol=1e-5, rtol=1e-5)


def test_layers_and_min_channels_limit_what_is_removed(tmp_path: Path) -> None:
    net = digits_cnn.DigitsCNN().eval()
    module, stats = PruneChannels(PruneChannels.Config(ratio=0.9, layers=("features.0",))).run(net, context(tmp_path))
    assert stats["layers"] == {"features.0": {"channels_before": 32, "channels_after": 8}}  # min_channels
    assert module.features[3].in_channels == 8 and module.features[3].out_channels == 64
    with pytest.raises(ConfigError, match="features.1'.*did you mean"):
        PruneChannels(PruneChannels.Config(layers=("features.1",))).run(net, context(tmp_path))
    with pytest.raises(ConfigError, match="ratio"):
        PruneChannels.Config(ratio=1.0)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        return self.head(torch.relu(x + self.block(x)))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3, groups=4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_refuses_residual_adds_and_grouped_convs_naming_the_layer(tmp_path: Path) -> None:
    with pytest.raises(PassError, match="layer 'stem'.*feeds 2 operations"):
        PruneChannels().run(Residual(), context(tmp_path))
    with pytest.raises(PassError, match="layer 'block.0'.*another tensor"):
        PruneChannels(PruneChannels.Config(layers=("block.0",))).run(Residual(), context(tmp_path))
    with pytest.raises(PassError, match="body.0.*grouped convolution 'body.2'"):
        PruneChannels().run(Grouped(), context(tmp_path))


def test_conv_feeding_the_model_output_is_left_whole(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3))
    module, stats = PruneChannels().run(net, context(tmp_path))
    assert set(stats["layers"]) == {"0"} and "model output" in stats["skipped"]["2"]
    assert module(torch.rand(2, 1, 8, 8)).shape == (2, 16, 4, 4)


def test_cache_key_covers_the_shared_fine_tune_loop() -> None:
    """The pass's fingerprint is computed from what it imports: the shared fine-tune loop included."""
    from compiler.engine.fingerprint import closure

    files = {path.resolve() for path in closure([PruneChannels.__module__])}
    assert Path(classifier_training.__file__).resolve() in files and Path(base.__file__).resolve() in files
