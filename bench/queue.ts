// Texts per second through a BullMQ queue (bertgate/queue's worker, a redis-server of its own on
// loopback) against in-process classify() of the same texts, cut into the same chunks with the same
// number in flight, in interleaved rounds of one run. The producer and the worker share this
// process, as the in-process side does: the difference is the queue (Redis round trips, JSON of
// texts and decisions, locks).
//
//   node scripts/dev-env.mjs node dist/bench/queue.js [--bundle DIR] [--texts FILE.jsonl[.gz]]
//        [--n 2048] [--chunks 64,256] [--concurrency 2] [--rounds 3] [--threads N]

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { Queue } from 'bullmq';

import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { Classifier, DEFAULT_MODEL } from '../lib/index.js';
import { createWorker } from '../lib/queue.js';
import { readTexts } from './texts.js';

const { values } = parseArgs({
  options: {
    bundle: { type: 'string', default: DEFAULT_MODEL },
    texts: { type: 'string', default: join(PACKAGE_ROOT, 'data', 'debian', 'test.jsonl.gz') },
    n: { type: 'string', default: '2048' },
    chunks: { type: 'string', default: '64,256' },
    concurrency: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
    threads: { type: 'string' },
  },
});
const n = Number(values.n);
const concurrency = Number(values.concurrency);
const rounds = Number(values.rounds);
const all = await readTexts(values.texts);
const texts = Array.from({ length: n }, (_, i) => all[i % all.length] as string);

const port = await new Promise<number>((resolve) => {
  const server = createServer().listen(0, '127.0.0.1', () => {
    const { port } = server.address() as { port: number };
    server.close(() => resolve(port));
  });
});
const dir = await mkdtemp(join(tmpdir(), 'bertgate-bench-redis-'));
const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
await new Promise<void>((resolve) => {
  let out = '';
  redis.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    if (out.includes('Ready to accept connections')) resolve();
  });
});
const connection = { url: `redis://127.0.0.1:${port}` };

const classifier = await Classifier.load<string, string>(
  values.bundle,
  values.threads === undefined ? {} : { threads: Number(values.threads) },
);
const chunked = (size: number): string[][] =>
  Array.from({ length: Math.ceil(texts.length / size) }, (_, i) => texts.slice(i * size, (i + 1) * size));

/** In-process: the chunks, `concurrency` of them in flight at a time. */
async function inProcess(chunks: string[][]): Promise<number> {
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < chunks.length) await classifier.classify(chunks[next++] as string[]);
    }),
  );
  return (performance.now() - started) / 1000;
}

let queues = 0;
/** Through the queue: addBulk of the chunks, until the worker has completed every job. */
async function throughQueue(chunks: string[][]): Promise<number> {
  const queue = new Queue(`bench-${++queues}`, { connection });
  const worker = createWorker(classifier, { queue: queue.name, connection, concurrency });
  await worker.waitUntilReady();
  let completed = 0;
  const done = new Promise<void>((resolve, reject) => {
    worker.on('completed', () => {
      if (++completed === chunks.length) resolve();
    });
    worker.on('failed', (_job, error) => reject(error));
  });
  const started = performance.now();
  await queue.addBulk(chunks.map((chunk, i) => ({ name: `chunk-${i}`, data: { texts: chunk } })));
  await done;
  const seconds = (performance.now() - started) / 1000;
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  return seconds;
}

await classifier.classify(texts.slice(0, 64)); // warm-up: the first forward passes are slower
const cpu = cpus()[0]?.model ?? 'unknown CPU';
process.stdout.write(
  `${texts.length} texts, ${cpus().length} CPUs (${cpu}), ${classifier.info.threads} threads, ` +
    `concurrency ${concurrency}, best of ${rounds} interleaved rounds\n\n` +
    '| chunk | in-process classify() texts/s | through the queue texts/s | queue overhead |\n' +
    '| ---: | ---: | ---: | ---: |\n',
);
for (const size of values.chunks.split(',').map(Number)) {
  const chunks = chunked(size);
  let best = { direct: Infinity, queued: Infinity };
  for (let round = 0; round < rounds; round++) {
    best = {
      direct: Math.min(best.direct, await inProcess(chunks)),
      queued: Math.min(best.queued, await throughQueue(chunks)),
    };
  }
  const direct = texts.length / best.direct;
  const queued = texts.length / best.queued;
  process.stdout.write(
    `| ${size} | ${direct.toFixed(0)} | ${queued.toFixed(0)} | ${(100 * (1 - queued / direct)).toFixed(1)}% |\n`,
  );
}
await classifier.close();
redis.kill('SIGTERM');
await once(redis, 'exit');
await rm(dir, { recursive: true, force: true });
