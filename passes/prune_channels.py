"""prune-channels: structured pruning that physically removes Conv2d output channels."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import fx, nn
from torch.nn import functional as F

from compiler.errors import ConfigError, PassError, did_you_mean
from passes import classifier_training
from passes.base import TorchPass, TorchPassContext

# Ops a channel passes through unchanged: elementwise, or per channel like Dropout2d.
_CHANNELWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)
_CHANNELWISE_FUNCTIONS = {
    F.relu,
    torch.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.gelu,
    F.silu,
    F.hardswish,
    F.sigmoid,
    torch.sigmoid,
    torch.tanh,
    F.dropout,
}
_CHANNELWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}
# Per-channel spatial ops: valid on the 4-D tensor only, before it is flattened.
_SPATIAL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_SPATIAL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}


@dataclass(frozen=True)
class _Group:
    """One pruned conv and the layers whose inputs must shrink with it."""

    producer: str  # the Conv2d whose output channels are removed
    norms: tuple[str, ...]  # BatchNorm2d layers between it and the consumer
    scale_norm: str | None  # a BatchNorm2d directly after the conv: its scale enters the ranking
    consumer: str  # the Conv2d (input channels) or Linear (input features) that reads it
    features_per_channel: int  # Linear only: flattened features per channel (H*W); 1 for a conv


class PruneChannels(TorchPass):
    """Remove the lowest-L1 output channels of Conv2d layers and rebuild the smaller layers.

    What it does: traces the module with torch.fx and follows each Conv2d's output through
    BatchNorm2d, activations, pooling and dropout to the next Conv2d, or through Flatten to a Linear.
    It keeps the `1 - ratio` channels (at least `min_channels`) with the largest filter L1 norm (times
    the scale of a BatchNorm right after the conv, which rescales channels) and rebuilds the conv,
    the BatchNorms and the consumer's inputs (a Linear loses the H*W features of each removed channel).
    With training data it then fine-tunes the whole model with `passes.classifier_training.fine_tune` (Adam,
    one-cycle LR, cross-entropy, seeded; that file is part of this pass's digest).

    Needs: example inputs; training data optionally (without it the pruned model is returned
    un-fine-tuned and stats say so, so `needs` is empty); evaluation data optionally, for the
    accuracy figures in the stats. Fine-tuning and accuracy assume a classifier: one input tensor,
    logits out, integer labels.

    Guarantees: the input module is not mutated (a deep copy is pruned); output shapes are unchanged
    (checked on the example inputs); the result is in eval mode; fine-tuning is deterministic
    (seeded, fixed thread count). A conv whose output reaches the model output is left whole
    (stats "skipped"). Branches (residual adds, concatenation), grouped convs, a layer called twice
    and ops it cannot follow raise PassError naming the layer; `layers` can leave such layers out.
    """

    name: ClassVar[str] = "prune-channels"
    # The shared fine-tune loop lives there; its code changes this pass's output.

    @dataclass(frozen=True)
    class Config:
        ratio: float = 0.5  # fraction of each layer's output channels removed
        fine_tune_epochs: int = 20
        lr: float = 3e-3
        min_channels: int = 8  # never prune a layer below this many channels
        layers: tuple[str, ...] | None = None  # Conv2d names to prune (qualified); None: all

        def __post_init__(self) -> None:
            if not (0 <= self.ratio < 1 and self.fine_tune_epochs >= 0 and self.lr > 0 and self.min_channels > 0):
                raise ConfigError(
                    "prune-channels: options need 0 <= ratio < 1, fine_tune_epochs >= 0, lr > 0 "
                    f"and min_channels >= 1; got {self}"
                )

    def run(self, module: Any, ctx: TorchPassContext) -> tuple[Any, dict[str, Any]]:
        pruned = copy.deepcopy(module).eval()  # everything below works on the copy
        examples = tuple(torch.as_tensor(x) for x in ctx.example_inputs)
        with torch.no_grad():
            shapes_before = _shapes(pruned(*examples)) if examples else None
        stats: dict[str, Any] = {"parameters_before": sum(p.numel() for p in pruned.parameters())}
        if ctx.eval_data is not None:
            stats["accuracy_before"] = _accuracy(pruned, *ctx.eval_data)

        groups, skipped = _plan(pruned, self.config.layers)
        if not groups:
            raise PassError(f"found no Conv2d layer whose channels can be removed (skipped: {skipped})")
        stats["layers"] = _apply(pruned, groups, self.config.ratio, self.config.min_channels)
        stats["skipped"] = skipped
        stats["parameters_after"] = sum(p.numel() for p in pruned.parameters())
        with torch.no_grad():
            shapes_after = _shapes(pruned(*examples)) if examples else None
        if shapes_after != shapes_before:
            raise PassError(
                f"output shapes changed from {shapes_before} to {shapes_after}; "
                "leave the layers feeding the output out with `layers`"
            )
        if ctx.eval_data is not None:
            stats["accuracy_pruned"] = _accuracy(pruned, *ctx.eval_data)

        stats["fine_tuned"] = ctx.train_data is not None and self.config.fine_tune_epochs > 0
        if stats["fine_tuned"]:
            classifier_training.fine_tune(
                pruned, *ctx.train_data, epochs=self.config.fine_tune_epochs, lr=self.config.lr, seed=0
            )
            if ctx.eval_data is not None:
                stats["accuracy_fine_tuned"] = _accuracy(pruned, *ctx.eval_data)
        else:
            stats["note"] = "not fine-tuned: " + (
                "no training data" if ctx.train_data is None else "fine_tune_epochs = 0"
            )
        return pruned.eval(), stats


def _plan(module: nn.Module, selected: tuple[str, ...] | None) -> tuple[list[_Group], dict[str, str]]:
    """Trace `module` and work out, for each selected conv, which layers its channels reach."""
    try:
        graph = fx.symbolic_trace(module).graph
    # fx reports untraceable code as TraceError, TypeError, or a RuntimeError subclass (its
    # proxies refuse unsupported argument types that way): all mean "cannot follow this module".
    except (fx.proxy.TraceError, TypeError, RuntimeError) as error:
        raise PassError(f"cannot trace the module with torch.fx: {error}") from error
    calls = [n for n in graph.nodes if n.op == "call_module"]
    convs = [n for n in calls if type(module.get_submodule(n.target)) is nn.Conv2d]
    if selected is not None:
        for name in selected:
            if name not in {n.target for n in convs}:
                raise ConfigError(
                    f"prune-channels: option 'layers' names '{name}', which is not a Conv2d "
                    f"called in forward(); {did_you_mean(name, {n.target for n in convs})}"
                )
        convs = [n for n in convs if n.target in selected]
    groups, skipped = [], {}
    for node in convs:
        shared = sum(n.target == node.target for n in calls) > 1
        if shared or module.get_submodule(node.target).groups != 1:
            what = "is called more than once in forward()" if shared else "is a grouped convolution"
            raise PassError(
                f"layer '{node.target}' {what}, which prune-channels cannot shrink; leave it out with `layers`"
            )
        group = _follow(module, node)
        if isinstance(group, str):
            skipped[node.target] = group
        else:
            groups.append(group)
    return groups, skipped


def _follow(module: nn.Module, conv: fx.Node) -> _Group | str:
    """The group rooted at `conv`, or why it is skipped; PassError where the channels cannot be followed."""
    norms: list[str] = []
    scale_norm, flattened, node = None, False, conv
    while True:
        users = list(node.users)
        if len(users) != 1:
            raise PassError(
                f"layer '{conv.target}': its output feeds {len(users)} operations "
                f"({', '.join(u.name for u in users)}); branches and residual connections "
                "cannot be pruned (leave it out with `layers`)"
            )
        user = users[0]
        if user.op == "output":
            return "its output is a model output; removing channels would change the output shape"
        if user.args[:1] != (node,) or _other_inputs(user):
            raise PassError(
                f"layer '{conv.target}': its output reaches '{user.name}', which combines it "
                "with another tensor (residual add, concatenation); leave it out with `layers`"
            )
        target = module.get_submodule(user.target) if user.op == "call_module" else user.target
        if type(target) is nn.BatchNorm2d and not flattened:
            scale_norm = user.target if node is conv else scale_norm
            norms.append(user.target)
        elif type(target) is nn.Conv2d and not flattened:
            if target.groups != 1:
                raise PassError(
                    f"layer '{conv.target}' feeds the grouped convolution '{user.target}', "
                    "which prune-channels cannot shrink; leave it out with `layers`"
                )
            return _Group(conv.target, tuple(norms), scale_norm, user.target, 1)
        elif type(target) is nn.Linear and flattened:
            channels = module.get_submodule(conv.target).out_channels
            if target.in_features % channels:
                raise PassError(
                    f"layer '{user.target}' has {target.in_features} inputs, not a multiple of "
                    f"the {channels} channels of '{conv.target}'; cannot map channels to inputs"
                )
            return _Group(conv.target, tuple(norms), scale_norm, user.target, target.in_features // channels)
        elif _flatten_start(user, target) == 1 and not flattened:
            flattened = True
        elif not _keeps_channels(user, target, flattened):
            kind = getattr(type(target) if isinstance(target, nn.Module) else target, "__name__", target)
            raise PassError(
                f"layer '{conv.target}': its output reaches '{user.name}' ({kind}), which "
                "prune-channels cannot follow; leave the layer out with `layers`"
            )
        node = user


def _other_inputs(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args[1:], node.kwargs), lambda n: found.append(n) or n)
    return found


def _keeps_channels(node: fx.Node, target: Any, flattened: bool) -> bool:
    """Whether channel c of the op's input is channel c of its output (pooling: 4-D tensors only)."""
    modules = _CHANNELWISE_MODULES + (() if flattened else _SPATIAL_MODULES)
    functions = _CHANNELWISE_FUNCTIONS | (set() if flattened else _SPATIAL_FUNCTIONS)
    if node.op == "call_module":
        return isinstance(target, modules)
    return (node.op == "call_function" and target in functions) or (
        node.op == "call_method" and target in _CHANNELWISE_METHODS
    )


def _flatten_start(node: fx.Node, target: Any) -> int | None:
    """start_dim of a flatten that runs to the last dim (nn.Flatten, torch.flatten, Tensor.flatten)."""
    if node.op == "call_module" and type(target) is nn.Flatten:
        return target.start_dim if target.end_dim == -1 else None
    if (node.op == "call_function" and target is torch.flatten) or (node.op == "call_method" and target == "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start if end == -1 else None
    return None


def _apply(module: nn.Module, groups: list[_Group], ratio: float, min_channels: int) -> dict[str, dict[str, int]]:
    """Rank and slice every group; each layer is rebuilt once with its kept inputs and outputs."""
    kept_out: dict[str, torch.Tensor] = {}
    kept_in: dict[str, torch.Tensor] = {}
    report = {}
    for group in groups:
        conv = module.get_submodule(group.producer)
        score = conv.weight.detach().abs().sum(dim=(1, 2, 3))
        if group.scale_norm is not None:
            norm = module.get_submodule(group.scale_norm)
            scale = norm.weight.detach() if norm.affine else torch.ones_like(score)
            if norm.track_running_stats:
                scale = scale / torch.sqrt(norm.running_var + norm.eps)
            score = score * scale.abs()
        channels = conv.out_channels
        keep = max(channels - round(channels * ratio), min(min_channels, channels))
        kept = torch.sort(torch.argsort(score, descending=True, stable=True)[:keep]).values
        kept_out[group.producer] = kept
        for name in group.norms:
            _replace(module, name, _sliced_norm(module.get_submodule(name), kept))
        # A Linear after Flatten reads channel c as features c*HW .. c*HW + HW - 1.
        span = group.features_per_channel
        kept_in[group.consumer] = (kept[:, None] * span + torch.arange(span)).reshape(-1)
        report[group.producer] = {"channels_before": channels, "channels_after": keep}
    for name in sorted(set(kept_out) | set(kept_in)):
        layer = module.get_submodule(name)
        if type(layer) is nn.Linear:
            _replace(module, name, _sliced_linear(layer, kept_in[name]))
        else:
            _replace(module, name, _sliced_conv(layer, kept_in.get(name), kept_out.get(name)))
    return report


def _sliced_conv(old: nn.Conv2d, inputs: torch.Tensor | None, outputs: torch.Tensor | None) -> nn.Conv2d:
    weight = old.weight.detach()
    weight = weight if inputs is None else weight[:, inputs]
    weight = weight if outputs is None else weight[outputs]
    new = nn.Conv2d(
        weight.shape[1],
        weight.shape[0],
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        if old.bias is not None:
            new.bias.copy_(old.bias if outputs is None else old.bias[outputs])
    return new.train(old.training)


def _sliced_norm(old: nn.BatchNorm2d, kept: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(
        len(kept),
        old.eps,
        old.momentum,
        old.affine,
        old.track_running_stats,
        device=kept.device,
        dtype=old.weight.dtype if old.affine else None,
    )
    state = {key: (value[kept] if value.dim() == 1 else value.clone()) for key, value in old.state_dict().items()}
    new.load_state_dict(state)
    return new.train(old.training)


def _sliced_linear(old: nn.Linear, columns: torch.Tensor) -> nn.Linear:
    new = nn.Linear(
        len(columns), old.out_features, bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype
    )
    with torch.no_grad():
        new.weight.copy_(old.weight[:, columns])
        if old.bias is not None:
            new.bias.copy_(old.bias)
    return new.train(old.training)


def _replace(module: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attribute = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, attribute, new)


def _shapes(output: Any) -> Any:
    return fx.node.map_aggregate(output, lambda t: tuple(t.shape) if isinstance(t, torch.Tensor) else None)


def _accuracy(module: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return round(classifier_training.accuracy(module, x, y), 4)
