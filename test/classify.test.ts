// Decisions: thresholds, "Other", temperature, scores, calibration maps and invalid rows.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { BundleError, Classifier, InvalidArgumentError, type Decision } from '../lib/index.js';
import { bundle, copyBundle, expected, maxAbsDiff, type Expected } from './helpers.js';

const LABELS7 = ['admin', 'devel', 'games', 'graphics', 'net', 'sound', 'text'] as const;

/** Reference maths in fp64, from raw logits. */
function softmax(logits: ArrayLike<number>, temperature: number): { p: number[]; lse: number } {
  const x = Array.from(logits, (z) => z / temperature);
  const m = Math.max(...x);
  const lse = m + Math.log(x.reduce((s, v) => s + Math.exp(v - m), 0));
  return { p: x.map((v) => Math.exp(v - lse)), lse };
}

describe('classify', () => {
  let ref: Expected;
  let clf: Classifier<(typeof LABELS7)[number]>;
  let texts: string[];

  before(async () => {
    ref = await expected('labels7');
    texts = ref.texts.slice(0, 20);
    clf = await Classifier.load(bundle('labels7'), { labels: LABELS7 });
  });
  after(() => clf?.close());

  it('reports what it loaded', () => {
    const { info } = clf;
    assert.deepEqual(info.labels, LABELS7);
    assert.equal(info.device, 'cpu');
    assert.equal(info.dtype, 'float32');
    assert.equal(info.model.numLabels, 7);
    assert.equal(info.model.outputKind, 'dict');
    assert.equal(info.frozen, true);
    assert.equal(info.maxLength, 96);
    assert.equal(info.threshold, 0);
    assert.equal(info.temperature, 1);
    assert.equal(info.topK, 5);
    assert.equal(info.randomWeights, true);
  });

  it('with the default threshold 0, accepts every text with its best label', async () => {
    const decisions = await clf.classify(texts);
    const logits = await clf.logits(texts);
    decisions.forEach((d, i) => {
      assert.equal(d.accepted, true);
      const row = logits[i] as Float32Array;
      const argmax = row.indexOf(Math.max(...row));
      assert.equal(d.label, LABELS7[argmax]);
    });
  });

  it('gives probabilities equal to softmax(logits / T), top-k sorted, with margin, entropy and energy', async () => {
    for (const temperature of [1, 0.25, 3]) {
      const c = await Classifier.load(bundle('labels7'), { temperature, topK: 7 });
      try {
        const [decisions, logits] = await Promise.all([c.classify(texts), c.logits(texts)]);
        decisions.forEach((d, i) => {
          const { p, lse } = softmax(logits[i] as Float32Array, temperature);
          const sorted = [...p].sort((a, b) => b - a);
          assert.equal(d.top.length, 7);
          d.top.forEach((entry, j) => {
            assert.ok(
              Math.abs(entry.probability - (sorted[j] as number)) < 1e-5,
              `T=${temperature} text ${i} rank ${j}`,
            );
            assert.ok(Math.abs(entry.probability - (p[LABELS7.indexOf(entry.label as never)] as number)) < 1e-5);
            assert.ok(Math.abs(Math.exp(entry.logProbability) - entry.probability) < 1e-12);
          });
          assert.ok(d.scores !== null);
          assert.ok(Math.abs(d.scores.margin - ((sorted[0] as number) - (sorted[1] as number))) < 1e-5);
          const entropy = -p.reduce((s, q) => s + (q > 0 ? q * Math.log(q) : 0), 0);
          assert.ok(Math.abs(d.scores.entropy - entropy) < 1e-5, `entropy ${d.scores.entropy} vs ${entropy}`);
          assert.ok(Math.abs(d.scores.energy - -temperature * lse) < 1e-4 * Math.max(1, Math.abs(lse)));
        });
      } finally {
        await c.close();
      }
    }
  });

  it('gives the whole distribution with logProbabilities: log softmax(logits / T) of every label', async () => {
    const c = await Classifier.load(bundle('labels7'), { temperature: 0.5 });
    try {
      const [rows, logits, one] = await Promise.all([
        c.logProbabilities(texts),
        c.logits(texts),
        c.logProbabilities(texts[3] as string),
      ]);
      assert.equal(rows.length, texts.length);
      rows.forEach((row, i) => {
        assert.ok(row instanceof Float32Array && row.length === LABELS7.length);
        const { p } = softmax(logits[i] as Float32Array, 0.5);
        assert.ok(maxAbsDiff(Float32Array.from(row, Math.exp), p) < 1e-5, `text ${i}`);
      });
      assert.ok(maxAbsDiff(one, rows[3] as Float32Array) < 1e-5, 'one text alone equals its row in a batch');
    } finally {
      await c.close();
    }
  });

  it('sends texts below the threshold to "Other", naming the best label and the threshold', async () => {
    const c = await Classifier.load(bundle('labels7'), { threshold: 1 });
    try {
      const d = await c.classify(texts[3] as string);
      assert.equal(d.accepted, false);
      assert.equal(d.label, 'Other');
      if (d.accepted || d.reason !== 'below-threshold') throw new Error('expected below-threshold');
      assert.equal(d.threshold, 1);
      assert.equal(d.best, d.top[0]?.label);
      assert.ok(d.probability < 1);
    } finally {
      await c.close();
    }
  });

  it('applies per-label thresholds over the global one, and a custom "Other" label', async () => {
    const decisions = await clf.classify(texts);
    const firstBest = decisions[0]?.label as (typeof LABELS7)[number];
    const c = await Classifier.load(bundle('labels7'), {
      labels: LABELS7,
      threshold: 0,
      thresholds: { [firstBest]: 1 },
      otherLabel: 'Unclassified',
    });
    try {
      const again = await c.classify(texts);
      let rejected = 0;
      again.forEach((d, i) => {
        const before = decisions[i] as Decision<string>;
        if (before.label === firstBest) {
          assert.equal(d.accepted, false);
          assert.equal(d.label, 'Unclassified');
          rejected++;
        } else {
          assert.equal(d.accepted, true);
          assert.equal(d.label, before.label);
        }
      });
      assert.ok(rejected > 0);
      assert.equal(c.info.thresholds[firstBest], 1);
    } finally {
      await c.close();
    }
  });

  it('confidenceOf takes a probability only; a map with knots outside [0, 1] is refused', async () => {
    const copy = await copyBundle('labels7');
    try {
      const c = await Classifier.load(copy.dir);
      try {
        assert.equal(c.confidenceOf(0.25), 0.25, 'without a map the probability itself');
        for (const bad of [Number.NaN, -0.1, 1.5, '0.5', null, undefined, 10n]) {
          assert.throws(
            () => c.confidenceOf(bad as never),
            (e: unknown) =>
              e instanceof InvalidArgumentError &&
              e.message.startsWith('Expected the probability given to confidenceOf to be a number in [0, 1], got'),
          );
        }
      } finally {
        await c.close();
      }
      for (const x of [
        [-3, -2],
        [5, 6],
        [0.1, Number.POSITIVE_INFINITY],
      ]) {
        const map = JSON.stringify({ kind: 'isotonic', x, y: [0.2, 0.4] }).replace('null', '1e999');
        await writeFile(
          join(copy.dir, 'calibration.json'),
          `{"temperature": 1, "score": "calibrated_max_probability", "threshold": 0.5, "map": ${map}}`,
        );
        await assert.rejects(
          Classifier.load(copy.dir),
          (e: unknown) => e instanceof BundleError && e.field === 'map',
          JSON.stringify(x),
        );
      }
    } finally {
      await copy.cleanup();
    }
  });

  it('classifies the empty string and whitespace like any text ([CLS] [SEP])', async () => {
    const [empty, blank] = await clf.classify(['', '   ']);
    assert.equal(empty?.accepted, true);
    assert.equal(empty?.truncated, false);
    assert.deepEqual(await clf.logits(''), await clf.logits('   '));
    assert.equal(blank?.label, empty?.label);
  });

  it('takes UTF-8 bytes as text', async () => {
    const text = 'Café naïve İstanbul 🚀';
    const [fromString, fromBytes] = await Promise.all([clf.logits(text), clf.logits(Buffer.from(text, 'utf8'))]);
    assert.deepEqual(fromBytes, fromString);
  });

  it('flags truncation of an over-long text and still classifies it', async () => {
    const d = await clf.classify('word '.repeat(5000));
    assert.equal(d.truncated, true);
    assert.equal(d.accepted, true);
  });

  it('answers concurrent calls in order, each as if alone (within 1e-5: they share padded batches)', async () => {
    const alone: Float32Array[] = [];
    for (const t of texts) alone.push(await clf.logits(t)); // one at a time: batches of one
    const [batch, ...singles] = await Promise.all([clf.logits(texts), ...texts.map((t) => clf.logits(t))]);
    texts.forEach((_, i) => {
      assert.ok(maxAbsDiff(singles[i] as Float32Array, alone[i] as Float32Array) <= 1e-5, `text ${i} alone`);
      assert.ok(
        maxAbsDiff((batch as Float32Array[])[i] as Float32Array, alone[i] as Float32Array) <= 1e-5,
        `text ${i}`,
      );
    });
    assert.ok(
      Object.keys(clf.stats().batchSizes).some((size) => Number(size) > 1),
      'concurrent calls shared batches',
    );
  });
});

describe('invalid logits', () => {
  it('turns NaN rows into "Other" with reason "invalid", leaving the other rows alone', async () => {
    const c = await Classifier.load(bundle('nan'), { otherLabel: 'Unclassified' });
    try {
      // The nan fixture's model returns NaN for texts holding an unknown token.
      const [ok, bad] = await c.classify(['install the package', 'hieroglyph 𓀀 here']);
      assert.equal(ok?.accepted, true);
      assert.equal(c.info.model.outputKind, 'tensor');
      // Every field, in one line per group: no label, no score, nothing to trust.
      const { accepted, label, best, reason, ...rest } = bad as Extract<
        Decision<string, string>,
        { reason: 'invalid' }
      >;
      assert.deepEqual(
        { accepted, label, best, reason },
        { accepted: false, label: 'Unclassified', best: null, reason: 'invalid' },
      );
      assert.deepEqual(rest, {
        probability: 0,
        logProbability: -Infinity,
        confidence: 0,
        top: [],
        truncated: false,
        scores: null,
      });
    } finally {
      await c.close();
    }
  });
});
