// The calibration maths: Clopper–Pearson against scipy, temperature recovery, ECE by hand, the
// guarantee holding over 1,000 random draws, and bad data.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';

import { clopperPearsonUpper, incompleteBeta } from '../lib/calibration/beta.js';
import { readLabelled } from '../lib/calibration/data.js';
import { calibrate } from '../lib/calibration/calibrate.js';
import { evaluate } from '../lib/calibration/evaluate.js';
import { auroc, ece, mce, nll, riskCoverage, scoreAll, type RowScores } from '../lib/calibration/metrics.js';
import { fitTemperature } from '../lib/calibration/temperature.js';
import {
  byCoverage,
  fixedSequences,
  InsufficientDataError,
  minimumExamples,
  withGuarantee,
} from '../lib/calibration/thresholds.js';
import { applyConfidenceMap, fitConfidenceMap, isConfidenceMap } from '../lib/confidence-map.js';
import { chooseSmoothing, MIN_BLOCKS, MIN_KNOTS } from '../lib/calibration/smoothing.js';
import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { DataError } from '../lib/errors.js';
import { mulberry32 as rng } from '../lib/seeded-random.js';

function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

const row = (maxProbability: number, correct: boolean): RowScores => ({
  valid: true,
  predicted: 0,
  correct,
  probabilities: new Float64Array([maxProbability]),
  maxProbability,
  margin: 0,
  negativeEntropy: 0,
  negativeEnergy: 0,
  logProbabilityOfLabel: 0,
});

describe('Clopper–Pearson and the incomplete beta, against scipy', () => {
  let fixture: {
    bounds: Array<{ errors: number; n: number; delta: number; upper: number }>;
    incomplete_beta: Array<{ x: number; a: number; b: number; value: number }>;
  };
  before(async () => {
    fixture = JSON.parse(await readFile(join(PACKAGE_ROOT, 'test', 'fixtures', 'clopper-pearson.json'), 'utf8'));
  });

  it('matches scipy.stats.beta.ppf for every bound', () => {
    assert.ok(fixture.bounds.length > 50);
    for (const { errors, n, delta, upper } of fixture.bounds) {
      const ours = clopperPearsonUpper(errors, n, delta);
      assert.ok(
        Math.abs(ours - upper) <= 1e-9 * Math.max(1, upper),
        `k=${errors} n=${n} delta=${delta}: ${ours} vs ${upper}`,
      );
    }
  });

  it('matches scipy.special.betainc', () => {
    for (const { x, a, b, value } of fixture.incomplete_beta) {
      const ours = incompleteBeta(x, a, b);
      assert.ok(Math.abs(ours - value) <= 1e-10, `I_${x}(${a}, ${b}) = ${ours} vs ${value}`);
    }
  });
});

describe('temperature scaling', () => {
  for (const truth of [0.5, 2]) {
    it(`recovers T = ${truth} from labels drawn at that temperature`, () => {
      const random = rng(truth * 1000);
      const logits: number[][] = [];
      const labels: number[] = [];
      for (let i = 0; i < 20_000; i++) {
        const z = Array.from({ length: 10 }, () => 3 * gaussian(random));
        const w = z.map((v) => Math.exp(v / truth));
        const total = w.reduce((s, v) => s + v, 0);
        let u = random() * total;
        let label = 0;
        while (label < 9 && (u -= w[label] as number) > 0) label++;
        logits.push(z);
        labels.push(label);
      }
      const fitted = fitTemperature({ logits, labels });
      assert.ok(Math.abs(fitted - truth) / truth < 0.05, `fitted ${fitted}`);
    });
  }
});

describe('calibration figures', () => {
  it('computes ECE and MCE as by hand (15 bins)', () => {
    // Bins: 0.95 -> (14/15, 1], 0.62 -> (9/15, 10/15], 0.3 -> (4/15, 5/15].
    const rows = [row(0.95, true), row(0.95, false), row(0.62, true), row(0.62, true), row(0.3, false), row(0.3, true)];
    // |0.5 - 0.95| * 2/6 + |1 - 0.62| * 2/6 + |0.5 - 0.3| * 2/6
    assert.ok(Math.abs(ece(rows) - (0.45 + 0.38 + 0.2) / 3) < 1e-12);
    assert.ok(Math.abs(mce(rows) - 0.45) < 1e-12);
  });

  it('computes AURC, and zero E-AURC for a perfect ranking', () => {
    const perfect = [row(0.9, true), row(0.8, true), row(0.7, false), row(0.6, false)];
    const curve = riskCoverage(perfect);
    assert.deepEqual(Array.from(curve.risk), [0, 0, 1 / 3, 1 / 2]);
    assert.ok(Math.abs(curve.aurc - (0 + 0 + 1 / 3 + 1 / 2) / 4) < 1e-12);
    const reversed = riskCoverage([row(0.9, false), row(0.8, false), row(0.7, true), row(0.6, true)]);
    assert.ok(reversed.eAurc > curve.eAurc);
  });

  it('computes AUROC with ties as the Mann–Whitney statistic', () => {
    assert.equal(auroc([3, 4], [1, 2]), 1);
    assert.equal(auroc([1, 2], [3, 4]), 0);
    assert.equal(auroc([1, 1], [1, 1]), 0.5);
  });
});

describe('rows with NaN or infinite logits', () => {
  // Two labels; the first four rows are clean, the last two are invalid and carry label 0,
  // which a silent argmax would predict (NaN compares false, so index 0 "wins").
  const clean = [
    [3, 0],
    [0, 3],
    [2, 0],
    [0, 1],
  ];
  const p = {
    logits: [...clean, [Number.NaN, 0], [Number.POSITIVE_INFINITY, 1]],
    labels: [0, 1, 0, 0, 0, 0],
  };
  const cleanOnly = { logits: clean, labels: [0, 1, 0, 0] };

  it('are never accepted and count as wrong, with every score -Infinity', () => {
    const e = evaluate(p, 1, () => 0, 2);
    assert.equal(e.accuracy, 3 / 6); // the clean rows hold 3 right; the invalid two are wrong
    assert.equal(e.coverage, 4 / 6);
    assert.equal(e.selectiveAccuracy, 3 / 4);
    const invalid = scoreAll(p, 1).slice(4);
    for (const r of invalid) {
      assert.equal(r.valid, false);
      assert.equal(r.predicted, -1);
      assert.equal(r.correct, false);
      assert.equal(r.maxProbability, 0);
      assert.equal(r.negativeEnergy, Number.NEGATIVE_INFINITY);
      assert.equal(r.margin, Number.NEGATIVE_INFINITY);
    }
  });

  it('take no part in NLL, ECE, or the temperature fit', () => {
    const withNaN = scoreAll(p, 1.5);
    const without = scoreAll(cleanOnly, 1.5);
    assert.equal(nll(withNaN), nll(without));
    assert.equal(ece(withNaN), ece(without));
    assert.ok(Number.isFinite(nll(withNaN)));
    assert.equal(fitTemperature(p), fitTemperature(cleanOnly));
  });

  it('take no part in where a threshold goes; coverage is still a share of all rows', () => {
    const data = { file: 'x', sha256: '0' };
    const a = calibrate(p, ['a', 'b'], { coverage: 0.5 }, data).file;
    const b = calibrate(cleanOnly, ['a', 'b'], { coverage: 0.75 }, data).file;
    assert.equal(a.threshold, b.threshold);
    assert.ok(a.guarantee.kind === 'coverage' && b.guarantee.kind === 'coverage');
    assert.equal(a.guarantee.coverage, 0.5);
    assert.equal(a.figures.after.nll, b.figures.after.nll);
  });
});

describe('thresholds', () => {
  it('accepts the requested share by coverage', () => {
    const rows = Array.from({ length: 100 }, (_, i) => ({ score: i / 100, correct: true }));
    const chosen = byCoverage(rows, 0.8);
    assert.equal(chosen.coverage, 0.8);
    assert.equal(chosen.threshold, 0.2);
  });

  it('holds its guarantee in at least 1 - delta of 1,000 random calibration sets', () => {
    // Scores uniform on [0, 1]; P(correct | s) = 0.5 + 0.5 s, so the true selective risk of
    // threshold t is E[0.5 - 0.5 s | s >= t] = 0.25 (1 - t).
    const risk = 0.1;
    const delta = 0.1;
    const random = rng(7);
    let violations = 0;
    let refused = 0;
    let covered = 0;
    for (let trial = 0; trial < 1000; trial++) {
      // The size of a real calibration set's order of magnitude (the Debian one has 9,155).
      const rows = Array.from({ length: 3000 }, () => {
        const score = random();
        return { score, correct: random() < 0.5 + 0.5 * score };
      });
      try {
        const { threshold, coverage } = withGuarantee(rows, risk, delta);
        if (0.25 * (1 - threshold) > risk) violations++;
        covered += coverage;
      } catch (error) {
        // Refusing to certify any threshold breaks no guarantee; it is counted, not hidden.
        if (!(error instanceof InsufficientDataError)) throw error;
        refused++;
      }
    }
    // The best a guarantee could do here is threshold 0.6 (coverage 0.4); SGR, whose tests run
    // at delta / ceil(log2 n), gets ~0.3.
    assert.ok(violations <= delta * 1000, `${violations} of 1000 calibration sets broke the guarantee`);
    assert.ok(refused <= 10, `${refused} of 1000 calibration sets certified nothing`);
    assert.ok(
      covered / (1000 - refused) > 0.25,
      `mean coverage ${covered / (1000 - refused)}: the bound is uselessly loose`,
    );
  });

  it('refuses when the data are too few for the guarantee, saying how many are needed', () => {
    const rows = Array.from({ length: 50 }, (_, i) => ({ score: i / 50, correct: true }));
    assert.equal(minimumExamples(0.01, 0.05), 299);
    assert.throws(
      () => withGuarantee(rows, 0.01, 0.05),
      (e: unknown) => {
        return (
          e instanceof InsufficientDataError &&
          e.message ===
            'no threshold has selective risk <= 0.01 at confidence 0.95: 50 examples are too few (each of the 6 tests runs at level 0.00833; with no errors at all, 477 accepted examples would be needed)'
        );
      },
    );
  });
});

describe('per-label thresholds: fixed-sequence scans from several starts', () => {
  it('certify a threshold past a stretch too thin for any bound, where a binary search gives up', () => {
    // 400 texts of one label, most confident first: 2 errors among the first 30, then none down
    // to 330, then 40%. At 200 texts the 2 errors still fail the bound (the binary search's
    // first test, after which it only tries fewer); at 250 to 330 they pass.
    const random = rng(11);
    const rows = Array.from({ length: 400 }, (_, i) => ({
      score: 1 - i / 400,
      correct: i < 330 ? i !== 3 && i !== 17 : random() >= 0.4,
    }));
    const scanned = fixedSequences(rows, 0.05, 0.05 / 50);
    assert.ok(scanned && scanned.accepted >= 300, `accepted ${scanned?.accepted}`);
    assert.ok(scanned.bound <= 0.05);
    let searched = 0;
    try {
      searched = withGuarantee(rows, 0.05, 0.05 / 50).accepted;
    } catch (error) {
      if (!(error instanceof InsufficientDataError)) throw error;
    }
    assert.ok(scanned.accepted > searched, `scans ${scanned.accepted}, binary search ${searched}`);
  });

  it('hold their guarantee in at least 1 - delta of 1,000 random calibration sets', () => {
    // As for the global threshold: P(correct | s) = 0.5 + 0.5 s, true selective risk 0.25 (1 - t).
    const risk = 0.1;
    const delta = 0.1;
    const random = rng(8);
    let violations = 0;
    let certified = 0;
    for (let trial = 0; trial < 1000; trial++) {
      const rows = Array.from({ length: 3000 }, () => {
        const score = random();
        return { score, correct: random() < 0.5 + 0.5 * score };
      });
      const g = fixedSequences(rows, risk, delta);
      if (g === null) continue;
      certified++;
      if (0.25 * (1 - g.threshold) > risk) violations++;
    }
    assert.ok(violations <= delta * 1000, `${violations} of 1000 broke the guarantee`);
    assert.ok(certified >= 900, `${certified} of 1000 certified a threshold`);
  });

  it('leave a label with too few texts without a threshold: calibrate never accepts it', () => {
    // Label 0: 2,000 confident, mostly right texts; label 1: 20 texts, too few for any bound.
    const random = rng(12);
    const logits: Float32Array[] = [];
    const labels: number[] = [];
    for (let i = 0; i < 2020; i++) {
      const label = i < 2000 ? 0 : 1;
      const margin = 2 + 4 * random();
      logits.push(Float32Array.from(label === 0 ? [margin, 0] : [0, margin]));
      labels.push(random() < 0.97 ? label : 1 - label);
    }
    const { file } = calibrate(
      { logits, labels },
      ['big', 'small'],
      { targetAccuracy: 0.9, delta: 0.05, perLabel: true },
      {
        file: 'synthetic',
        sha256: '0',
      },
    );
    assert.equal(file.thresholds?.['small'], null);
    assert.equal(typeof file.thresholds?.['big'], 'number');
    assert.equal(file.guarantee.kind === 'selective-risk' && file.guarantee.per_label?.['small'], null);
    assert.match(file.guarantee.kind === 'selective-risk' ? file.guarantee.method : '', /never accepted/);
  });
});

describe('the confidence map', () => {
  it('turns an overconfident model calibrated: ECE from over 10% to under 1.5%', () => {
    // True accuracy at max probability p is p^2: overconfident everywhere but at 1.
    const random = rng(13);
    const make = (n: number): RowScores[] =>
      Array.from({ length: n }, () => {
        const p = 0.3 + 0.7 * random();
        return row(p, random() < p * p);
      });
    const fit = make(10_000);
    const map = fitConfidenceMap(
      fit.map((r) => r.maxProbability),
      fit.map((r) => r.correct),
    );
    assert.ok(isConfidenceMap(map));
    const test = make(10_000);
    const mapped = test.map((r) => ({ ...r, maxProbability: applyConfidenceMap(map, r.maxProbability) }));
    assert.ok(ece(test) > 0.1, `before ${ece(test)}`);
    assert.ok(ece(mapped) < 0.015, `after ${ece(mapped)}`);
  });

  it('is increasing, flat outside its knots, and never ties two scores inside them', () => {
    const map = fitConfidenceMap([0.2, 0.4, 0.4, 0.6, 0.8, 0.9], [false, true, false, false, true, true]);
    // 0.2 wrong; 0.4 (once right, once wrong) pooled with 0.6 (wrong); 0.8 and 0.9 (right) pooled.
    assert.equal(map.x.length, 3);
    [0.2, (0.4 + 0.4 + 0.6) / 3, 0.85].forEach((x, i) => assert.ok(Math.abs((map.x[i] as number) - x) < 1e-12));
    assert.deepEqual(map.y, [0, 1 / 3, 1]);
    assert.equal(applyConfidenceMap(map, 0.1), 0);
    assert.equal(applyConfidenceMap(map, 0.95), 1);
    assert.ok(applyConfidenceMap(map, 0.61) < applyConfidenceMap(map, 0.62));
    assert.equal(isConfidenceMap({ kind: 'isotonic', x: [0.5, 0.4], y: [0.1, 0.2] }), false);
    assert.equal(isConfidenceMap({ kind: 'isotonic', x: [0.4, 0.5], y: [0.3, 0.2] }), false);
  });

  it('keeps no block under minBlock texts, and stays increasing', () => {
    const random = rng(5);
    const scores = Array.from({ length: 3_000 }, () => random());
    const correct = scores.map((p) => random() < p);
    const plain = fitConfidenceMap(scores, correct);
    const smooth = fitConfidenceMap(scores, correct, 200);
    assert.ok(isConfidenceMap(smooth));
    assert.ok(smooth.x.length <= 3_000 / 200 && smooth.x.length < plain.x.length, `${smooth.x.length} knots`);
    assert.ok(smooth.y.every((y, i) => i === 0 || y >= (smooth.y[i - 1] as number)));
  });

  it('chooses its smoothing by cross-validation: a smooth truth gets blocks, and a smaller held-out error', () => {
    // Accuracy p^2 at max probability p: smooth, so blocks of a few texts only follow noise.
    const random = rng(17);
    const rows = Array.from({ length: 2_000 }, () => {
      const p = 0.3 + 0.7 * random();
      return row(p, random() < p * p);
    });
    const s = chooseSmoothing(
      rows,
      rows.map((r) => r.maxProbability),
    );
    // 1,600 texts in each fold's fit: room for MIN_KNOTS blocks of up to 80.
    assert.deepEqual(
      s.cv.map((c) => c.minBlock),
      [1, ...MIN_BLOCKS.filter((m) => m > 1 && m * MIN_KNOTS <= 1_600)],
    );
    const plain = s.cv[0] as (typeof s.cv)[number];
    const chosen = s.cv.find((c) => c.minBlock === s.minBlock) as (typeof s.cv)[number];
    assert.ok(s.minBlock > 1, JSON.stringify(s));
    // Held-out ECE on folds of 400 texts is mostly sampling noise: the Brier score decides.
    assert.ok(chosen.brier < plain.brier, JSON.stringify(s));
    // On fresh texts from the same truth, the chosen map is better calibrated than the plain one.
    const test = Array.from({ length: 20_000 }, () => {
      const p = 0.3 + 0.7 * random();
      return row(p, random() < p * p);
    });
    const fitted = (minBlock: number) =>
      fitConfidenceMap(
        rows.map((r) => r.maxProbability),
        rows.map((r) => r.correct),
        minBlock,
      );
    const eceOf = (minBlock: number): number =>
      ece(test.map((r) => ({ ...r, maxProbability: applyConfidenceMap(fitted(minBlock), r.maxProbability) })));
    assert.ok(eceOf(s.minBlock) < eceOf(1), `${eceOf(s.minBlock)} against ${eceOf(1)}`);
  });

  it('on a small split never pools everything into one flat block; with too few texts it stays plain', () => {
    // 200 texts: every block of 25 or more would be one block in a fold's fit, and a flat map
    // gives every text one confidence, which no threshold can split (from an outside attack).
    const random = rng(3);
    const rows = Array.from({ length: 200 }, () => {
      const p = 0.4 + 0.6 * random();
      return row(p, random() < p);
    });
    const s = chooseSmoothing(
      rows,
      rows.map((r) => r.maxProbability),
    );
    assert.ok(s.minBlock * MIN_KNOTS <= 160, JSON.stringify(s));
    const map = fitConfidenceMap(
      rows.map((r) => r.maxProbability),
      rows.map((r) => r.correct),
      s.minBlock,
    );
    assert.ok(map.x.length > 1, JSON.stringify(map));
    const few = chooseSmoothing(
      rows.slice(0, 4),
      rows.slice(0, 4).map((r) => r.maxProbability),
    );
    assert.deepEqual(few, { minBlock: 1, folds: 5, cv: [] });
  });

  it('keeps a sharp step in the truth: no block size that would blur it wins', () => {
    // Right 10% of the time below 0.5, 95% above: one step, which a large block would straddle.
    const random = rng(23);
    const rows = Array.from({ length: 2_000 }, () => {
      const p = random();
      return row(p, random() < (p < 0.5 ? 0.1 : 0.95));
    });
    const s = chooseSmoothing(
      rows,
      rows.map((r) => r.maxProbability),
    );
    const map = fitConfidenceMap(
      rows.map((r) => r.maxProbability),
      rows.map((r) => r.correct),
      s.minBlock,
    );
    assert.ok(applyConfidenceMap(map, 0.4) < 0.2 && applyConfidenceMap(map, 0.6) > 0.85, JSON.stringify(map));
  });
});

describe('labelled data', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bertgate-data-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  async function file(name: string, content: string | Buffer): Promise<string> {
    const path = join(dir, name);
    await writeFile(path, content);
    return path;
  }

  it('reads JSONL and gzipped JSONL, skipping blank lines', async () => {
    const lines = '{"text": "a", "label": "x"}\n\n{"text": "b", "label": "y"}\n';
    const plain = await readLabelled(await file('a.jsonl', lines), ['x', 'y']);
    const gz = await readLabelled(await file('a.jsonl.gz', gzipSync(lines)), ['x', 'y']);
    assert.deepEqual(plain.examples, gz.examples);
    assert.equal(plain.examples.length, 2);
    assert.match(plain.sha256, /^[0-9a-f]{64}$/);
  });

  const bad: Array<[string, string, string]> = [
    ['empty', '\n\n', 'holds no examples'],
    ['malformed', '{"text": "a", "label": "x"}\n{"text": ', 'line 2 is not valid JSON'],
    ['missing field', '{"text": "a"}\n', 'line 1: expected {"text": string, "label": string}'],
    [
      'unknown label',
      '{"text": "a", "label": "x"}\n{"text": "b", "label": "zzz"}\n',
      'line 2: label "zzz" is not one of the model\'s labels',
    ],
  ];
  for (const [name, content, message] of bad) {
    it(`refuses ${name} data with a DataError naming the file and line`, async () => {
      const path = await file(`${name.replace(' ', '-')}.jsonl`, content);
      await assert.rejects(readLabelled(path, ['x', 'y']), (e: unknown) => {
        return e instanceof DataError && e.code === 'ERR_DATA' && e.message.startsWith(`${path} ${message}`);
      });
    });
  }
});
