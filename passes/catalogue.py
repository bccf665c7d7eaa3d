"""The one explicit catalogue of passes, and turning a target's pass list into configured passes."""

from __future__ import annotations

from collections.abc import Sequence

from compiler.errors import ConfigError, did_you_mean
from passes.base import BasePass, check_order, config_from_options
from passes.convert_fp16 import ConvertFp16
from passes.fold_constants import FoldConstants
from passes.fuse import Fuse
from passes.prune_channels import PruneChannels
from passes.prune_magnitude import PruneMagnitude
from passes.quantize_dynamic_int8 import QuantizeDynamicInt8
from passes.quantize_int4_weights import QuantizeInt4Weights
from passes.quantize_static_int8 import QuantizeStaticInt8
from passes.spec import PassSpec

CATALOGUE: dict[str, type[BasePass]] = {
    p.name: p
    for p in (
        PruneChannels,
        FoldConstants,
        Fuse,
        PruneMagnitude,
        QuantizeDynamicInt8,
        QuantizeStaticInt8,
        ConvertFp16,
        QuantizeInt4Weights,
    )
}


def validate_pass_list(specs: Sequence[PassSpec], where: str) -> None:
    """Check a parsed pass list: known names, valid options, declared ordering constraints."""
    for index, spec in enumerate(specs):
        if spec.name not in CATALOGUE:
            raise ConfigError(f"{where}[{index}]: unknown pass '{spec.name}'; {did_you_mean(spec.name, CATALOGUE)}")
        config_from_options(CATALOGUE[spec.name].Config, spec.options, f"{where}[{index}] ({spec.name})")
    check_order([s.name for s in specs], CATALOGUE, where)


def instantiate(specs: Sequence[PassSpec], where: str = "pass list") -> list[BasePass]:
    """Configured pass objects for a validated pass list."""
    return [
        CATALOGUE[s.name](config_from_options(CATALOGUE[s.name].Config, s.options, f"{where} ({s.name})"))
        for s in specs
    ]
