// The drift alarm: its false-alarm rate over many exchangeable streams, that it fires on real
// shifts, that a saved state continues where it stopped and is refused against another
// calibration, and that a classifier runs it on every classified text.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { DriftMonitor, driftCounts, type DriftReference } from '../lib/drift.js';
import { DriftStateError } from '../lib/errors.js';

/** A seeded generator (mulberry32), so every run draws the same numbers. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Max probabilities shaped like a classifier's: most near 1, a tail down to 0.2. */
function confident(random: () => number, shift = 0): number {
  return 1 / (1 + Math.exp(-(3 + shift + 2.5 * Math.log(random() / (1 - random() + 1e-12) + 1e-12))));
}

function reference(random: () => number, n = 5000): DriftReference {
  return {
    counts: driftCounts(Array.from({ length: n }, () => confident(random))),
    coverage: 0.6,
    id: 'calibration-a',
  };
}

/** The upper end of a binomial(n, p) count, three standard deviations out. */
const binomialBound = (n: number, p: number): number => n * p + 3 * Math.sqrt(n * p * (1 - p));

describe('the drift alarm', () => {
  it('false-alarms in at most alpha of 1,000 exchangeable streams (a binomial bound)', () => {
    const alpha = 0.05;
    let alarms = 0;
    for (let stream = 0; stream < 1000; stream++) {
      const random = rng(1000 + stream);
      const monitor = new DriftMonitor(reference(random, 2000), alpha, random);
      for (let i = 0; i < 2000 && !monitor.stats().alarm; i++) monitor.observe(confident(random), random() < 0.6);
      if (monitor.stats().alarm) alarms++;
    }
    assert.ok(alarms <= binomialBound(1000, alpha), `${alarms} of 1000 streams alarmed`);
  });

  it('fires on a shift to less confident texts, and on one to more confident texts', (t) => {
    for (const shift of [-2, 2]) {
      const delays: number[] = [];
      for (let stream = 0; stream < 100; stream++) {
        const random = rng(5000 + stream);
        const monitor = new DriftMonitor(reference(random), 0.01, random);
        for (let i = 0; i < 1000; i++) monitor.observe(confident(random), true);
        let at = 0;
        for (let i = 1; i <= 5000 && at === 0; i++) if (monitor.observe(confident(random, shift), true)) at = i;
        assert.ok(at > 0, `stream ${stream} (shift ${shift}) never alarmed`);
        delays.push(at);
      }
      delays.sort((a, b) => a - b);
      t.diagnostic(`shift ${shift}: median delay to alarm ${delays[50]} texts`);
    }
  });

  it('tracks the recent acceptance rate against the calibrated coverage', () => {
    const random = rng(3);
    const monitor = new DriftMonitor(reference(random), 0.01, random);
    for (let i = 0; i < 1500; i++) monitor.observe(confident(random), i % 4 !== 0);
    const { acceptance } = monitor.stats();
    assert.deepEqual(
      { ...acceptance, recent: Math.round(acceptance.recent * 1000) / 1000 },
      {
        recent: 0.75,
        window: 1000,
        calibrated: 0.6,
      },
    );
  });

  it('continues from a saved state as if never stopped; refuses another calibration, alpha or a malformed state', () => {
    const counts = reference(rng(4)).counts;
    const stream = Array.from({ length: 3000 }, (_, i) => confident(rng(10 + i), i > 1500 ? -1 : 0));
    const ties = rng(99);
    const whole = new DriftMonitor({ counts, coverage: 0.6, id: 'a' }, 0.01, ties);
    stream.forEach((s, i) => whole.observe(s, i % 3 === 0));
    const tiesAgain = rng(99);
    const first = new DriftMonitor({ counts, coverage: 0.6, id: 'a' }, 0.01, tiesAgain);
    stream.slice(0, 1700).forEach((s, i) => first.observe(s, i % 3 === 0));
    const saved = JSON.parse(JSON.stringify(first.state()));
    const second = new DriftMonitor({ counts, coverage: 0.6, id: 'a' }, 0.01, tiesAgain);
    second.restore(saved);
    stream.slice(1700).forEach((s, i) => second.observe(s, (1700 + i) % 3 === 0));
    assert.deepEqual(second.stats(), whole.stats());

    const other = new DriftMonitor({ counts, coverage: 0.6, id: 'b' }, 0.01);
    assert.throws(
      () => other.restore(saved),
      (e: unknown) =>
        e instanceof DriftStateError &&
        e.code === 'ERR_DRIFT_STATE' &&
        e.message === "the drift state was saved against calibration a; this classifier's is b",
    );
    const looser = new DriftMonitor({ counts, coverage: 0.6, id: 'a' }, 0.05);
    assert.throws(() => looser.restore(saved), /saved with alpha 0\.01; this monitor has 0\.05/);
    assert.throws(() => second.restore({ ...saved, seen: saved.seen.slice(1) }), /malformed/);
    assert.throws(() => second.restore({ ...saved, texts: saved.texts + 1 }), /malformed/);
  });
});
