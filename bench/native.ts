// What the benchmarks share: the raw native engine beside the public API, and the event
// loop's worst delay while a competitor ran.

import { monitorEventLoopDelay } from 'node:perf_hooks';

import type { NativeInferRequest } from '../lib/binding.js';

export { loadHandle } from '../test/native-handle.js';

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

/** Starts watching; the returned function stops and gives the worst delay in ms. */
export function watchLoop(): () => number {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  return () => {
    histogram.disable();
    return histogram.max / 1e6;
  };
}
