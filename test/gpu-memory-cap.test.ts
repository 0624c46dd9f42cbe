// cudaMemoryFraction on a real device: a batch past the cap is split and retried, its answers
// unchanged. In a file (so a process) of its own: the cap is process-wide and stays after close(),
// and what earlier tests leave allocated (a cuBLAS workspace per stream used: 264 MB after
// test/gpu.test.ts on an H200) would exceed a cap of 0.1% before the model loads. Skipped where
// there is no CUDA device (scripts/gpu-check.sh runs it on the GPU machines).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { doctor } from '../lib/runtime/doctor.js';
import { Classifier } from '../lib/index.js';
import { bundle, maxAbsDiff } from './helpers.js';

const report = await doctor();
const skip = report.runtime?.cudaAvailable ? false : 'no CUDA device';

describe('a CUDA memory cap', { skip }, () => {
  it('a batch the device has no memory for is split and retried, answers unchanged', async () => {
    // 256 texts of 512 tokens need hundreds of MB of activations; the allocator may hold 0.1% of
    // the device (about 80 MB on an H100, 140 MB on an H200), so the full batch cannot fit.
    const texts = Array.from({ length: 256 }, (_, i) =>
      Array.from({ length: 600 }, (_, j) => `w${(i + j) % 40}`).join(' '),
    );
    const free = await Classifier.load(bundle('long'), {
      device: 'cuda',
      dtype: 'float32',
      maxBatchSize: 256,
      maxBatchTokens: 256 * 512,
    });
    const reference = await free.logits(texts);
    await free.close();
    const capped = await Classifier.load(bundle('long'), {
      device: 'cuda',
      dtype: 'float32',
      maxBatchSize: 256,
      maxBatchTokens: 256 * 512,
      cudaMemoryFraction: 0.001,
    });
    try {
      const rows = await capped.logits(texts);
      // The cap was hit: the full batch failed and was split (the cached blocks the uncapped
      // classifier left behind were handed back when the cap was set, not reused past it).
      assert.ok(capped.stats().outOfMemorySplits >= 1, JSON.stringify(capped.stats().batchSizes));
      rows.forEach((row, i) => assert.ok(maxAbsDiff(row, reference[i] as Float32Array) <= 1e-4, `text ${i}`));
    } finally {
      await capped.close();
    }
  });
});
