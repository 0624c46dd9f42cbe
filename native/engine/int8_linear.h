#pragma once

// bertgate::linear_int8, the engine's int8 Linear layer, registered as a TorchScript operator
// when the engine library loads: int8 bundles made by `--quantize int8` call it (bundle.json
// "quantization": {"op": "bertgate::linear_int8"}); an engine without it fails their load with
// "Unknown builtin op", and bertgate releases before it refuse their "quantization" record.
// Numerics, which python/bertgate_export/int8_linear.py states as the reference:
//   each row of the input quantized to int8 with its own symmetric scale (max |x| / 127),
//   an int8 x int8 -> int32 matmul against int8 weights with one scale per output channel,
//   out = acc * row_scale * weight_scale + bias, then GELU (erf) when activation is 1.

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace bertgate {

constexpr int64_t kActivationNone = 0;
constexpr int64_t kActivationGelu = 1;

// The weights' range, [-kInt8WeightLevels, kInt8WeightLevels]: see LinearInt8.
constexpr int kInt8WeightLevels = 64;

// input [..., K] floating; weight [N, K] int8 in [-64, 64]; weight_scale [N] float; bias [N]
// float or none. The weights' range is the exporter's (64 levels): oneDNN's int8 kernels on
// CPUs without VNNI sum pairs of u8 x s8 products in int16, which 255 * 64 * 2 never overflows
// and 8-bit weights do (results off by up to 2.6e5 under ONEDNN_MAX_CPU_ISA=AVX2). The load
// refuses stored weights that leave that range (torchscript_model.cpp); a weight the active
// Int8WeightTable does not hold (read live from an attribute, which anything may have written
// since) is checked here on every call.
// The largest |value| of an int8 tensor (an int8 -128 counts as 128): what LinearInt8 holds to
// kInt8WeightLevels, and what the load checks its stored weights with.
int Int8WeightMagnitude(const at::Tensor& weight);

at::Tensor LinearInt8(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& weight_scale,
                      const c10::optional<at::Tensor>& bias, int64_t activation);

}  // namespace bertgate
