// Environment switches the engine library reads itself (native/engine): checked here, where a
// wrong value can be named, since the engine takes what it finds.

import { InvalidArgumentError } from '../errors.js';

const SWITCHES: Record<string, { allowed: readonly string[]; meaning: string }> = {
  // torch_warnings.h: libtorch's warnings are collected; "stderr" prints them as well.
  BERTGATE_TORCH_WARNINGS: { allowed: ['stderr'], meaning: '"stderr" (print libtorch\'s warnings as well)' },
  // torchscript_model.h: int8 bundles' activation bits; 7 everywhere, or 8 where the CPU allows.
  BERTGATE_INT8_ACTIVATION_BITS: {
    allowed: ['7', '8'],
    meaning: '"7" (int8 activations in 7 bits on every CPU) or "8" (8 where the CPU has AVX-512 VNNI, the default)',
  },
};

/** Throws InvalidArgumentError naming the first switch set to a value the engine does not know. */
export function checkEngineSwitches(env: NodeJS.ProcessEnv = process.env): void {
  for (const [name, { allowed, meaning }] of Object.entries(SWITCHES)) {
    const value = env[name];
    if (value === undefined || value === '' || allowed.includes(value)) continue;
    throw new InvalidArgumentError(`${name} is ${JSON.stringify(value)}; expected ${meaning}, or unset`);
  }
}
