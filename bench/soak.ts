// Soak: a million classifications through the batcher, from 64 concurrent callers sending one
// text each (a server's pattern), with the small fixture model; RSS and the JS heap sampled
// every 10,000. Growth after warm-up (the first 10%) must stay within 5%: the median of the last
// ten samples against the median of the first ten after warm-up (single samples swing with the
// allocator by 10-15% either way; a leak moves the median). The largest sample and the slope of
// a straight-line fit are reported beside it. The model must also answer the same at the end as
// at the start: 16 probe texts, each alone (so no batch-mate moves it), give the same logits bit
// for bit before and after the run (a long-lived int8 bundle's weights must not drift). Not a
// speed test: throughput is printed only to say how long the run took.
//
//   node scripts/bench.mjs soak [--texts N] [--concurrency N]

import { parseArgs } from 'node:util';

import { Classifier } from '../lib/index.js';

const { values } = parseArgs({
  options: {
    bundle: { type: 'string' },
    texts: { type: 'string', default: '1000000' },
    concurrency: { type: 'string', default: '64' },
    every: { type: 'string', default: '10000' },
  },
});
if (!values.bundle) throw new Error('--bundle DIR is required');
const total = Number(values.texts);
const concurrency = Number(values.concurrency);
const every = Number(values.every);
const warmup = Math.floor(total / 10);

// 1,000 texts of 1 to 60 words, so batches vary in shape as they do in service.
const words = 'package library server network sound game editor data file tool admin text graphics kernel'.split(' ');
let seed = 7;
const random = (): number => (seed = (seed * 48271) % 2147483647) / 2147483647;
const pool = Array.from({ length: 1000 }, () =>
  Array.from({ length: 1 + Math.floor(random() * 60) }, () => words[Math.floor(random() * words.length)]).join(' '),
);

interface Sample {
  done: number;
  rssMiB: number;
  heapMiB: number;
  externalMiB: number;
}
const mib = (bytes: number): number => Math.round((bytes / 2 ** 20) * 10) / 10;
const samples: Sample[] = [];
const sample = (done: number): void => {
  const m = process.memoryUsage();
  samples.push({ done, rssMiB: mib(m.rss), heapMiB: mib(m.heapUsed), externalMiB: mib(m.external) });
};

const clf = await Classifier.load(values.bundle, { threads: 1 });
const probes = pool.slice(0, 16);
const probeLogits = async (): Promise<Float32Array[]> => {
  const out: Float32Array[] = [];
  for (const text of probes) out.push(Float32Array.from(await clf.logits(text)));
  return out;
};
const before = await probeLogits();
const started = performance.now();
let next = 0;
let done = 0;
let failures = 0;
sample(0);
async function caller(): Promise<void> {
  while (next < total) {
    const text = pool[next++ % pool.length] as string;
    try {
      await clf.classify(text);
    } catch {
      failures++;
    }
    if (++done % every === 0) sample(done);
  }
}
await Promise.all(Array.from({ length: concurrency }, caller));
const seconds = (performance.now() - started) / 1000;
const after = await probeLogits();
const probesChanged = before.filter((row, i) => !row.every((v, j) => Object.is(v, after[i]?.[j]))).length;
const stats = clf.stats();
await clf.close();

const median = (xs: number[]): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  const m = sorted.length >> 1;
  return sorted.length % 2 ? (sorted[m] as number) : ((sorted[m - 1] as number) + (sorted[m] as number)) / 2;
};
const warmed = samples.filter((s) => s.done >= warmup);
const round = (x: number, places = 2): number => Math.round(x * 10 ** places) / 10 ** places;
const first = round(median(warmed.slice(0, 10).map((s) => s.rssMiB)), 1);
const last = round(median(warmed.slice(-10).map((s) => s.rssMiB)), 1);
const maxRss = Math.max(...warmed.map((s) => s.rssMiB));
const growth = (last - first) / first;
// Least-squares slope of RSS against classifications done, after warm-up: MiB per 100,000.
const mx = warmed.reduce((a, s) => a + s.done, 0) / warmed.length;
const my = warmed.reduce((a, s) => a + s.rssMiB, 0) / warmed.length;
const slope =
  warmed.reduce((a, s) => a + (s.done - mx) * (s.rssMiB - my), 0) / warmed.reduce((a, s) => a + (s.done - mx) ** 2, 0);
const result = {
  texts: total,
  failures,
  probesChanged,
  seconds: Math.round(seconds),
  textsPerSecond: Math.round(total / seconds),
  batches: stats.batches,
  rssMiB: { start: samples[0]?.rssMiB, firstAfterWarmup: first, last, maxAfterWarmup: maxRss },
  heapMiB: { start: samples[0]?.heapMiB, end: samples[samples.length - 1]?.heapMiB },
  growthAfterWarmupPercent: round(growth * 100),
  maxAboveFirstPercent: round(((maxRss - first) / first) * 100),
  slopeMiBPer100k: round(slope * 100_000),
  rssTrail: samples.map((s) => s.rssMiB),
};
console.log(JSON.stringify(result));
console.log(
  `| ${total.toLocaleString('en')} classifications | RSS median after warm-up ${first} MiB -> last ${last} MiB ` +
    `(${result.growthAfterWarmupPercent}%; largest sample +${result.maxAboveFirstPercent}%; slope ` +
    `${result.slopeMiBPer100k} MiB per 100k) | failures ${failures} | probes changed ${probesChanged} of ` +
    `${probes.length} | ${result.seconds} s |`,
);
const ok = failures === 0 && growth <= 0.05 && probesChanged === 0;
console.log(ok ? 'soak: PASS (growth after warm-up <= 5%, probes unchanged)' : 'soak: FAIL');
process.exitCode = ok ? 0 : 1;
