// Leaks: 1,000 cycles of load, classify, close with the small fixture model. After a
// warm-up of 50 cycles, RSS, threads (/proc/self/task), open file descriptors
// (/proc/self/fd) and libuv's active resources are compared with the end of the run: threads,
// descriptors and resources must not grow at all, RSS by at most 5% (allocator noise).
//
//   node --expose-gc dist/bench/leaks.js --bundle DIR [--cycles N]   (scripts/bench.mjs leaks)

import { readdirSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { Classifier } from '../lib/index.js';

const { values } = parseArgs({
  options: {
    bundle: { type: 'string' },
    cycles: { type: 'string', default: '1000' },
    warmup: { type: 'string', default: '50' },
  },
});
if (!values.bundle) throw new Error('--bundle DIR is required');
const cycles = Number(values.cycles);
const warmup = Number(values.warmup);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc, so that collected handles are measured as collected');

interface Snapshot {
  rssMiB: number;
  threads: number;
  fds: number;
  resources: number;
}
async function snapshot(): Promise<Snapshot> {
  // Finalizers of closed handles run after a collection and a turn of the loop.
  gc?.();
  await new Promise((resolve) => setImmediate(resolve));
  gc?.();
  return {
    rssMiB: Math.round((process.memoryUsage().rss / 2 ** 20) * 10) / 10,
    threads: readdirSync('/proc/self/task').length,
    fds: readdirSync('/proc/self/fd').length,
    resources: process.getActiveResourcesInfo().length,
  };
}

const texts = ['a package manager for the command line', 'sound', 'library for parsing XML files quickly'];
const started = performance.now();
let atWarm: Snapshot | undefined;
const trail: Array<Snapshot & { cycle: number }> = [];
for (let i = 1; i <= cycles; i++) {
  const clf = await Classifier.load(values.bundle, { threads: 1 });
  const decisions = await clf.classify(texts);
  if (decisions.length !== texts.length) throw new Error('wrong number of decisions');
  await clf.close();
  if (i === warmup) atWarm = await snapshot();
  if (i % 100 === 0) trail.push({ cycle: i, ...(await snapshot()) });
}
const end = await snapshot();
if (!atWarm) throw new Error('--warmup must be below --cycles');
const rssGrowth = (end.rssMiB - atWarm.rssMiB) / atWarm.rssMiB;
const result = {
  cycles,
  seconds: Math.round((performance.now() - started) / 1000),
  afterWarmup: atWarm,
  end,
  rssGrowthPercent: Math.round(rssGrowth * 10_000) / 100,
  trail,
};
console.log(JSON.stringify(result, null, 2));
console.log(
  `| ${cycles} load/classify/close cycles | RSS ${atWarm.rssMiB} -> ${end.rssMiB} MiB (${result.rssGrowthPercent}%) | ` +
    `threads ${atWarm.threads} -> ${end.threads} | fds ${atWarm.fds} -> ${end.fds} | resources ${atWarm.resources} -> ${end.resources} |`,
);
const ok =
  end.threads <= atWarm.threads && end.fds <= atWarm.fds && end.resources <= atWarm.resources && rssGrowth <= 0.05;
console.log(ok ? 'leaks: PASS' : 'leaks: FAIL');
process.exitCode = ok ? 0 : 1;
