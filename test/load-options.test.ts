// Classifier.load()'s options: the defaults options.ts resolves for each device, checked
// without a device (what a CUDA classifier would get: half precision, large batches, 32-token
// buckets, a warm-up at load, against what a CPU one gets), the buckets the tokenizer pads to,
// each bad option's exact message, and explicit options against calibration.json. (Random
// option sets are property.test.ts's; whose rule applies, threshold by threshold, rule.test.ts's.)

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';

import { readBundle } from '../lib/bundle.js';
import { BundleError, Classifier, DeviceUnavailableError, InvalidArgumentError } from '../lib/index.js';
import { parseOptions, resolveAgainstBundle, warmupShape } from '../lib/options.js';
import { TextTokenizer } from '../lib/tokenizer.js';
import { bundle, copyBundle, expected, expectRejects, rejectsWith } from './helpers.js';

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
    assert.deepEqual(settings.deviceIndices, [1]);
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

describe('bad options', () => {
  const labels2 = bundle('labels2');
  const cases: Array<[string, unknown, string]> = [
    ['threshold NaN', { threshold: NaN }, 'Expected the "threshold" option to be a number in [0, 1], got NaN'],
    ['threshold above 1', { threshold: 1.5 }, 'Expected the "threshold" option to be a number in [0, 1], got 1.5'],
    ['threshold below 0', { threshold: -0.1 }, 'Expected the "threshold" option to be a number in [0, 1], got -0.1'],
    ['threshold as text', { threshold: '0.5' }, 'Expected the "threshold" option to be a number in [0, 1], got "0.5"'],
    [
      'per-label threshold out of range',
      { thresholds: { positive: 2 } },
      'Expected the threshold for label "positive" to be a number in [0, 1], got 2',
    ],
    [
      'thresholds not an object',
      { thresholds: [0.5] },
      'Expected the "thresholds" option to be an object mapping labels to numbers, got an array of 1',
    ],
    ['temperature 0', { temperature: 0 }, 'Expected the "temperature" option to be a number in [0.0001, 10000], got 0'],
    [
      'temperature infinite',
      { temperature: Infinity },
      'Expected the "temperature" option to be a number in [0.0001, 10000], got Infinity',
    ],
    [
      'device misspelt',
      { device: 'gpu' },
      'Expected the "device" option to be "cpu", "cuda", "cuda:N", "cuda:*" or a non-empty list of CUDA devices, got "gpu"',
    ],
    [
      'device cpu:1',
      { device: 'cpu:1' },
      'Expected the "device" option to be "cpu", "cuda", "cuda:N", "cuda:*" or a non-empty list of CUDA devices, got "cpu:1"',
    ],
    [
      'dtype unknown',
      { dtype: 'int8' },
      'Expected the "dtype" option to be one of "float32", "float16", "bfloat16", got "int8"',
    ],
    [
      'half precision on cpu',
      { dtype: 'float16' },
      'The "dtype" option "float16" needs a CUDA device; on "cpu" use "float32"',
    ],
    ['topK 0', { topK: 0 }, 'Expected the "topK" option to be an integer in [1, 64], got 0'],
    ['threads 1.5', { threads: 1.5 }, 'Expected the "threads" option to be an integer in [1, 1024], got 1.5'],
    ['otherLabel empty', { otherLabel: '' }, 'Expected the "otherLabel" option to be a non-empty string, got ""'],
    [
      'a misspelt option',
      { treshold: 0.5 },
      'Unknown option "treshold" in the options; known options: device, replicas, dtype, threshold, thresholds, otherLabel, temperature, topK, threads, labels, maxTextLength, freeze, verify, drift, gate, cudaMemoryFraction, truncation, truncationSide, maxBatchSize, maxBatchTokens, padToMultipleOf, maxDelayMs, maxQueue, batchesInFlight, lengthAware, maxPaddingRatio',
    ],
    ['options not an object', 'fast', 'Expected the options to be an object, got "fast"'],
  ];
  for (const [name, options, message] of cases) {
    it(name, () => expectRejects(Classifier.load(labels2, options as never), InvalidArgumentError, message));
  }

  it('an unknown label in per-label thresholds', () =>
    expectRejects(
      Classifier.load(labels2, { thresholds: { neutral: 0.5 } }),
      InvalidArgumentError,
      'Unknown label "neutral" in the "thresholds" option; the model\'s labels are ["negative","positive"]',
    ));

  it('an "Other" label that is one of the model\'s labels', () =>
    expectRejects(
      Classifier.load(labels2, { otherLabel: 'positive' }),
      InvalidArgumentError,
      'The "otherLabel" "positive" is also one of the model\'s labels; choose a label the model does not have',
    ));

  it('topK above the label count', () =>
    expectRejects(
      Classifier.load(labels2, { topK: 3 }),
      InvalidArgumentError,
      'Expected the "topK" option to be an integer in [1, 2] (the model\'s label count), got 3',
    ));

  it('a bundle path that is not a string', () =>
    expectRejects(
      Classifier.load(42 as never),
      InvalidArgumentError,
      'Expected bundleDir to be a directory path (or undefined: the default model), got 42',
    ));

  it('cuda on a machine without a GPU names the reason', async (t) => {
    if (process.env['BERTGATE_CUDA'] === '1') return t.skip('this machine has a GPU');
    await rejectsWith(
      Classifier.load(labels2, { device: 'cuda:1' }),
      DeviceUnavailableError,
      /^device 'cuda:1' was requested but libtorch's CUDA libraries are not loaded: no NVIDIA driver found/,
    );
  });

  it('checks the expected labels against the bundle', async () => {
    await assert.rejects(
      Classifier.load(bundle('labels7'), { labels: ['admin', 'devel'] }),
      (e: unknown) =>
        e instanceof BundleError &&
        e.message ===
          'The "labels" option lists ["admin","devel"], but config.json "id2label" names ["admin","devel","games","graphics","net","sound","text"]',
    );
  });
});

describe('calibration.json and explicit options', () => {
  let texts: string[];
  before(async () => {
    texts = (await expected('labels7')).texts.slice(0, 20);
  });

  it('applies calibration.json, and explicit options override it', async () => {
    const copy = await copyBundle('labels7');
    try {
      await writeFile(
        join(copy.dir, 'calibration.json'),
        JSON.stringify({ temperature: 2.5, threshold: 0.9, thresholds: { net: 0.2 } }),
      );
      const calibrated = await Classifier.load(copy.dir);
      const overridden = await Classifier.load(copy.dir, { temperature: 1, threshold: 0.1 });
      try {
        assert.equal(calibrated.info.temperature, 2.5);
        assert.equal(calibrated.info.threshold, 0.9);
        assert.equal(calibrated.info.thresholds['net'], 0.2);
        assert.equal(calibrated.info.thresholds['admin'], 0.9);
        assert.equal(overridden.info.temperature, 1);
        assert.equal(overridden.info.threshold, 0.1);
        // The calibrated per-label threshold and any guarantee were for T = 2.5: not carried over.
        assert.equal(overridden.info.thresholds['net'], 0.1);
        assert.equal(overridden.info.guarantee, undefined);
        // A caller's global threshold replaces the calibrated per-label ones too (it is a rule of its own).
        const own = await Classifier.load(copy.dir, { threshold: 0.1 });
        try {
          assert.equal(own.info.temperature, 2.5);
          assert.equal(own.info.thresholds['net'], 0.1);
          assert.equal(own.info.thresholds['admin'], 0.1);
        } finally {
          await own.close();
        }
        await assert.rejects(
          Classifier.load(copy.dir, { temperature: 1 }),
          (e: unknown) =>
            e instanceof InvalidArgumentError &&
            e.message.startsWith(
              'The "temperature" option (1) differs from the calibration\'s (2.5), whose thresholds',
            ),
        );
        const [a, b] = await Promise.all([
          calibrated.classify(texts[5] as string),
          overridden.classify(texts[5] as string),
        ]);
        assert.ok(a.probability < b.probability, 'a higher temperature flattens the distribution');
      } finally {
        await calibrated.close();
        await overridden.close();
      }
    } finally {
      await copy.cleanup();
    }
  });
});
