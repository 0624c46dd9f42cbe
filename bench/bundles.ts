// Batch-1 latency of several bundles side by side, in one process, in interleaved rounds (this
// machine is noisy: ratios against the first bundle, measured in the same run, are the result).
// One text long enough to fill 128 tokens, one thread, `--batch` copies of it per call (1 by
// default), the classify path. An argument NAME=VALUE@DIR loads DIR with that engine switch set
// (switches are read per load), e.g. BERTGATE_INT8_GEMM=onednn@models/default-int8 beside
// models/default-int8 compares the int8 GEMMs on one bundle.
//
//   node scripts/dev-env.mjs node dist/bench/bundles.js BUNDLE_DIR... [--rounds 5] [--calls 20] [--batch 1]

import { parseArgs } from 'node:util';

import { Classifier } from '../lib/index.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    rounds: { type: 'string', default: '5' },
    calls: { type: 'string', default: '20' },
    threads: { type: 'string', default: '1' },
    batch: { type: 'string', default: '1' },
  },
});
if (positionals.length === 0) throw new Error('usage: bundles.js BUNDLE_DIR... [--rounds N] [--calls N]');
const rounds = Number(values.rounds);
const calls = Number(values.calls);
const text =
  'Fast, lightweight HTTP server with TLS and virtual hosts, reverse proxy, caching and load balancing. '.repeat(8);

const batch: string[] = Array.from({ length: Number(values.batch) }, () => text);

/** Loads `arg` (DIR, or NAME=VALUE@DIR: with that switch set for the load only). */
async function load(arg: string): Promise<Classifier> {
  const switched = /^([A-Z0-9_]+)=([^@]*)@(.+)$/.exec(arg);
  if (!switched) return Classifier.load(arg, { threads: Number(values.threads) });
  const [, name, value, dir] = switched as unknown as [string, string, string, string];
  const before = process.env[name];
  process.env[name] = value;
  try {
    return await Classifier.load(dir, { threads: Number(values.threads) });
  } finally {
    if (before === undefined) delete process.env[name];
    else process.env[name] = before;
  }
}

const classifiers = [];
for (const arg of positionals) classifiers.push(await load(arg));
try {
  for (const c of classifiers) for (let i = 0; i < 5; i++) await c.logits(batch); // warm-up
  const ms: number[][] = classifiers.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (const [k, c] of classifiers.entries()) {
      const start = process.hrtime.bigint();
      for (let i = 0; i < calls; i++) await c.logits(batch);
      ms[k]?.push(Number(process.hrtime.bigint() - start) / 1e6 / calls / batch.length);
    }
  }
  const median = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] as number;
  const base = median(ms[0] as number[]);
  console.log('| bundle | ms per text (median of rounds) | speed against the first |');
  console.log('| --- | --- | --- |');
  positionals.forEach((dir, k) => {
    const m = median(ms[k] as number[]);
    console.log(`| ${dir} | ${m.toFixed(2)} | ${(base / m).toFixed(2)}x |`);
  });
} finally {
  for (const c of classifiers) await c.close();
}
