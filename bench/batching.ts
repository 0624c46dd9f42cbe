// Throughput and latency of many concurrent single-text requests, CPU, real texts (Debian
// package descriptions): (a) naive, one forward pass per request; (b) the batcher, through
// Classifier.classify; (c) `bertgate serve` under autocannon from a second process over
// loopback. Then padding, FIFO against length-aware batch forming. All in one run.
//
//   node scripts/dev-env.mjs node dist/bench/batching.js --bundle DIR --texts FILE.jsonl
//        [--requests N] [--concurrency 1,16,64,256] [--seconds S] [--threads N]

import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';

import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { Classifier } from '../lib/index.js';
import { TextTokenizer } from '../lib/tokenizer.js';
import { drive, type Run } from './drive.js';
import { loadHandle } from './native.js';

const { values } = parseArgs({
  options: {
    bundle: { type: 'string' },
    texts: { type: 'string' },
    requests: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '1,16,64,256' },
    seconds: { type: 'string', default: '8' },
    threads: { type: 'string', default: String(Math.max(1, availableParallelism() - 1)) },
    // 'full' (short and long description) or 'short' (the one-line summary only).
    field: { type: 'string', default: 'full' },
  },
});
if (!values.bundle || !values.texts) throw new Error('--bundle DIR and --texts FILE.jsonl are required');
const bundleDir = values.bundle;
const requests = Number(values.requests);
const levels = values.concurrency.split(',').map(Number);
const threads = Number(values.threads);
const texts = (await readFile(values.texts, 'utf8'))
  .trim()
  .split('\n')
  .map((line) => (JSON.parse(line) as { text: string }).text)
  .map((text) => (values.field === 'short' ? (text.split('\n')[0] as string) : text));

const clf = await Classifier.load(bundleDir, { threads, maxQueue: 100_000 });
const { maxLength } = clf.info;

// (a) naive: tokenize one text, one forward pass, in the order requests arrive.
const tokenizer = await TextTokenizer.load(join(bundleDir, 'tokenizer.json'), {
  maxLength,
  strategy: 'longest_first',
  side: 'right',
  padToMultipleOf: 1,
});
const { handle } = await loadHandle(join(bundleDir, 'model.pt'), { threads });
const naive = async (text: string): Promise<unknown> => {
  const batch = tokenizer.pad(await tokenizer.encode([text]));
  return handle.infer({
    ...batch,
    temperature: 1,
    topK: 1,
    wantLogits: false,
    wantLogProbs: false,
    wantFeatures: false,
  });
};
for (let i = 0; i < 20; i++) await naive(texts[i] as string); // warm-up, both paths
await Promise.all(texts.slice(0, 64).map((t) => clf.classify(t)));

const rows: string[] = [];
const fmt = (r: Run): string =>
  `${r.textsPerS.toFixed(0)} | ${r.p50.toFixed(1)} / ${r.p99.toFixed(1)} | ${r.worstGapMs.toFixed(0)}`;
for (const c of levels) {
  const a = await drive(texts, requests, c, naive);
  const b = await drive(texts, requests, c, (t) => clf.classify(t));
  rows.push(`| ${c} | ${fmt(a)} | ${fmt(b)} | ${(b.textsPerS / a.textsPerS).toFixed(2)}x |`);
}
await handle.close();
const batchStats = clf.stats();
await clf.close();

// Padding: the same burst of texts, FIFO against length-aware.
const padding: string[] = [];
for (const lengthAware of [false, true]) {
  const c = await Classifier.load(bundleDir, { threads, maxQueue: 100_000, lengthAware });
  await drive(texts, requests, 256, (t) => c.classify(t));
  const s = c.stats();
  padding.push(
    `| ${lengthAware ? 'length-aware' : 'FIFO'} | ${s.batches} | ${s.realTokens} | ${s.paddedTokens} | ` +
      `${s.paddedTokens - s.realTokens} | ${(s.paddingRatio * 100).toFixed(1)}% |`,
  );
  await c.close();
}

// (c) the HTTP server under autocannon, from a second process.
const served: string[] = [];
const server = spawn(
  process.execPath,
  [
    join(PACKAGE_ROOT, 'dist', 'lib', 'cli', 'main.js'),
    'serve',
    '--model',
    bundleDir,
    '--port',
    '0',
    '--threads',
    String(threads),
    '--max-queue',
    '100000',
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
let out = '';
server.stdout.on('data', (d: Buffer) => (out += d.toString()));
while (!/listening on (\S+)/.test(out)) await new Promise((r) => setTimeout(r, 20));
const url = (/listening on (\S+)/.exec(out) as RegExpExecArray)[1] as string;
for (const c of levels) {
  const { stdout } = await promisify(execFile)(process.execPath, [
    join(PACKAGE_ROOT, 'dist', 'bench', 'load-client.js'),
    url,
    String(c),
    values.seconds,
    values.texts,
    values.field,
  ]);
  const r = JSON.parse(stdout) as { rps: number; p50: number; p99: number; non2xx: number; errors: number };
  served.push(`| ${c} | ${r.rps.toFixed(0)} | ${r.p50} / ${r.p99} | ${r.non2xx + r.errors} |`);
}
server.kill('SIGTERM');
await once(server, 'exit');

const info = clf.info;
console.log(
  `bundle ${bundleDir}: ${info.model.numLabels} labels, max length ${maxLength}; ${threads} intra-op thread(s); ` +
    `${cpus()[0]?.model}, ${availableParallelism()} CPUs; ${texts.length} texts (${values.field}) from ${values.texts}; ` +
    `${requests} single-text requests per cell; batcher maxBatchSize ${info.batching.maxBatchSize}, ` +
    `maxDelayMs ${info.batching.maxDelayMs}, ${info.batching.batchesInFlight} batches in flight\n`,
);
console.log(
  '| concurrency | (a) naive texts/s | p50 / p99 ms | worst loop gap ms | (b) batcher texts/s | p50 / p99 ms | worst loop gap ms | (b) / (a) |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
console.log(rows.join('\n'));
console.log(`\nbatch sizes over all (b) runs: ${JSON.stringify(batchStats.batchSizes)}\n`);
console.log('| forming | batches | real tokens | padded tokens | padding tokens | padding share |');
console.log('| --- | --- | --- | --- | --- | --- |');
console.log(padding.join('\n'));
console.log(
  `\n(c) bertgate serve, autocannon in a second process, ${values.seconds} s per row, one text per request\n`,
);
console.log('| connections | requests/s | p50 / p99 ms | errors or non-2xx |');
console.log('| --- | --- | --- | --- |');
console.log(served.join('\n'));
