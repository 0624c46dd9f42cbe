// The raw native engine loaded the plain way (CPU, fp32, one thread, no warm-up, no gate) and
// requests built without the tokenizer, for the tests and benchmarks that drive it without the
// public API.

import type { NativeEngineHandle, NativeInferRequest, NativeLoadOptions } from '../lib/binding.js';
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
    torchWarningsToStderr: false,
    int8SevenBits: false,
    int8GemmRequested: '',
    cpuCache: true,
    warmupRows: 0,
    warmupSeqLen: 0,
    gateDim: 0,
    ...options,
  });
  return { handle, vocab: info.vocabRows };
}

/** Full rows (no padding) of the given ids: [ids, mask of ones, type ids of zeros]. */
export function fullRows(ids: Int32Array, rows: number, seqLen: number): NativeInferRequest {
  const size = rows * seqLen;
  const tokens = new Int32Array(3 * size);
  tokens.set(ids.subarray(0, size));
  tokens.fill(1, size, 2 * size);
  return {
    tokens,
    rows,
    seqLen,
    temperature: 1,
    topK: 1,
    wantLogits: false,
    wantLogProbs: false,
    wantFeatures: false,
  };
}

export function randomIds(count: number, vocab: number): Int32Array {
  return new Int32Array(count).map(() => 5 + Math.floor(Math.random() * (vocab - 5)));
}
