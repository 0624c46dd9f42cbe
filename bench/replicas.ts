// Replicas on one CPU: the same cores spent as 1 replica × N threads (one forward pass at a time,
// each split over N threads), N replicas × 1 thread (N passes at once on one shared copy of the
// weights), and 1 × 1 (the baseline, the first configuration). On a GPU host (scripts/gpu-check.sh)
// the same run compares cuda:0 with cuda:* (a replica on every device) and 2 replicas on one
// device (two streams) with one. Real texts (Debian package descriptions), closed-loop
// clients sending one text per call (the test split of data/debian) through Classifier.classify, so the batcher forms the batches.
// Each configuration runs in a child process of its own (RSS is a process's), rounds interleaved
// so that the machine's drift lands on every configuration alike; the table gives the median of
// the rounds and ratios against 1 × 1 from the same run.
//
//   node scripts/dev-env.mjs node dist/bench/replicas.js --bundle DIR --texts FILE.jsonl[.gz]
//        [--configs cpu:1x1,cpu:1x2,cpu:2x1] [--requests N] [--concurrency C] [--rounds R]
// A configuration is DEVICE:REPLICASxTHREADS (DEVICE as the device option takes it: cpu, cuda:0,
// cuda:*); the first is the baseline of the ratios.

import { execFile } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';

import { Classifier } from '../lib/index.js';
import type { Device } from '../lib/options.js';
import { drive, type Run } from './drive.js';
import { readTexts } from './texts.js';

const { values } = parseArgs({
  options: {
    bundle: { type: 'string' },
    texts: { type: 'string' },
    configs: {
      type: 'string',
      default: `cpu:1x1,cpu:1x${availableParallelism()},cpu:${availableParallelism()}x1`,
    },
    requests: { type: 'string', default: '1500' },
    concurrency: { type: 'string', default: '64' },
    rounds: { type: 'string', default: '3' },
    child: { type: 'string' },
  },
});
if (!values.bundle || !values.texts) throw new Error('--bundle DIR and --texts FILE.jsonl are required');

interface Result extends Run {
  /** RSS once loaded (before any text), once warmed up, and at the end of the run (MiB). */
  rssLoad: number;
  rssLoaded: number;
  rssEnd: number;
  /** Texts each replica ran: a replica that took none would make the configuration a lie. */
  perReplica: number[];
}

function parseConfig(config: string): { device: string; replicas: number; threads: number } {
  const match = /^(cpu|cuda:(?:\d+|\*)):(\d+)x(\d+)$/.exec(config);
  if (!match) throw new Error(`a configuration is DEVICE:REPLICASxTHREADS (cpu:2x1, cuda:*:1x4), got ${config}`);
  return { device: match[1] as string, replicas: Number(match[2]), threads: Number(match[3]) };
}

const mib = (bytes: number): number => bytes / 2 ** 20;

/** One configuration, in this process: load, warm up, drive, report as one JSON line. */
async function child(config: string): Promise<void> {
  const { device, replicas, threads } = parseConfig(config);
  const file = values.texts as string;
  const texts = await readTexts(file);
  const requests = Number(values.requests);
  const concurrency = Number(values.concurrency);
  const clf = await Classifier.load<string, string>(values.bundle, {
    device: device as Device,
    replicas,
    threads,
    maxQueue: 100_000,
  });
  const rssLoad = mib(process.memoryUsage().rss);
  await clf.classify(texts.slice(0, 128)); // warm-up: every replica, every kernel
  const rssLoaded = mib(process.memoryUsage().rss);
  const before = clf.stats().replicas.map((r) => r.texts);

  const run = await drive(texts, requests, concurrency, (text) => clf.classify(text));
  const perReplica = clf.stats().replicas.map((r, i) => r.texts - (before[i] ?? 0));
  const result: Result = {
    ...run,
    rssLoad,
    rssLoaded,
    rssEnd: mib(process.memoryUsage().rss),
    perReplica,
  };
  await clf.close();
  process.stdout.write(JSON.stringify(result) + '\n');
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};

async function main(): Promise<void> {
  const configs = values.configs.split(',');
  configs.forEach(parseConfig);
  const rounds = Number(values.rounds);
  const self = fileURLToPath(import.meta.url);
  const runs = new Map<string, Result[]>(configs.map((c) => [c, []]));
  for (let round = 0; round < rounds; round++) {
    for (const config of configs) {
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [self, ...process.argv.slice(2).filter((a) => !a.startsWith('--child')), `--child=${config}`],
        { maxBuffer: 1 << 20 },
      );
      const result = JSON.parse(stdout.trim().split('\n').at(-1) as string) as Result;
      runs.get(config)?.push(result);
      process.stderr.write(
        `round ${round + 1} ${config}: ${result.textsPerS.toFixed(1)} texts/s, p50 ${result.p50.toFixed(0)} ms, ` +
          `p99 ${result.p99.toFixed(0)} ms, RSS ${result.rssLoad.toFixed(0)}/${result.rssLoaded.toFixed(0)} MiB, per replica ${result.perReplica.join('/')}\n`,
      );
    }
  }
  const summary = configs.map((config) => {
    const rs = runs.get(config) as Result[];
    return {
      config,
      textsPerS: median(rs.map((r) => r.textsPerS)),
      p50: median(rs.map((r) => r.p50)),
      p99: median(rs.map((r) => r.p99)),
      worstGapMs: Math.max(...rs.map((r) => r.worstGapMs)),
      rssLoad: median(rs.map((r) => r.rssLoad)),
      rssLoaded: median(rs.map((r) => r.rssLoaded)),
      rssEnd: median(rs.map((r) => r.rssEnd)),
      perReplica: (rs.at(-1) as Result).perReplica,
    };
  });
  const base = summary[0] as (typeof summary)[number];
  const delta = (x: number): string => `${x >= 0 ? '+' : ''}${x.toFixed(0)}`;
  console.log(
    `| device: replicas × threads | texts/s | vs ${base.config} | p50 ms | p99 ms | worst loop gap ms | ` +
      `RSS loaded MiB (vs ${base.config}) | RSS warmed up MiB (vs ${base.config}) | texts per replica (last round) |`,
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const s of summary) {
    console.log(
      `| ${s.config} | ${s.textsPerS.toFixed(1)} | ${(s.textsPerS / base.textsPerS).toFixed(2)}× | ${s.p50.toFixed(0)} | ` +
        `${s.p99.toFixed(0)} | ${s.worstGapMs.toFixed(0)} | ${s.rssLoad.toFixed(0)} (${delta(s.rssLoad - base.rssLoad)}) | ` +
        `${s.rssLoaded.toFixed(0)} (${delta(s.rssLoaded - base.rssLoaded)}) | ${s.perReplica.join(' / ')} |`,
    );
  }
}

if (values.child) await child(values.child);
else await main();
