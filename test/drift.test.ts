// The drift alarm: its run length between false alarms on exchangeable streams, that it fires
// on real shifts however long it has run, that a saved state continues where it stopped and a
// state no run could write is refused, and that a classifier runs it on every classified text.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';

import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { DEFAULT_MODEL, readBundle } from '../lib/bundle.js';
import { readLabelled } from '../lib/calibration/data.js';
import { DriftMonitor, driftCounts, type DriftReference, type DriftState } from '../lib/drift.js';
import { DriftStateError } from '../lib/errors.js';
import { Classifier } from '../lib/index.js';
import { createMetrics } from '../lib/metrics.js';
import { mulberry32 as rng } from '../lib/seeded-random.js';
import { delay, passes, quantile, reweighted, servedScores, shuffled, uptimes, type Served } from './drift-streams.js';

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
/** The monitor's 16 stakes in its order (rank bets, then acceptance bets), for states a run can reach. */
const STAKE_LOGS = [1, 2, 4, 8, -1, -2, -4, -8, 1, 2, 4, 8, -1, -2, -4, -8].map((k) => k / 16);

const binomialBound = (n: number, p: number): number => n * p + 3 * Math.sqrt(n * p * (1 - p));

const isStateError =
  (message: string | RegExp) =>
  (e: unknown): boolean =>
    e instanceof DriftStateError &&
    e.code === 'ERR_DRIFT_STATE' &&
    (typeof message === 'string' ? e.message === message : message.test(e.message));

describe('the drift alarm', () => {
  it('false-alarms on exchangeable streams no sooner than stated: mean run length >= 1000 / alpha, 5th percentile >= 50 / alpha', (t) => {
    // Scores drawn like a fresh reference's give exactly uniform, independent p-values.
    const alpha = 0.01;
    const lengths: number[] = [];
    for (let stream = 0; stream < 200; stream++) {
      const random = rng(90_000 + stream);
      const counts = driftCounts(Array.from({ length: 2000 }, random));
      const monitor = new DriftMonitor({ counts, coverage: 0.586, id: 'u' }, alpha, random);
      let n = 1;
      while (!monitor.observe(random(), true)) n++;
      lengths.push(n);
    }
    lengths.sort((a, b) => a - b);
    const mean = lengths.reduce((a, b) => a + b, 0) / lengths.length;
    const fifth = quantile(lengths, 0.05);
    t.diagnostic(`200 uniform streams at alpha ${alpha}: mean run length ${Math.round(mean)}, 5th percentile ${fifth}`);
    // Shiryaev-Roberts: E[run length] >= A = 1000 / alpha; P(run length <= n) <= n / A (Doob).
    assert.ok(mean >= 1000 / alpha, `mean run length ${mean}`);
    assert.ok(fifth >= 0.05 * (1000 / alpha), `5th percentile ${fifth}`);
  });

  it('fires on a shift to less confident texts, and on one to more confident texts', (t) => {
    for (const shift of [-2, 2]) {
      const delays: number[] = [];
      for (let stream = 0; stream < 100; stream++) {
        const random = rng(5000 + stream);
        const monitor = new DriftMonitor(reference(random), 0.01, random);
        for (let i = 0; i < 1000; i++) monitor.observe(confident(random), true);
        // A false alarm before the shift (at most 1% of streams at alpha 0.01) leaves nothing to detect.
        if (monitor.stats().alarm) continue;
        let at = 0;
        for (let i = 1; i <= 5000 && at === 0; i++) if (monitor.observe(confident(random, shift), true)) at = i;
        assert.ok(at > 0, `stream ${stream} (shift ${shift}) never alarmed`);
        delays.push(at);
      }
      delays.sort((a, b) => a - b);
      t.diagnostic(`shift ${shift}: median delay to alarm ${quantile(delays, 0.5)} texts`);
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
    const saved = JSON.parse(JSON.stringify(first.state())) as DriftState;
    const second = new DriftMonitor({ counts, coverage: 0.6, id: 'a' }, 0.01, tiesAgain);
    second.restore(saved);
    stream.slice(1700).forEach((s, i) => second.observe(s, (1700 + i) % 3 === 0));
    assert.deepEqual(second.stats(), whole.stats());

    const other = new DriftMonitor({ counts, coverage: 0.6, id: 'b' }, 0.01);
    assert.throws(
      () => other.restore(saved),
      isStateError("the drift state was saved against calibration a; this classifier's is b"),
    );
    const looser = new DriftMonitor({ counts, coverage: 0.6, id: 'a' }, 0.05);
    assert.throws(
      () => looser.restore(saved),
      isStateError('the drift state was saved with alpha 0.01; this monitor has 0.05'),
    );
    assert.throws(
      () => second.restore({ ...saved, seen: saved.seen.slice(1) }),
      isStateError('the drift state is malformed: seen must be 4096 whole counts; it is not what driftState() writes'),
    );
    assert.throws(
      () => second.restore({ ...saved, texts: saved.texts + 1 }),
      isStateError(
        'the drift state is malformed: seen counts 1700 texts, texts says 1701; it is not what driftState() writes',
      ),
    );
    // States that would switch the alarm off for good, or lie about it, are refused too.
    for (const bad of [
      { ...saved, logProducts: saved.logProducts.map(() => Number.NaN) },
      { ...saved, logProducts: saved.logProducts.map(() => 1e308) }, // more than any bet can win
      { ...saved, logPeak: 'high' },
      { ...saved, logPeak: Number.NaN },
      { ...saved, alarmAt: 'soon' },
      { ...saved, alarmAt: saved.texts + 1 },
      { ...saved, seen: halfMoved(saved.seen) }, // same total, but not counts
      { ...saved, logProducts: saved.logProducts.map(() => -1e308) }, // lower than losing every bet
      { ...saved, logStatistics: saved.logStatistics.map(() => 30), alarmAt: null }, // past the alarm level with no alarm
      { ...saved, logStatistics: saved.logStatistics.map(() => 1e-9) }, // below the last bet alone
      { ...saved, logStatistics: saved.logStatistics.map(() => 5000) }, // more than 1,700 bets can win
      { ...saved, logStatistics: saved.logStatistics.map(() => Number.POSITIVE_INFINITY) },
      { ...saved, logPeak: -1 }, // below where the martingale stands
      { ...saved, recent: saved.recent.slice(1) },
      { ...saved, version: 3 },
    ]) {
      assert.throws(() => second.restore(bad as never), DriftStateError, JSON.stringify(bad).slice(0, 80));
    }
    for (const bad of [null, undefined, 'state', []]) {
      assert.throws(() => second.restore(bad as never), isStateError(/a drift state is an object from driftState\(\)/));
    }
  });

  /** Half a text moved from a counted bin to an empty one: the total stays, the counts are not whole. */
  function halfMoved(seen: number[]): number[] {
    const out = [...seen];
    const from = out.findIndex((c) => c > 0);
    out[from] = (out[from] as number) - 0.5;
    out[out.indexOf(0)] = 0.5;
    return out;
  }

  it('refuses a state no run could write: a million texts in one bin with a log value of -600,000, or a bin over the total', () => {
    const counts = reference(rng(4)).counts;
    const monitor = new DriftMonitor({ counts, coverage: 0.6, id: 'a' }, 0.01, rng(8));
    const seen = new Array<number>(4096).fill(0);
    seen[4095] = 1_000_000;
    const lying: DriftState = {
      version: 2,
      calibration: 'a',
      alpha: 0.01,
      texts: 1_000_000,
      seen,
      logStatistics: new Array<number>(16).fill(1),
      logProducts: new Array<number>(16).fill(-600_000),
      logPeak: 0,
      alarmAt: null,
      recent: new Array<number>(1000).fill(1),
    };
    // The smallest bet keeps at least (1 - 1/16)^n: its log can sink to -64,539 here, no lower.
    assert.throws(
      () => monitor.restore(lying),
      isStateError(
        /^the drift state is malformed: logProducts\[0\] -600000 is outside what its bet allows after 1000000 texts \[-64538\.\d+, 60624\.\d+\]; it is not what driftState\(\) writes$/,
      ),
    );
    // The same count in one bin with the log a run can reach is restored, and the alarm still comes.
    const reachable = { ...lying, logProducts: STAKE_LOGS.map((e) => 1_000_000 * Math.log1p(-Math.abs(e))) };
    monitor.restore(reachable);
    let at = 0;
    for (let i = 1; i <= 200 && at === 0; i++) if (monitor.observe(0.01, false)) at = i;
    assert.ok(at > 0 && at <= 40, `alarm at ${at}`);
    const over = [...seen];
    over[0] = 2_000_000;
    assert.throws(
      () => monitor.restore({ ...reachable, seen: over }),
      isStateError(
        'the drift state is malformed: seen counts 3000000 texts, texts says 1000000; it is not what driftState() writes',
      ),
    );
  });

  it('refuses a fresh state whose logs are not those of a fresh start (an alarm switched off before the first text)', () => {
    const monitor = new DriftMonitor(reference(rng(4)), 0.01, rng(8));
    const fresh = monitor.state();
    for (const bad of [
      { ...fresh, logStatistics: fresh.logStatistics.map(() => -800) },
      { ...fresh, logStatistics: fresh.logStatistics.map(() => 800) },
      { ...fresh, logProducts: fresh.logProducts.map(() => -5) },
      { ...fresh, logPeak: 3 },
    ]) {
      assert.throws(
        () => monitor.restore(bad),
        isStateError(
          'the drift state is malformed: a state with no texts must be a fresh start (every log 0, no alarm); ' +
            'it is not what driftState() writes',
        ),
      );
    }
    monitor.restore(fresh);
  });

  it('a state saved after a long drift and a longer calm restores, and the restored monitor goes on as the original', () => {
    const random = rng(21);
    const ref = reference(random);
    const original = new DriftMonitor(ref, 0.01, rng(5));
    // A drift long enough for the losing bets to fall thousands of nats behind the winners, then
    // a calm long enough for the winners to fall back below them: no bet may be lost on the way.
    for (let i = 0; i < 20_000; i++) original.observe(confident(random, 3), false);
    for (let i = 0; i < 300_000; i++) original.observe(confident(random), random() < 0.6);
    const saved = JSON.parse(JSON.stringify(original.state())) as DriftState;
    const copy = new DriftMonitor(ref, 0.01, rng(5));
    copy.restore(saved);
    assert.deepEqual(copy.stats(), original.stats());
    const stats = original.stats();
    assert.ok(Number.isFinite(stats.martingale) && Number.isFinite(stats.statistic), JSON.stringify(stats));
    // The martingale is a mean of products, the smallest stake's at least (1 - 1/16)^n: no bet was
    // lost on the way (one underflowed to 0 would stay there and leave the mean below that floor).
    const floor = 320_000 * Math.log1p(-1 / 16);
    saved.logProducts.forEach((x, i) =>
      assert.ok(x >= 320_000 * Math.log1p(-Math.abs(STAKE_LOGS[i] as number)) - 1e-6, `bet ${i}: ${x}`),
    );
    assert.ok(Math.max(...saved.logProducts) >= floor);
  });

  it('refuses a state saved by the earlier alarm (a martingale since the start), saying so', () => {
    const monitor = new DriftMonitor(reference(rng(4)), 0.01, rng(8));
    const earlier = {
      calibration: 'calibration-a',
      alpha: 0.01,
      texts: 0,
      seen: new Array<number>(4096).fill(0),
      weights: [1 / 3, 1 / 3, 1 / 3],
      logScale: 0,
      peak: 1,
      alarmAt: null,
      recent: [],
    };
    assert.throws(
      () => monitor.restore(earlier as never),
      isStateError(
        'the drift state was saved by an earlier bertgate, whose alarm watched the martingale since the start; ' +
          'it cannot be continued by the change-point alarm: start afresh (do not restore it)',
      ),
    );
  });

  it('keeps the statistic and the martingale finite in JSON however long the drift goes on', () => {
    const counts = driftCounts(Array.from({ length: 2000 }, (_, i) => 0.3 + (0.6 * i) / 2000));
    const monitor = new DriftMonitor({ counts, coverage: 0.5, id: 'x' }, 0.01, rng(5));
    for (let i = 0; i < 20_000; i++) monitor.observe(0.9999, true);
    const stats = JSON.parse(JSON.stringify(monitor.stats()));
    assert.equal(stats.alarm, true);
    assert.equal(stats.martingale, Number.MAX_VALUE);
    assert.equal(stats.peak, Number.MAX_VALUE);
    assert.ok(stats.statistic > stats.threshold && Number.isFinite(stats.statistic), String(stats.statistic));
    const restored = new DriftMonitor({ counts, coverage: 0.5, id: 'x' }, 0.01, rng(5));
    restored.restore(JSON.parse(JSON.stringify(monitor.state())));
    assert.deepEqual(restored.stats(), monitor.stats());
  });
});

describe('the drift alarm on real streams: the default model, the Debian test split, its held-out sections, fortunes', () => {
  let reference: DriftReference;
  let test: Served[];
  let fortunes: Served[];
  let held: Served[];
  const ALPHA = 0.01;

  before(async () => {
    const bundle = await readBundle(DEFAULT_MODEL);
    assert.ok(bundle.calibration?.drift, 'the default model carries a drift reference');
    reference = bundle.calibration.drift;
    [test, fortunes, held] = (await servedScores([
      'data/debian/test.jsonl.gz',
      'data/fortunes/far-ood.jsonl.gz',
      'data/debian/ood.jsonl.gz',
    ])) as [Served[], Served[], Served[]];
  });

  it('runs in a classifier: stats().drift, onDrift (a throwing listener only warns), driftState, resetDrift', async () => {
    const heldTexts = (await readLabelled(join(PACKAGE_ROOT, 'data', 'debian', 'ood.jsonl.gz'))).examples.map(
      (e) => e.text,
    );
    const clf = await Classifier.load(DEFAULT_MODEL, { drift: { alpha: ALPHA } });
    const warnings: string[] = [];
    const onWarning = (w: Error): void => {
      if (w.name === 'BertgateListenerWarning') warnings.push(w.message);
    };
    process.on('warning', onWarning);
    try {
      assert.equal(clf.stats().drift?.texts, 0);
      assert.equal(clf.stats().drift?.threshold, 1000 / ALPHA);
      const fired: number[] = [];
      clf.onDrift(() => {
        throw new Error('listener bug');
      });
      clf.onDrift((stats) => fired.push(stats.alarmAt as number));
      for (let round = 0; round < 10 && fired.length === 0; round++) {
        await clf.classify(heldTexts.slice(0, 300));
        await new Promise((r) => setImmediate(r));
      }
      const stats = clf.stats().drift;
      assert.ok(stats?.alarm, JSON.stringify(stats));
      assert.equal(fired.length, 1, 'the second listener heard the alarm once');
      assert.equal(fired[0], stats.alarmAt);
      assert.match(warnings[0] ?? '', /a bertgate onDrift listener threw; bertgate went on: Error: listener bug/);
      // What serve exports: the statistic beside its alarm level.
      const metrics = createMetrics(clf as unknown as Classifier<string, string>);
      const text = await metrics.registry.metrics();
      metrics.stop();
      assert.ok(text.split('\n').includes(`bertgate_drift_statistic ${stats.statistic}`), text);
      assert.match(text, /^bertgate_drift_threshold 100000$/m);
      assert.match(text, /^bertgate_drift_alarm 1$/m);
      // Carried to another classifier of the same calibration, it goes on from where it was.
      const saved = clf.driftState();
      const next = await Classifier.load(DEFAULT_MODEL, { drift: { alpha: ALPHA } });
      try {
        next.restoreDrift(JSON.parse(JSON.stringify(saved)));
        assert.deepEqual(next.stats().drift, stats);
      } finally {
        await next.close();
      }
      clf.resetDrift();
      assert.equal(clf.stats().drift?.texts, 0);
      assert.equal(clf.stats().drift?.alarm, false);
    } finally {
      process.off('warning', onWarning);
      await clf.close();
    }
  });

  it('false-alarms within 3,000 texts in at most 3,000 / (1000 / alpha) of 1,000 random orders of the test split (Doob)', (t) => {
    let alarms = 0;
    for (let stream = 0; stream < 1000; stream++) {
      const random = rng(20000 + stream);
      const next = passes(test, random);
      if (delay(reference, ALPHA, null, next, random, 3000) > 0) alarms++;
    }
    t.diagnostic(`${alarms} of 1000 in-distribution streams of 3,000 texts alarmed at alpha ${ALPHA}`);
    assert.ok(alarms <= binomialBound(1000, (3000 * ALPHA) / 1000), `${alarms} of 1000`);
  });

  it('after 100,000 in-distribution texts, a switch to fortunes alarms within 100 texts', (t) => {
    // Ten monitors that ran 100,000 texts (the test split reshuffled, pass after pass) without an alarm.
    const { states, falseAlarms } = uptimes(reference, ALPHA, test, 100_000, 10, 60_000);
    const delays = states.map((state, i) => {
      const random = rng(61_000 + i);
      return delay(
        reference,
        ALPHA,
        state,
        () => fortunes[Math.floor(random() * fortunes.length)] as Served,
        random,
        1000,
      );
    });
    t.diagnostic(`delays ${delays.join(', ')}; ${falseAlarms} other streams false-alarmed within their 100,000 texts`);
    for (const d of delays) assert.ok(d > 0 && d <= 100, `delay ${d}`);
  });

  /** Delays after each of `states`, `per` streams each; the share alarmed within 3,000 texts. */
  function shifted(states: Array<DriftState | null>, per: number, acceptance: number, seed: number): number[] {
    return states.flatMap((state, i) =>
      Array.from({ length: per }, (_, k) => {
        const random = rng(seed + i * per + k);
        return delay(reference, ALPHA, state, reweighted(test, acceptance, random), random, 3000);
      }),
    );
  }

  it('alarms within 3,000 texts in 90% of 200 streams whose acceptance moves from the calibrated 0.59 to 0.65 or 0.53, at once', (t) => {
    for (const acceptance of [0.65, 0.53]) {
      const delays = shifted(new Array(200).fill(null), 1, acceptance, 70_000);
      const found = delays.filter((d) => d > 0).sort((a, b) => a - b);
      t.diagnostic(`to ${acceptance}: ${found.length} of 200 within 3,000; median ${quantile(found, 0.5)}`);
      assert.ok(found.length >= 180, `to ${acceptance}: ${found.length} of 200`);
    }
  });

  it('alarms within 3,000 texts in 90% of 200 streams whose acceptance moves to 0.65 or 0.53 after 50,000 texts', (t) => {
    // 40 monitors that ran 50,000 in-distribution texts without an alarm, five shifted streams after each.
    const { states, falseAlarms } = uptimes(reference, ALPHA, test, 50_000, 40, 80_000);
    for (const acceptance of [0.65, 0.53]) {
      const delays = shifted(states, 5, acceptance, 81_000);
      const found = delays.filter((d) => d > 0).sort((a, b) => a - b);
      t.diagnostic(
        `to ${acceptance}: ${found.length} of 200 within 3,000; median ${quantile(found, 0.5)} ` +
          `(${falseAlarms} streams false-alarmed during their 50,000 texts)`,
      );
      assert.ok(found.length >= 180, `to ${acceptance}: ${found.length} of 200`);
    }
  });

  /** The texts of `order`, one after the other. */
  const replay = (order: readonly Served[]): (() => Served) => {
    let i = 0;
    return () => order[i++] as Served;
  };

  it('alarms when, after 2,000 texts, a fifth of the stream comes from the held-out sections', (t) => {
    const delays: number[] = [];
    for (let stream = 0; stream < 200; stream++) {
      const random = rng(30000 + stream);
      const base = shuffled(test, random);
      const mixed = Array.from({ length: 4000 }, (_, i) =>
        random() < 0.2 ? (held[Math.floor(random() * held.length)] as Served) : (base[2000 + i] as Served),
      );
      const at = delay(reference, ALPHA, null, replay([...base.slice(0, 2000), ...mixed]), random, 6000);
      if (at > 2000) delays.push(at - 2000);
    }
    delays.sort((a, b) => a - b);
    t.diagnostic(
      `${delays.length} of 200 streams alarmed after the switch; median delay ${quantile(delays, 0.5)} texts`,
    );
    assert.ok(delays.length >= 190, `${delays.length} of 200 alarmed after the switch`);
  });

  it('alarms when, after 2,000 texts, the stream narrows to three sections', (t) => {
    const counts = new Map<string, number>();
    for (const x of test) counts.set(x.label, (counts.get(x.label) ?? 0) + 1);
    const few = [...counts.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(3, 6)
      .map(([label]) => label);
    const narrow = test.filter((x) => few.includes(x.label));
    const delays: number[] = [];
    for (let stream = 0; stream < 200; stream++) {
      const random = rng(40000 + stream);
      const order = [...shuffled(test, random).slice(0, 2000), ...shuffled(narrow, random)];
      const at = delay(reference, ALPHA, null, replay(order), random, order.length);
      if (at > 2000) delays.push(at - 2000);
    }
    delays.sort((a, b) => a - b);
    t.diagnostic(
      `sections ${few.join(', ')}: ${delays.length} of 200 alarmed; median delay ${quantile(delays, 0.5)} texts`,
    );
    assert.ok(delays.length >= 190, `${delays.length} of 200 alarmed after the switch`);
  });
});
