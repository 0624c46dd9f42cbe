// Whose rule applies (lib/rule.ts): the caller's threshold, per-label thresholds and
// temperature against calibration.json's, and whether the guarantee still describes the rule
// served. On a fixture model with a hand-written per-label calibration.

import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { BundleError, Classifier, InvalidArgumentError } from '../lib/index.js';
import { copyBundle, rejectsWith } from './helpers.js';

const GUARANTEE = { kind: 'selective-risk', target_accuracy: 0.95, coverage: 0.4 };

describe('the rule in force', () => {
  let copy: { dir: string; cleanup: () => Promise<void> };
  let labels: string[];

  before(async () => {
    copy = await copyBundle('labels7');
    const config = JSON.parse(await readFile(join(copy.dir, 'config.json'), 'utf8'));
    labels = Object.values(config.id2label) as string[];
    // Per label, as calibrate --per-label writes it: the global threshold is the lowest certified one.
    const thresholds = Object.fromEntries(labels.map((l, i) => [l, i === 0 ? null : 0.2 + i / 100]));
    await writeFile(
      join(copy.dir, 'calibration.json'),
      JSON.stringify({ format: 1, temperature: 1.5, threshold: 0.21, thresholds, guarantee: GUARANTEE }),
    );
  });
  after(() => copy.cleanup());

  async function info(options: Parameters<typeof Classifier.load>[1]): Promise<Classifier['info']> {
    const clf = await Classifier.load(copy.dir, { verify: false, ...options });
    await clf.close();
    return clf.info;
  }

  it('keeps the per-label thresholds and the guarantee for a caller threshold equal to the calibrated one', async () => {
    const calibrated = await info({});
    assert.deepEqual(calibrated.guarantee, GUARANTEE);
    assert.equal(calibrated.thresholds[labels[0] as string], null);
    const same = await info({ threshold: 0.21 });
    assert.deepEqual(same.thresholds, calibrated.thresholds);
    assert.deepEqual(same.guarantee, GUARANTEE);
  });

  it('a threshold of its own replaces the per-label ones, and the guarantee goes with them', async () => {
    const own = await info({ threshold: 0.3 });
    assert.ok(Object.values(own.thresholds).every((t) => t === 0.3));
    assert.equal(own.guarantee, undefined);
  });

  it('a per-label threshold equal to the calibrated one keeps the guarantee; another drops it', async () => {
    const label = labels[3] as string;
    assert.deepEqual((await info({ thresholds: { [label]: 0.23 } })).guarantee, GUARANTEE);
    const changed = await info({ thresholds: { [label]: 0.5 } });
    assert.equal(changed.thresholds[label], 0.5);
    assert.equal(changed.thresholds[labels[4] as string], 0.2 + 4 / 100);
    assert.equal(changed.guarantee, undefined);
  });

  it('calibration.json without a temperature was fitted at 1: another temperature needs a threshold of its own', async () => {
    const other = await copyBundle('labels7');
    try {
      await writeFile(
        join(other.dir, 'calibration.json'),
        JSON.stringify({ format: 1, score: 'max_probability', threshold: 0.15, guarantee: GUARANTEE }),
      );
      await rejectsWith(
        Classifier.load(other.dir, { temperature: 5 }),
        InvalidArgumentError,
        /^The "temperature" option \(5\) differs from the calibration's \(1\), whose thresholds and guarantee hold/,
      );
      const own = await Classifier.load(other.dir, { temperature: 5, threshold: 0.15 });
      await own.close();
      assert.equal(own.info.guarantee, undefined);
      const same = await Classifier.load(other.dir, { temperature: 1 });
      await same.close();
      assert.deepEqual(same.info.guarantee, GUARANTEE);
    } finally {
      await other.cleanup();
    }
  });

  it('a temperature that fp32 cannot serve is refused, from the option and from calibration.json', async () => {
    for (const t of [1e-40, 1e-5, 1e5, 1e300]) {
      await rejectsWith(
        Classifier.load(copy.dir, { temperature: t, threshold: 0.5 }),
        InvalidArgumentError,
        `Expected the "temperature" option to be a number in [0.0001, 10000], got ${t}`,
      );
    }
    const other = await copyBundle('labels7');
    try {
      await writeFile(join(other.dir, 'calibration.json'), JSON.stringify({ temperature: 1e-40, threshold: 0.5 }));
      await rejectsWith(
        Classifier.load(other.dir),
        BundleError,
        'calibration.json: "temperature" must be a number in [0.0001, 10000], got 1e-40',
      );
    } finally {
      await other.cleanup();
    }
  });
});

describe('labels named like members of Object.prototype', () => {
  it('are labels like any other: accepted at threshold 0, their thresholds their own', async () => {
    const copy = await copyBundle('labels7');
    try {
      const path = join(copy.dir, 'config.json');
      const config = JSON.parse(await readFile(path, 'utf8'));
      const names = ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', 'x'];
      // JSON text: an object literal would set the prototype for "__proto__" instead of a key.
      const id2label = `{${names.map((n, i) => `"${i}": ${JSON.stringify(n)}`).join(', ')}}`;
      const label2id = `{${names.map((n, i) => `${JSON.stringify(n)}: ${i}`).join(', ')}}`;
      delete config.id2label;
      delete config.label2id;
      await writeFile(
        path,
        JSON.stringify(config).replace(/}$/, `, "id2label": ${id2label}, "label2id": ${label2id}}`),
      );
      const clf = await Classifier.load(copy.dir, {
        verify: false,
        threshold: 0,
        thresholds: JSON.parse('{"__proto__": 0.25, "toString": 0.5}') as Record<string, number>,
      });
      try {
        assert.deepEqual(clf.labels, names);
        assert.equal(clf.info.thresholds['__proto__'], 0.25);
        assert.equal(clf.info.thresholds['toString'], 0.5);
        assert.equal(clf.info.thresholds['constructor'], 0);
        const decisions = await clf.classify(
          Array.from({ length: 200 }, (_, i) => `install ${'package server game sound text '.slice(0, i % 30)} ${i}`),
        );
        for (const d of decisions) {
          const best = d.accepted ? d.label : d.best;
          const threshold = clf.info.thresholds[best as string] as number;
          assert.equal(d.accepted, d.confidence >= threshold, `${String(best)}: ${d.confidence} vs ${threshold}`);
        }
        // This random-weight model gives its first label, "constructor" here, to these texts.
        const accepted = decisions.filter((d) => d.accepted && d.label === 'constructor').length;
        assert.ok(accepted > 0, 'no text accepted as "constructor" at threshold 0');
      } finally {
        await clf.close();
      }
    } finally {
      await copy.cleanup();
    }
  });
});
