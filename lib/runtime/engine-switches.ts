// Environment switches for the engine: read and checked here, where a wrong value can be named,
// and handed to the engine with each load (NativeLoadOptions). The engine reads no environment
// of its own for them: a worker_thread's `env` is a copy the C++ side cannot see, and a value
// read once per process would ignore a change that this check had accepted.

import { InvalidArgumentError } from '../errors.js';

const SWITCHES = {
  // torch_warnings.h: libtorch's warnings are collected; "stderr" prints them as well.
  BERTGATE_TORCH_WARNINGS: { allowed: ['stderr'], meaning: '"stderr" (print libtorch\'s warnings as well)' },
  // native/shim/mkl_any_cpu.cpp: read once per process, before libtorch loads (lib/runtime/open.ts).
  BERTGATE_MKL_ANY_CPU: {
    allowed: ['1'],
    meaning: '"1" (MKL takes the kernels of the CPU\'s instruction set whoever made it; read once, as libtorch loads)',
  },
  // torchscript_model.h: int8 bundles' activation bits; 7 everywhere, or 8 where the CPU allows.
  BERTGATE_INT8_ACTIVATION_BITS: {
    allowed: ['7', '8'],
    meaning: '"7" (int8 activations in 7 bits on every CPU) or "8" (8 where the CPU has AVX-512 VNNI, the default)',
  },
  // amx_int8_gemm.h, fbgemm_int8_gemm.h: int8 layers on the engine's AMX GEMM where the CPU has
  // AMX, else on fbgemm's with weights packed once; "onednn" keeps oneDNN's, "amx" or "fbgemm"
  // fails a load where that GEMM is missing. Per load. The same logits whichever.
  BERTGATE_INT8_GEMM: {
    allowed: ['onednn', 'amx', 'fbgemm'],
    meaning:
      '"onednn" (int8 layers on oneDNN\'s GEMM, which packs nothing ahead; the same logits, slower), "amx" ' +
      '(on the AMX GEMM, or the load fails) or "fbgemm" (on fbgemm\'s, or the load fails)',
  },
  // cpu_allocator.h: large CPU buffers from a bounded cache; "system" keeps libtorch's allocator.
  // Process-wide: the first load chooses.
  BERTGATE_CPU_ALLOCATOR: {
    allowed: ['system'],
    meaning: '"system" (libtorch\'s own CPU allocator instead of bertgate\'s bounded cache; the first load chooses)',
  },
} as const;

export interface EngineSwitches {
  /** libtorch's warnings printed to stderr as well as collected. */
  torchWarningsToStderr: boolean;
  /** int8 bundles quantize activations to 7 bits even where the CPU could take 8. */
  int8SevenBits: boolean;
  /** The GEMM asked for int8 layers (BERTGATE_INT8_GEMM): '' for the fastest here. */
  int8GemmRequested: '' | 'amx' | 'fbgemm' | 'onednn';
  /** Answer MKL's vendor check with "Intel" (process-wide; only the first runtime open reads it). */
  mklAnyCpu: boolean;
  /** Large CPU buffers from bertgate's bounded cache (false: libtorch's own allocator; process-wide). */
  cpuCache: boolean;
}

/**
 * The switches as `env` sets them (the calling thread's: a worker's own env where it has one).
 * Throws InvalidArgumentError naming the first switch set to a value the engine does not know.
 */
export function engineSwitches(env: NodeJS.ProcessEnv = process.env): EngineSwitches {
  for (const [name, { allowed, meaning }] of Object.entries(SWITCHES)) {
    const value = env[name];
    if (value === undefined || value === '' || (allowed as readonly string[]).includes(value)) continue;
    throw new InvalidArgumentError(`${name} is ${JSON.stringify(value)}; expected ${meaning}, or unset`);
  }
  return {
    torchWarningsToStderr: env['BERTGATE_TORCH_WARNINGS'] === 'stderr',
    int8SevenBits: env['BERTGATE_INT8_ACTIVATION_BITS'] === '7',
    int8GemmRequested: (env['BERTGATE_INT8_GEMM'] ?? '') as EngineSwitches['int8GemmRequested'],
    mklAnyCpu: env['BERTGATE_MKL_ANY_CPU'] === '1',
    cpuCache: env['BERTGATE_CPU_ALLOCATOR'] !== 'system',
  };
}
