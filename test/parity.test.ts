// logits() from Node equal Python transformers' eager logits (one text at a time, fp32 CPU)
// within 1e-5, for 2, 7 and 50 labels, token lengths from 2 to past the maximum, in
// batches of 33 and of 1; and batched rows equal single rows.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Classifier } from '../lib/index.js';
import { bundle, expected, maxAbsDiff, type Expected } from './helpers.js';

const TOLERANCE = 1e-5;

for (const name of ['labels2', 'labels7', 'labels50']) {
  describe(`parity with transformers: ${name}`, () => {
    let ref: Expected;
    let batched: Classifier;
    let single: Classifier;

    before(async () => {
      ref = await expected(name);
      batched = await Classifier.load(bundle(name), { maxBatchSize: 33 });
      single = await Classifier.load(bundle(name), { maxBatchSize: 1 });
    });
    after(async () => {
      await batched?.close();
      await single?.close();
    });

    it('covers lengths from [CLS] [SEP] to truncation, with at least 33 texts', () => {
      const lengths = ref.input_ids.map((ids) => ids.length);
      assert.ok(ref.texts.length >= 33, `${ref.texts.length} texts`);
      assert.equal(Math.min(...lengths), 2);
      assert.equal(Math.max(...lengths), ref.max_length);
      assert.ok(ref.truncated.some(Boolean) && ref.truncated.some((t) => !t));
    });

    it('batches of 33: every row within 1e-5 of eager', async (t) => {
      const rows = await batched.logits(ref.texts);
      let worst = 0;
      rows.forEach((row, i) => {
        const diff = maxAbsDiff(row, ref.logits[i] as number[]);
        assert.ok(diff <= TOLERANCE, `text ${i} (${(ref.input_ids[i] as number[]).length} tokens) differs by ${diff}`);
        worst = Math.max(worst, diff);
      });
      t.diagnostic(`${name}: batch 33, ${rows.length} texts, max |node - eager| = ${worst.toExponential(2)}`);
    });

    it('batches of 1: every row within 1e-5 of eager, and of the batched row', async () => {
      const [rows, batchedRows] = await Promise.all([single.logits(ref.texts), batched.logits(ref.texts)]);
      rows.forEach((row, i) => {
        assert.ok(maxAbsDiff(row, ref.logits[i] as number[]) <= TOLERANCE, `text ${i} vs eager`);
        assert.ok(maxAbsDiff(row, batchedRows[i] as Float32Array) <= TOLERANCE, `text ${i}: single vs batched`);
      });
    });

    it('flags exactly the texts Python truncates', async () => {
      const decisions = await batched.classify(ref.texts);
      assert.deepEqual(
        decisions.map((d) => d.truncated),
        ref.truncated,
      );
    });

    it('text pairs (type ids 0 and 1): every row within 1e-5 of eager', async () => {
      const rows = await batched.logits(ref.pairs.map(([text, pair]) => ({ text, pair })));
      rows.forEach((row, i) => {
        const diff = maxAbsDiff(row, ref.pair_logits[i] as number[]);
        assert.ok(diff <= TOLERANCE, `pair ${i} differs by ${diff}`);
      });
    });

    it('a single text gives the same logits as its row in a batch', async () => {
      const i = ref.texts.length - 1;
      const one = await batched.logits(ref.texts[i] as string);
      assert.ok(maxAbsDiff(one, ref.logits[i] as number[]) <= TOLERANCE);
    });
  });
}
