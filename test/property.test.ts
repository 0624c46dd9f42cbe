// Property tests (fast-check): whatever is passed to classify()/logits() and to
// Classifier.load()'s options, the answer is a well-formed result or a typed error with one
// of the expected codes: never a crash, an untyped error, ERR_INTERNAL, or a hang (each test
// has a timeout; every promise must settle and the queue must drain).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import fc from 'fast-check';

import { BertgateError, Classifier } from '../lib/index.js';
import { bundle } from './helpers.js';

const CALL_CODES = new Set(['ERR_INVALID_ARGUMENT', 'ERR_ABORTED', 'ERR_TIMEOUT', 'ERR_OVERLOADED']);
const LOAD_CODES = new Set(['ERR_INVALID_ARGUMENT', 'ERR_BUNDLE']);

// Any UTF-16 code unit, lone surrogates included.
const units = fc.string({
  unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)),
  maxLength: 80,
});
const text = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.string({ unit: 'grapheme', maxLength: 60 }),
  units,
  fc.uint8Array({ maxLength: 120 }),
  fc.record({ text: fc.string({ maxLength: 60 }), pair: fc.oneof(fc.string({ maxLength: 60 }), units) }),
  fc.anything(),
);
const input = fc.oneof(
  text,
  fc.array(text, { maxLength: 12 }),
  fc.array(fc.string({ maxLength: 40 }), { maxLength: 40 }),
);
const signal = fc.oneof(fc.constant(undefined), fc.constant('aborted'), fc.constant('live'), fc.anything());
const callOptions = fc.oneof(
  fc.constant(undefined),
  fc.record(
    {
      timeoutMs: fc.oneof(fc.double(), fc.integer({ min: 1, max: 60_000 }), fc.anything()),
      signal,
    },
    { requiredKeys: [] },
  ),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.anything(), { maxKeys: 3 }),
  fc.anything(),
);

function realise(options: unknown): unknown {
  if (typeof options !== 'object' || options === null || !('signal' in options)) return options;
  const { signal: s } = options as { signal: unknown };
  if (s === 'aborted') return { ...options, signal: AbortSignal.abort() };
  if (s === 'live') return { ...options, signal: new AbortController().signal };
  return options;
}

describe('property: classify() and logits() with anything', () => {
  let clf: Classifier;
  before(async () => {
    clf = await Classifier.load(bundle('labels2'), { maxQueue: 64, maxTextLength: 10_000 });
  });
  after(() => clf.close());

  it('10,000 random calls: results or typed errors, nothing else', { timeout: 600_000 }, async () => {
    const seen = new Map<string, number>();
    // A process warning (a timer that overflowed, a listener leak) is a bug found too.
    const warnings: string[] = [];
    const onWarning = (w: Error): number => warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    await fc.assert(
      fc.asyncProperty(input, callOptions, fc.boolean(), async (value, rawOptions, wantLogits) => {
        const options = realise(rawOptions);
        let outcome: string;
        try {
          const result: unknown = wantLogits
            ? await clf.logits(value as never, options as never)
            : await clf.classify(value as never, options as never);
          const many = Array.isArray(value);
          const list = (many ? result : [result]) as unknown[];
          if (many) assert.equal(list.length, (value as unknown[]).length);
          for (const r of list) {
            if (wantLogits) {
              assert.ok(r instanceof Float32Array && r.length === 2);
            } else {
              const d = r as { label: string; probability: number };
              assert.ok(['negative', 'positive', 'Other'].includes(d.label), d.label);
              assert.ok(d.probability >= 0 && d.probability <= 1, String(d.probability));
            }
          }
          outcome = 'ok';
        } catch (error) {
          assert.ok(error instanceof BertgateError, `untyped: ${(error as Error)?.stack ?? String(error)}`);
          assert.ok(CALL_CODES.has(error.code), `${error.code}: ${error.message}`);
          assert.ok(error.message.length > 0);
          outcome = error.code;
        }
        seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
      }),
      { numRuns: 10_000, seed: 20261126 },
    );
    process.off('warning', onWarning);
    assert.deepEqual(warnings, []);
    // The generators must reach both sides, or the property says little.
    assert.ok((seen.get('ok') ?? 0) > 1000, JSON.stringify([...seen]));
    assert.ok((seen.get('ERR_INVALID_ARGUMENT') ?? 0) > 1000, JSON.stringify([...seen]));
    assert.ok((seen.get('ERR_ABORTED') ?? 0) > 0, JSON.stringify([...seen]));
    assert.equal(clf.stats().queueDepth, 0);
    assert.equal((await clf.classify('still alive')).label !== undefined, true);
  });
});

describe('property: Classifier.load() with random options', () => {
  const values = {
    threshold: fc.oneof(fc.double({ min: 0, max: 1, noNaN: true }), fc.double(), fc.anything()),
    temperature: fc.oneof(fc.double({ min: 0.1, max: 10, noNaN: true }), fc.double(), fc.anything()),
    topK: fc.oneof(fc.integer({ min: 1, max: 2 }), fc.integer(), fc.anything()),
    threads: fc.oneof(fc.integer({ min: 1, max: 2 }), fc.integer(), fc.anything()),
    device: fc.oneof(fc.constant('cpu'), fc.string({ maxLength: 8 }), fc.anything()),
    dtype: fc.oneof(fc.constant('float32'), fc.constantFrom('float16', 'bfloat16', 'int8'), fc.anything()),
    otherLabel: fc.oneof(fc.constant('Unclassified'), fc.constantFrom('', 'positive'), fc.anything()),
    maxBatchSize: fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer(), fc.anything()),
    maxQueue: fc.oneof(fc.integer({ min: 1, max: 10_000 }), fc.integer(), fc.anything()),
    maxDelayMs: fc.oneof(fc.integer({ min: 0, max: 10 }), fc.double(), fc.anything()),
    maxPaddingRatio: fc.oneof(fc.double({ min: 0, max: 1, noNaN: true }), fc.double(), fc.anything()),
    truncation: fc.oneof(fc.constantFrom('longest_first', 'only_first', 'only_second'), fc.anything()),
    lengthAware: fc.oneof(fc.boolean(), fc.anything()),
    padToMultipleOf: fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer(), fc.anything()),
    drift: fc.oneof(
      fc.constant(false),
      fc.record({ alpha: fc.oneof(fc.double({ min: 0.001, max: 0.5, noNaN: true }), fc.anything()) }),
      fc.anything(),
    ),
    gate: fc.oneof(fc.boolean(), fc.anything()),
    thresholds: fc.oneof(
      fc.record({ positive: fc.double({ min: 0, max: 1, noNaN: true }) }),
      fc.dictionary(fc.string({ maxLength: 9 }), fc.anything(), { maxKeys: 2 }),
      fc.anything(),
    ),
  };
  const options = fc.oneof(
    fc.record(values, { requiredKeys: [] }),
    fc.dictionary(fc.string({ maxLength: 10 }), fc.anything(), { maxKeys: 3 }),
    fc.anything(),
  );

  it('2,000 random option sets: a working classifier or a typed error', { timeout: 600_000 }, async () => {
    let loaded = 0;
    await fc.assert(
      fc.asyncProperty(options, async (opts) => {
        let clf: Classifier | undefined;
        try {
          clf = await Classifier.load(bundle('labels2'), opts as never);
        } catch (error) {
          assert.ok(error instanceof BertgateError, `untyped: ${(error as Error)?.stack ?? String(error)}`);
          assert.ok(LOAD_CODES.has(error.code), `${error.code}: ${error.message}`);
          return;
        }
        try {
          loaded++;
          const d = await clf.classify('a short text');
          assert.ok([...clf.labels, clf.info.otherLabel].includes(d.label));
        } finally {
          await clf.close();
        }
      }),
      { numRuns: 2_000, seed: 20261126 },
    );
    assert.ok(loaded > 100, `only ${loaded} option sets were valid`);
  });
});
