// What a legacy (torch.ao, quantized::linear_dynamic) int8 fixture must reproduce on this CPU,
// and within what: the engine quantizes its activations to 8 bits where the CPU has AVX-512 VNNI
// and to 7 elsewhere (fbgemm's 16-bit sums saturate at 8 bits without it), and reports which
// (info.model.int8ActivationBits); the fixture holds the eager logits at both widths
// (python/bertgate_export/fixtures.py). Float ops around the int8 ones differ in their last bits
// between eager and the engine's frozen graph, so an activation on a rounding edge may land one
// level over: at 7 bits the levels are twice as far apart, and so is the tolerance.
// Used by test/quantized.test.ts and scripts/engine-matrix.mjs.

/** `expected`: the fixture's .expected.json; `bits`: the classifier's int8ActivationBits. */
export function legacyInt8Reference(expected, bits) {
  if (bits === 8) return { logits: expected.logits, tolerance: 1e-4 };
  if (bits === 7) return { logits: expected.logits_7bit, tolerance: 2e-4 };
  throw new Error(`int8ActivationBits ${bits}: a legacy int8 bundle runs 8- or 7-bit activations`);
}
