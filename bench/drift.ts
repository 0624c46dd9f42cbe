// The drift alarm's figures in docs/evaluation.md: the run length between false alarms on
// exchangeable streams (uniform p-values, and the test split reshuffled), and the delay to the
// alarm against the size of the shift and the uptime, on the default model's served scores.
//
//   node scripts/dev-env.mjs node dist/bench/drift.js [--streams 200] [--alpha 0.01] [--cache FILE]
//
// --cache FILE keeps the served scores (minutes of classifying on a CPU) for the next run.
//
// Delays are counted from the first shifted text, over streams with no false alarm before it
// (a stream that false-alarmed during its uptime is counted apart, as the run length shows).

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { DEFAULT_MODEL, readBundle } from '../lib/bundle.js';
import { DriftMonitor, driftCounts, type DriftReference } from '../lib/drift.js';
import { mulberry32 as rng } from '../lib/seeded-random.js';
import { delay, passes, quantile, reweighted, servedScores, uptimes, type Served } from '../test/drift-streams.js';

const { values } = parseArgs({
  options: {
    streams: { type: 'string', default: '200' },
    alpha: { type: 'string', default: '0.01' },
    cache: { type: 'string' },
  },
});
const streams = Number(values.streams);
const alpha = Number(values.alpha);

const bundle = await readBundle(DEFAULT_MODEL);
const reference = bundle.calibration?.drift as DriftReference;
const files = ['data/debian/test.jsonl.gz', 'data/fortunes/far-ood.jsonl.gz', 'data/debian/ood.jsonl.gz'];
const cached = values.cache !== undefined && existsSync(values.cache);
const served = cached
  ? (JSON.parse(readFileSync(values.cache as string, 'utf8')) as Served[][])
  : await servedScores(files);
if (values.cache !== undefined && !cached) writeFileSync(values.cache, JSON.stringify(served));
const [test, fortunes, held] = served as [Served[], Served[], Served[]];
const acceptance = test.filter((t) => t.accepted).length / test.length;
console.log(
  `alpha ${alpha}: alarm level ${1000 / alpha}; calibrated coverage ${reference.coverage.toFixed(3)}, ` +
    `test split acceptance ${acceptance.toFixed(3)} (${test.length} texts)`,
);

/** Texts until the first alarm of a fresh monitor on an exchangeable stream. */
function runLengths(source: (random: () => number) => { reference: DriftReference; next: () => number }): number[] {
  const lengths: number[] = [];
  for (let s = 0; s < streams; s++) {
    const random = rng(90_000 + s);
    const { reference, next } = source(random);
    const monitor = new DriftMonitor(reference, alpha, random);
    let n = 1;
    while (!monitor.observe(next(), true)) n++;
    lengths.push(n);
  }
  return lengths.sort((a, b) => a - b);
}

const row = (cells: Array<string | number>): string => `| ${cells.join(' | ')} |`;
console.log('\n' + row(['exchangeable stream', 'mean run length', '5th percentile', 'median']));
console.log(row(['---', '---', '---', '---']));
for (const [name, source] of [
  [
    'uniform p-values (a fresh reference of 2,000 scores each)',
    (random: () => number) => ({
      reference: { counts: driftCounts(Array.from({ length: 2000 }, random)), coverage: 0.586, id: 'u' },
      next: random,
    }),
  ],
  [
    'the test split, reshuffled and repeated',
    (random: () => number) => {
      const next = passes(test, random);
      return { reference, next: () => next().score };
    },
  ],
] as const) {
  const lengths = runLengths(source);
  const mean = lengths.reduce((a, b) => a + b, 0) / lengths.length;
  console.log(row([`${name}, ${streams} streams`, Math.round(mean), quantile(lengths, 0.05), quantile(lengths, 0.5)]));
}

const uptimeList = [0, 10_000, 50_000, 100_000];
// The same uptimes serve every shift: the monitors' states after that many texts with no alarm.
const afterUptime = new Map(uptimeList.map((u) => [u, uptimes(reference, alpha, test, u, streams, 100_000 + u)]));

/** Delays over `streams` streams after each uptime: share within `within`, median and 90th percentile. */
function delays(
  uptime: number,
  shifted: (random: () => number) => () => Served,
  within: number,
  seed: number,
): string[] {
  const { states, falseAlarms } = afterUptime.get(uptime) as ReturnType<typeof uptimes>;
  const found = states
    .map((state, i) => {
      const random = rng(seed + 500_000 + i);
      return delay(reference, alpha, state, shifted(random), random, 20_000) || Number.POSITIVE_INFINITY;
    })
    .sort((a, b) => a - b);
  const share = found.filter((d) => d <= within).length / found.length;
  return [
    uptime.toLocaleString('en-US'),
    `${falseAlarms}`,
    `${(100 * share).toFixed(1)}%`,
    `${quantile(found, 0.5)}`,
    `${quantile(found, 0.9)}`,
  ];
}

console.log(
  '\n' +
    row([
      'shift',
      'uptime (texts)',
      'streams that false-alarmed first',
      'alarmed within 3,000',
      'median delay',
      '90th pct',
    ]),
);
console.log(row(['---', '---', '---', '---', '---', '---']));
for (const target of [0.53, 0.56, 0.62, 0.65]) {
  for (const uptime of uptimeList) {
    const cells = delays(
      uptime,
      (random) => reweighted(test, target, random),
      3000,
      1_000_000 * (1 + uptimeList.indexOf(uptime)),
    );
    console.log(row([`acceptance ${acceptance.toFixed(2)} → ${target}`, ...cells]));
  }
}
for (const uptime of uptimeList) {
  const cells = delays(
    uptime,
    (random) => () => fortunes[Math.floor(random() * fortunes.length)] as Served,
    100,
    7_000_000 + uptime,
  );
  console.log(row(['fortunes (within 100)', ...cells]));
}
for (const uptime of uptimeList) {
  const cells = delays(
    uptime,
    (random) => {
      const next = passes(test, random);
      return () => (random() < 0.2 ? (held[Math.floor(random() * held.length)] as Served) : next());
    },
    3000,
    8_000_000 + uptime,
  );
  console.log(row(['a fifth from the held-out sections', ...cells]));
}
