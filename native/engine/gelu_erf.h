#pragma once

// One owner for the int8 layers' GELU: bertgate::linear_int8 fuses it into its dequantizing pass,
// and the benchmarks' spikes reuse it rather than copy it. Plain arithmetic, so callers compiled
// for AVX2 or AVX-512 (target clones) vectorise it; with -ffp-contract=off nothing is fused and
// the result equals the Python reference's, rounded after every operation.

namespace bertgate {

// GELU with erf, erf by the rational approximation XLA and Eigen use for fp32 (odd degree-13
// numerator over even degree-8 denominator on [-4, 4], +-1 beyond; within a few ulp): libm's
// erff is an opaque call the vectoriser cannot take, and ATen's GELU is a separate pass.
// python/bertgate_export/int8_linear.py evaluates the same expression in the same order.
inline float GeluErf(float v) {
  float x = v * 0.70710678118654752f;
  x = x > 4.0f ? 4.0f : x;
  x = x < -4.0f ? -4.0f : x;
  const float x2 = x * x;
  float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
  p = x2 * p + -2.10102402082508e-06f;
  p = x2 * p + -5.69250639462346e-05f;
  p = x2 * p + -7.34990630326855e-04f;
  p = x2 * p + -2.95459980854025e-03f;
  p = x2 * p + -1.60960333262415e-02f;
  p = x * p;
  float d = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
  d = x2 * d + -1.68282697438203e-03f;
  d = x2 * d + -7.37332916720468e-03f;
  d = x2 * d + -1.42647390514189e-02f;
  return 0.5f * v * (1.0f + p / d);
}

}  // namespace bertgate
