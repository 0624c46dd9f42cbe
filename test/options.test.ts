// The defaults options.ts resolves for each device, checked without a device: what a CUDA
// classifier would get (half precision, large batches, 32-token buckets, a warm-up at load)
// against what a CPU one gets, and the buckets the tokenizer pads to.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { readBundle } from '../lib/bundle.js';
import { parseOptions, resolveAgainstBundle, warmupShape } from '../lib/options.js';
import { TextTokenizer } from '../lib/tokenizer.js';
import { bundle } from './helpers.js';

const labels50 = { ...(await readBundle(bundle('labels50'))), maxLength: 64 }; // as if its limit were 64

describe('defaults by device', () => {
  it('on a CPU: float32, batches of 32 at full length, no buckets, no warm-up', () => {
    const settings = parseOptions({});
    const { batching } = resolveAgainstBundle(settings, labels50);
    assert.equal(settings.dtype, 'float32');
    assert.equal(batching.maxBatchSize, 32);
    assert.equal(batching.maxBatchTokens, 32 * 64);
    assert.equal(batching.padToMultipleOf, 1);
    assert.deepEqual(
      warmupShape(settings.device, batching, 64, (n) => n),
      { warmupRows: 0, warmupSeqLen: 0 },
    );
  });

  it('on CUDA: float16, batches of 256 within 32,768 tokens, buckets of 32, a warm-up at a full batch', () => {
    const settings = parseOptions({ device: 'cuda:1' });
    const { batching } = resolveAgainstBundle(settings, labels50);
    assert.equal(settings.dtype, 'float16');
    assert.equal(settings.deviceIndex, 1);
    assert.equal(batching.maxBatchSize, 256);
    assert.equal(batching.maxBatchTokens, 256 * 64); // the model's 64 tokens bind before 32,768
    assert.equal(batching.padToMultipleOf, 32);
    const bucket = (n: number) => Math.min(64, Math.ceil(n / 32) * 32);
    assert.deepEqual(warmupShape(settings.device, batching, 64, bucket), { warmupRows: 256, warmupSeqLen: 64 });
    // A 512-token model: 32,768 tokens is 256 rows of 128, the warm-up's length.
    const long = resolveAgainstBundle(settings, { ...labels50, maxLength: 512 }).batching;
    assert.equal(long.maxBatchTokens, 32_768);
    assert.deepEqual(
      warmupShape('cuda', long, 512, (n) => Math.ceil(n / 32) * 32),
      {
        warmupRows: 256,
        warmupSeqLen: 128,
      },
    );
  });

  it('lets the caller choose on CUDA too', () => {
    const settings = parseOptions({ device: 'cuda', dtype: 'float32', maxBatchSize: 8, padToMultipleOf: 1 });
    const { batching } = resolveAgainstBundle(settings, { ...labels50, maxLength: 512 });
    assert.equal(settings.dtype, 'float32');
    assert.equal(batching.maxBatchTokens, 8 * 512);
    assert.equal(batching.padToMultipleOf, 1);
  });
});

describe('padToMultipleOf', () => {
  it('pads a batch to the next multiple, never past the maximum length, in one [3, rows, length] buffer', async () => {
    const tokenizer = await TextTokenizer.load(labels50.tokenizerPath, {
      maxLength: 64,
      strategy: 'longest_first',
      side: 'right',
      padToMultipleOf: 24,
    });
    assert.deepEqual(
      [1, 2, 24, 25, 48, 49, 64].map((n) => tokenizer.paddedLength(n)),
      [24, 24, 24, 48, 48, 64, 64],
    );
    const encoded = await tokenizer.encode(['install the package', 'a']);
    const batch = tokenizer.pad(encoded);
    assert.equal(batch.seqLen, 24);
    assert.equal(batch.tokens.length, 3 * 2 * 24);
    assert.equal(batch.ids.buffer, batch.tokens.buffer);
    assert.deepEqual(Array.from(batch.ids.subarray(0, encoded[0]?.ids.length)), encoded[0]?.ids);
    assert.equal(
      batch.mask.reduce((a, b) => a + b, 0),
      (encoded[0]?.ids.length ?? 0) + (encoded[1]?.ids.length ?? 0),
    );
    assert.ok(batch.ids.subarray(encoded[0]?.ids.length, 24).every((id) => id === tokenizer.padId));
  });

  it('is refused unless a whole number from 1 to 4096', () => {
    for (const bad of [0, 1.5, 5000, '32']) {
      assert.throws(
        () => parseOptions({ padToMultipleOf: bad }),
        (e: Error) =>
          e.message ===
          `Expected the "padToMultipleOf" option to be an integer in [1, 4096], got ${typeof bad === 'string' ? JSON.stringify(bad) : bad}`,
      );
    }
  });
});
