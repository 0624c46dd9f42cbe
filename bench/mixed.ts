// Mixed batches: resident memory over a long run of calls whose sizes change every time (1 to
// 250 texts, from several callers at once), the traffic that fragmented glibc's arenas without
// limit before the engine's CPU allocator (native/engine/cpu_allocator.h). RSS is sampled every
// `--every` texts; the run passes when RSS has levelled off: the median of the last five samples
// is within 5% of the median of the five around the halfway point. The allocator's own figures
// (stats().cpuCache) and the texts whose top label moved with their batch-mates are reported
// beside it. Not a speed test: the time is printed to compare runs of the same machine only.
//
//   node scripts/bench.mjs mixed [--bundle DIR] [--texts N] [--callers N] [--every N]
//   (BERTGATE_CPU_ALLOCATOR=system for libtorch's own allocator, to compare)

import { parseArgs } from 'node:util';

import { Classifier } from '../lib/index.js';
import { readTexts } from './texts.js';

const { values } = parseArgs({
  options: {
    bundle: { type: 'string' },
    data: { type: 'string' },
    texts: { type: 'string', default: '100000' },
    callers: { type: 'string', default: '4' },
    every: { type: 'string', default: '5000' },
  },
});
if (!values.bundle || !values.data) throw new Error('--bundle DIR and --data FILE.jsonl[.gz] are required');
const total = Number(values.texts);
const every = Number(values.every);
const pool = await readTexts(values.data);
// A busy server's call sizes, each caller walking them from its own place.
const SIZES = [1, 1, 3, 7, 16, 32, 33, 64, 100, 250];

const mib = (bytes: number): number => Math.round(bytes / 2 ** 20);
const clf = await Classifier.load<string, string>(values.bundle, { threads: 1 });
const rss: Array<{ done: number; rssMiB: number }> = [{ done: 0, rssMiB: mib(process.memoryUsage().rss) }];
const firstLabel = new Map<number, string>();
let moved = 0;
let failures = 0;
let next = 0;
let done = 0;
let nextSample = every;
const started = performance.now();

async function caller(seed: number): Promise<void> {
  for (let k = seed; done < total; k++) {
    const n = SIZES[(k * 7 + seed) % SIZES.length] as number;
    const ids = Array.from({ length: n }, (_, j) => (next + j) % pool.length);
    next += n;
    try {
      const decisions = await clf.classify(ids.map((i) => pool[i] as string));
      decisions.forEach((d, j) => {
        const id = ids[j] as number;
        const label = d.top[0]?.label as string;
        const first = firstLabel.get(id);
        if (first === undefined) firstLabel.set(id, label);
        else if (first !== label) moved++;
      });
    } catch {
      failures++;
    }
    done += n;
    if (done >= nextSample) {
      rss.push({ done, rssMiB: mib(process.memoryUsage().rss) });
      nextSample += every;
    }
  }
}
await Promise.all(Array.from({ length: Number(values.callers) }, (_, i) => caller(i)));
const seconds = (performance.now() - started) / 1000;
const stats = clf.stats();
await clf.close();

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] as number;
const half = rss.findIndex((s) => s.done >= total / 2);
const middle = median(rss.slice(Math.max(0, half - 2), half + 3).map((s) => s.rssMiB));
const last = median(rss.slice(-5).map((s) => s.rssMiB));
const growth = (last - middle) / middle;
const cache = stats.cpuCache;
const result = {
  bundle: values.bundle,
  allocator: cache?.installed ? 'cache' : 'system',
  texts: done,
  failures,
  seconds: Math.round(seconds),
  rssMiB: { loaded: rss[0]?.rssMiB, halfway: middle, last, max: Math.max(...rss.map((s) => s.rssMiB)) },
  secondHalfGrowthPercent: Math.round(growth * 1000) / 10,
  topLabelMovedWithBatchMates: moved,
  cpuCache: cache && {
    ...cache,
    liveMiB: mib(cache.liveBytes),
    peakLiveMiB: mib(cache.peakLiveBytes),
    cachedMiB: mib(cache.cachedBytes),
    limitMiB: mib(cache.cacheLimitBytes),
  },
  rssTrail: rss.map((s) => s.rssMiB),
};
console.log(JSON.stringify(result));
const ok = failures === 0 && growth <= 0.05;
console.log(ok ? 'mixed: PASS (RSS levelled off: second half within 5%)' : 'mixed: FAIL');
process.exitCode = ok ? 0 : 1;
