"""The int8 Linear layer of `--quantize int8`: `bertgate::linear_int8`, its reference numerics and
the module that calls it.

The engine registers the operator in C++ (native/engine/int8_linear.cpp, whose loops follow
`linear_int8_reference` operation for operation, so the two agree to the bit); this module
registers the same schema with the reference as its CPU kernel, so an exported graph can be
traced, saved, loaded and checked here with no engine. A trace records the call as
`bertgate::linear_int8`, which the engine resolves to its own kernel.

Numerics (issue 23, lever 3; docs/benchmarks.md):
- activations: each row (token) quantized symmetrically to [-127, 127] with its own scale,
  max |x| / 127, rounded half to even: a text's result does not depend on its batch, and the
  per-row scale agrees with the float model better than torch.ao's one scale per batch;
- weights: int8 per output channel, symmetric, 64 levels ([-64, 64]): oneDNN's int8 kernels on
  CPUs without VNNI add pairs of u8 x s8 products in saturating int16, which 8-bit weights
  overflow (`torch._int_mm` off by up to 2.6e5 under ONEDNN_MAX_CPU_ISA=AVX2) and 64 levels do
  not (255 * 64 * 2 = 32640); agreement 99.53% on the default model against 99.56% at 127;
- out = int32 accumulators * row scale * channel scale + bias, then GELU (erf, by the rational
  approximation XLA and Eigen use) when the layer's activation follows it.
"""

from __future__ import annotations

import torch

OP = "bertgate::linear_int8"
SCHEMA = "linear_int8(Tensor input, Tensor weight, Tensor weight_scale, Tensor? bias, int activation) -> Tensor"
WEIGHT_LEVELS = 64
ACTIVATION_NONE = 0
ACTIVATION_GELU = 1

# erf(x) ~ x * P(x^2) / Q(x^2) on [-4, 4] (+-1 beyond), fp32 coefficients, highest power first.
_ERF_P = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_Q = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)


def _horner(x2: torch.Tensor, coefficients: tuple[float, ...]) -> torch.Tensor:
    acc = x2 * coefficients[0] + coefficients[1]
    for c in coefficients[2:]:
        acc = x2 * acc + c
    return acc


def gelu(v: torch.Tensor) -> torch.Tensor:
    """GELU with erf, in the engine's order of fp32 operations."""
    x = (v * 0.70710678118654752).clamp(-4.0, 4.0)
    x2 = x * x
    p = x * _horner(x2, _ERF_P)
    d = _horner(x2, _ERF_Q)
    return 0.5 * v * (1.0 + p / d)


def linear_int8_reference(
    input: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None, activation: int
) -> torch.Tensor:
    k = input.shape[-1]
    x = input.reshape(-1, k).float()
    # A row holding NaN or +-inf gives a NaN row: quantized as zeros (scale 1), then its output
    # scaled by NaN, as the engine does (a float-to-int8 cast of NaN would be undefined).
    bad = ~torch.isfinite(x).all(1, keepdim=True)
    x = torch.where(bad, torch.zeros_like(x), x)
    amax = x.abs().amax(1, keepdim=True) if x.shape[0] else x.new_zeros(0, 1)
    # Scale 1 (so zeros) where amax / 127 is not a normal float: 1 / scale stays finite.
    raw = amax / 127.0
    scale = torch.where(raw >= torch.finfo(torch.float32).tiny, raw, torch.ones_like(raw))
    q = torch.round((x * (1.0 / scale)).clamp(-127.0, 127.0)).to(torch.int8)
    scale = torch.where(bad, torch.full_like(scale, float("nan")), scale)
    # With one input feature, [N, 1].t() has strides (1, 1) (contiguous() leaves it so), which
    # _int_mm's oneDNN path reads with leading dimension 1: wrong sums, read past the end. Viewed
    # as [1, N], it gets strides (N, 1), as the engine does.
    wt = weight.t() if k > 1 else weight.view(1, -1)
    acc = torch._int_mm(q, wt) if x.shape[0] else x.new_zeros(0, weight.shape[0], dtype=torch.int32)
    b = bias.float() if bias is not None else torch.zeros(weight.shape[0])
    out = acc.float() * scale * weight_scale.float() + b
    if activation == ACTIVATION_GELU:
        out = gelu(out)
    return out.reshape(*input.shape[:-1], weight.shape[0]).to(input.dtype)


def _register() -> torch.library.Library | None:
    try:
        torch.ops.bertgate.linear_int8  # noqa: B018 (already there: the engine library is loaded)
        return None
    except (AttributeError, RuntimeError):
        pass
    library = torch.library.Library("bertgate", "DEF")
    library.define(SCHEMA)
    library.impl("linear_int8", linear_int8_reference, "CPU")
    return library


_LIBRARY = _register()  # kept alive: dropping it unregisters the operator


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] float -> int8 in [-64, 64] and one fp32 scale per output channel."""
    w = weight.detach().float()
    scale = w.abs().amax(1) / WEIGHT_LEVELS
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp(-WEIGHT_LEVELS, WEIGHT_LEVELS).to(torch.int8)
    return q, scale


class Int8Linear(torch.nn.Module):
    """A float Linear (and, with activation=ACTIVATION_GELU, the GELU after it) as one call of
    bertgate::linear_int8. The weights are buffers, not parameters: the engine's load casts
    floating state to its dtype and reads int8 buffers' range; nothing here trains."""

    def __init__(self, linear: torch.nn.Linear, activation: int = ACTIVATION_NONE) -> None:
        super().__init__()
        q, scale = quantize_weight(linear.weight)
        self.register_buffer("weight", q)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", linear.bias.detach().float().clone() if linear.bias is not None else None)
        self.activation = activation
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.bertgate.linear_int8(x, self.weight, self.weight_scale, self.bias, self.activation)
