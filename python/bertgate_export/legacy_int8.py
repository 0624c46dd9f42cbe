"""The int8 recipe of `--quantize int8`: which Linear layers become dynamic int8, and how.

torch.ao's `quantize_dynamic` with its defaults (weights int8 per tensor, activations quantized
per batch to 7 bits: its dynamic Linear passes `reduce_range=True`) made the default model's
int8 export agree with its float model on 97.5% of the test split (target 99%). Measured one
change at a time on that split (`bench/int8_recipes.py`, docs/benchmarks.md): 8-bit
activations 98.1%; per-channel weights 98.1%; both 98.8%; and the pooler and classifier in
float (they act on one vector per text, so they cost next to nothing) 98.8%. Each layer kept
in float on top of that, one at a time: the first encoder layer's FFN down-projection 99.1%,
every other one no gain; the FFN down-projections of both layers 99.2% at twice the cost.
Static int8 (activation scales calibrated once on the calibration split) reached 98.3% and
ran no faster than dynamic. Two recipes: `int8`, per-channel weights, 8-bit activations, the
pooler, the classifier and the first layer's FFN down-projection in float; `int8-fast`, the
same with that down-projection int8 too (98.8%, about as fast as torch.ao's defaults).

8-bit activations overflow the int16 pair sums of fbgemm's kernels on CPUs without AVX-512
VNNI; there the engine turns each layer's `reduce_range` back on at load (7 bits, the old
agreement), so the bundle runs correctly everywhere and best where it can.
"""

from __future__ import annotations

import copy
import re

import torch

# The pooler and the classifier act on one vector per text, not one per token: in float they
# cost next to nothing, and their error goes straight into the logits.
HEAD = (r"pooler\.dense", "classifier")

# Linear layers each recipe keeps in float, by a pattern their module name ends with.
RECIPES = {
    # Agreement first (99.1% on the default model): the first layer's FFN down-projection reads
    # GELU's output over the embeddings, whose long positive tail one per-batch scale covers
    # worst of all the layers' inputs. It costs speed where fp32 matmuls are slow (0.61x / 0.77x
    # the all-int8 graph at batch 1 / 32 on an AMD EPYC, whose MKL kernels are).
    "int8": (*HEAD, r"layer\.0\.output\.dense"),
    # Speed first (98.8%): every encoder Linear int8.
    "int8-fast": HEAD,
}
KEEP_FLOAT = RECIPES["int8"]

SCHEME = (
    "dynamic int8: Linear weights int8 per output channel, activations quantized per batch to 8 bits "
    "(7 where the CPU lacks AVX-512 VNNI)"
)


class FullRangeDynamicLinear(torch.nn.Module):
    """torch.ao's dynamic int8 Linear, quantizing its activations to 8 bits rather than 7: the
    third argument of quantized::linear_dynamic is `reduce_range`, which the engine may set."""

    def __init__(self, quantized: torch.nn.Module) -> None:
        super().__init__()
        self._packed_params = quantized._packed_params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, False)


def _replace(module: torch.nn.Module, kind: type, make) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, kind):
            setattr(module, name, make(child))
        else:
            _replace(child, kind, make)


def int8_layers(model: torch.nn.Module, keep: tuple[str, ...] = KEEP_FLOAT) -> tuple[list[str], list[str]]:
    """The Linear layers the recipe quantizes and those it keeps in float, by module name."""
    quantized, kept = [], []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            (kept if any(re.search(rf"(^|\.){k}$", name) for k in keep) else quantized).append(name)
    return quantized, kept


def quantize_int8(model: torch.nn.Module, keep: tuple[str, ...] = KEEP_FLOAT) -> torch.nn.Module:
    """A copy of `model` with its Linear layers dynamic int8 (per-channel weights, 8-bit
    activations), but for those `keep` names; on the current quantized engine."""
    layers, _ = int8_layers(model, keep)
    spec = dict.fromkeys(layers, torch.ao.quantization.per_channel_dynamic_qconfig)
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)
    _replace(quantized, torch.ao.nn.quantized.dynamic.Linear, FullRangeDynamicLinear)
    return quantized
