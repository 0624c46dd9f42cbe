// Type tests: the decision union and the options are typed by the labels. tsc checks this
// file (a @ts-expect-error that stops being an error fails the build); running it checks
// that the typed paths behave as their types say.

import assert from 'node:assert/strict';
import { it } from 'node:test';

import { Classifier, type Decision } from '../lib/index.js';
import { bundle } from './helpers.js';

it('types decisions by the labels and the "Other" label', async () => {
  const clf = await Classifier.load(bundle('labels2'), {
    labels: ['negative', 'positive'],
    otherLabel: 'Unsure',
    thresholds: { positive: 0.9 },
  });
  try {
    const d: Decision<'negative' | 'positive', 'Unsure'> = await clf.classify('hello');
    if (d.accepted) {
      const label: 'negative' | 'positive' = d.label;
      assert.ok(label === 'negative' || label === 'positive');
      // @ts-expect-error: an accepted decision has no `best`
      void d.best;
    } else {
      const other: 'Unsure' = d.label;
      assert.equal(other, 'Unsure');
      if (d.reason === 'below-threshold' || d.reason === 'out-of-distribution') {
        const best: 'negative' | 'positive' = d.best;
        assert.ok(best);
      } else {
        const none: null = d.best;
        assert.equal(none, null);
      }
    }
    const many: Decision<'negative' | 'positive', 'Unsure'>[] = await clf.classify(['a', 'b']);
    assert.equal(many.length, 2);
    const row: Float32Array = await clf.logits('a');
    assert.equal(row.length, 2);
  } finally {
    await clf.close();
  }
});

// Compile-time only: never called.
export async function rejectedAtCompileTime(): Promise<void> {
  // @ts-expect-error: "neutral" is not one of the labels given
  await Classifier.load('dir', { labels: ['negative', 'positive'], thresholds: { neutral: 0.5 } });
  // @ts-expect-error: not a device
  await Classifier.load('dir', { device: 'gpu' });
  // @ts-expect-error: not a dtype
  await Classifier.load('dir', { dtype: 'int8' });
  const clf = await Classifier.load('dir', { labels: ['x', 'y'] });
  // @ts-expect-error: numbers are not texts
  await clf.classify(42);
  const d = await clf.classify('text');
  // @ts-expect-error: "z" is not a label of this classifier
  if (d.accepted && d.label === 'z') return;
}
