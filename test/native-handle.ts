// The raw native engine loaded the plain way (CPU, fp32, one thread, no warm-up, no gate), for
// the tests and benchmarks that drive it without the public API.

import type { NativeEngineHandle, NativeLoadOptions } from '../lib/binding.js';
import { openRuntime } from '../lib/runtime/open.js';

/** Loads `modelPath` (a model.pt) on a fresh engine handle; `options` replace the plain ones. */
export async function loadHandle(
  modelPath: string,
  options: Partial<Omit<NativeLoadOptions, 'modelPath'>> = {},
): Promise<{ handle: NativeEngineHandle; vocab: number }> {
  const runtime = await openRuntime();
  const handle = new runtime.addon.EngineHandle();
  const info = await handle.load({
    modelPath,
    device: 'cpu',
    deviceIndex: 0,
    dtype: 'float32',
    threads: 1,
    freeze: true,
    cudaMemoryFraction: 0,
    warmupRows: 0,
    warmupSeqLen: 0,
    gateDim: 0,
    ...options,
  });
  return { handle, vocab: info.vocabRows };
}
