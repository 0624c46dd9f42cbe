"""int8 bundles as bertgate exported them before bertgate::linear_int8: torch.ao dynamic int8
Linear layers (quantized::linear_dynamic). The exporter no longer writes them (quantize.py);
the test fixtures do (`labels50-int8-legacy`), to prove that the engine still loads and runs
the bundles users already have, and still keeps torch's deprecation notices off their stderr.

That recipe: per-channel int8 weights, activations quantized per batch to 8 bits (7 where the
CPU lacks AVX-512 VNNI: the engine turns `reduce_range` back on at load), the pooler, the
classifier and the first layer's FFN down-projection in float (99.14% agreement on the default
model's test split).
"""

from __future__ import annotations

import copy

import torch

from .quantize import HEAD, int8_layers

KEEP_FLOAT = (*HEAD, r"layer\.0\.output\.dense")

SCHEME = (
    "dynamic int8: Linear weights int8 per output channel, activations quantized per batch to 8 bits "
    "(7 where the CPU lacks AVX-512 VNNI)"
)


class DynamicLinear(torch.nn.Module):
    """torch.ao's dynamic int8 Linear with its activations' width stated: the third argument of
    quantized::linear_dynamic is `reduce_range` (7 bits), which the engine may set at load. The
    bundles were traced with it False (8 bits)."""

    def __init__(self, quantized: torch.nn.Module, reduce_range: bool) -> None:
        super().__init__()
        self._packed_params = quantized._packed_params
        self.reduce_range = reduce_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, self.reduce_range)


def _replace(module: torch.nn.Module, kind: type, make) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, kind):
            setattr(module, name, make(child))
        else:
            _replace(child, kind, make)


def quantize_int8_legacy(model: torch.nn.Module, reduce_range: bool = False) -> torch.nn.Module:
    """A copy of `model` as the torch.ao recipe made it, on the current quantized engine; with
    reduce_range, as the engine runs it on a CPU without AVX-512 VNNI (7-bit activations)."""
    layers, _ = int8_layers(model, KEEP_FLOAT)
    spec = dict.fromkeys(layers, torch.ao.quantization.per_channel_dynamic_qconfig)
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)
    _replace(quantized, torch.ao.nn.quantized.dynamic.Linear, lambda q: DynamicLinear(q, reduce_range))
    return quantized


def legacy_record(model: torch.nn.Module, engine: str) -> dict:
    """bundle.json's "quantization" as the torch.ao exporter wrote it."""
    return {
        "scheme": SCHEME,
        "recipe": "int8",
        "layers": "Linear",
        "float_layers": int8_layers(model, KEEP_FLOAT)[1],
        "engine": engine,
        "other_weights": "float32",
    }


def quantized_engine() -> str:
    """x86 (fbgemm, with oneDNN where it is faster) where this torch has it: the engine
    bertgate sets when it loads such a bundle."""
    supported = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm"):
        if engine in supported:
            return engine
    raise RuntimeError(f"this torch has no x86 quantized engine (it has {supported}); torch.ao int8 needs one")
