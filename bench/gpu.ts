// GPU speed on BERT-base geometry (bench/make_model.py bert-base), sequence length 128:
// (a) Python torch running the same TorchScript in a tight loop (bench/gpu_baseline.py);
// (b) bertgate's raw native infer, one batch at a time and two in flight (batch N+1 queued on
// the engine's stream while N runs); (c) classify() through the batcher at concurrency 512,
// with the CUDA defaults (float16, batches of 256, 32-token buckets) unless --dtype says;
// (d) onnxruntime-node with CUDA, where installable. Sequences/s, p50/p99, and the share of the
// matmul ceiling measured in the same run (22.35 GFLOP per sequence at length 128).
//
//   node dist/bench/gpu.js --bundle bench/models/bert-base [--dtype float16] [--batches 1,8,64,256]
//        [--iterations 30] [--concurrency 512] [--texts 20000]

import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';

import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { Classifier } from '../lib/index.js';
import { fullRows, loadHandle, randomIds } from './native.js';

const { values } = parseArgs({
  options: {
    bundle: { type: 'string' },
    dtype: { type: 'string', default: 'float16' },
    batches: { type: 'string', default: '1,8,64,256' },
    iterations: { type: 'string', default: '30' },
    concurrency: { type: 'string', default: '512' },
    texts: { type: 'string', default: '20000' },
  },
});
if (!values.bundle) throw new Error('--bundle DIR is required');
const bundle = values.bundle;
const dtype = values.dtype as 'float16' | 'bfloat16' | 'float32';
const batches = values.batches.split(',').map(Number);
const iterations = Number(values.iterations);
const GFLOP_PER_SEQUENCE = 22.35; // BERT-base, 128 tokens
const SEQ = 128;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}

const python = process.env['VIRTUAL_ENV'] ? join(process.env['VIRTUAL_ENV'], 'bin', 'python') : 'python3';
const { stdout } = await promisify(execFile)(
  python,
  [
    join(PACKAGE_ROOT, 'bench', 'gpu_baseline.py'),
    join(bundle, 'model.pt'),
    '--dtype',
    dtype,
    '--batches',
    values.batches,
    '--iterations',
    String(iterations),
  ],
  { maxBuffer: 1 << 20 },
);
const baseline = JSON.parse(stdout) as {
  forward: Record<string, { median_ms: number; p99_ms: number }>;
  matmul_tflops: number;
  device: string;
};

const rows: Array<{ path: string; batch: number | string; perS: number; p50: number; p99: number }> = [];
for (const batch of batches) {
  const f = baseline.forward[String(batch)] as { median_ms: number; p99_ms: number };
  rows.push({
    path: '(a) Python torch, same TorchScript',
    batch,
    perS: (batch * 1000) / f.median_ms,
    p50: f.median_ms,
    p99: f.p99_ms,
  });
}

// (b) raw infer: ids in, compact scores out (H2D, forward, fused kernel, D2H, sync).
const { handle, vocab } = await loadHandle(join(bundle, 'model.pt'), { device: 'cuda', dtype });
for (const batch of batches) {
  const request = { ...fullRows(randomIds(batch * SEQ, Math.min(vocab, 1000)), batch, SEQ), topK: 5 };
  for (let i = 0; i < 5; i++) await handle.infer(request);
  const times: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t0 = performance.now();
    await handle.infer(request);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const p50 = percentile(times, 0.5);
  rows.push({ path: '(b) bertgate infer', batch, perS: (batch * 1000) / p50, p50, p99: percentile(times, 0.99) });
  // Two in flight: throughput over the whole run (each call's latency includes the other's).
  const start = performance.now();
  const lanes = Array.from({ length: 2 }, async () => {
    for (let i = 0; i < iterations / 2; i++) await handle.infer(request);
  });
  await Promise.all(lanes);
  const perCall = (performance.now() - start) / (2 * Math.floor(iterations / 2));
  rows.push({ path: '(b) bertgate infer, 2 in flight', batch, perS: (batch * 1000) / perCall, p50: NaN, p99: NaN });
}
await handle.close();

// (c) classify() through the batcher: `concurrency` clients, one 128-token text per request.
{
  const clf = await Classifier.load(bundle, { device: 'cuda', dtype, maxQueue: 1_000_000 });
  const words = 'the package provides a command line tool for managing network services and data files'.split(' ');
  const text = (i: number): string => Array.from({ length: 200 }, (_, j) => words[(i + j) % words.length]).join(' ');
  const total = Number(values.texts);
  await Promise.all(Array.from({ length: 512 }, (_, i) => clf.classify(text(i)))); // warm-up
  let next = 0;
  const latencies: number[] = [];
  const start = performance.now();
  await Promise.all(
    Array.from({ length: Number(values.concurrency) }, async () => {
      while (next < total) {
        const t = text(next++);
        const t0 = performance.now();
        await clf.classify(t);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const elapsed = performance.now() - start;
  latencies.sort((a, b) => a - b);
  const stats = clf.stats();
  rows.push({
    path: `(c) classify(), batcher, ${values.concurrency} clients (batches ${JSON.stringify(stats.batchSizes).slice(0, 60)})`,
    batch: `≤${clf.info.batching.maxBatchSize}`,
    perS: (total * 1000) / elapsed,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
  });
  await clf.close();
}

console.log(
  `${baseline.device}; ${bundle}, ${dtype}, sequence length ${SEQ}; ` +
    `matmul ceiling ${baseline.matmul_tflops.toFixed(0)} TFLOP/s measured in this run\n`,
);
console.log('| path | batch | seq/s | p50 ms | p99 ms | TFLOP/s | of matmul ceiling |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  const tflops = (r.perS * GFLOP_PER_SEQUENCE) / 1000;
  console.log(
    `| ${r.path} | ${r.batch} | ${r.perS.toFixed(0)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${tflops.toFixed(1)} | ` +
      `${((tflops / baseline.matmul_tflops) * 100).toFixed(1)}% |`,
  );
}
console.log(
  '| (d) onnxruntime-node, CUDA | - | n/a | | | | |\n\n(d): the npm package carries CPU binaries only; its CUDA provider is fetched by a ' +
    'post-install script from outside npm, which neither the build machines nor the GPU machines can reach.',
);
for (const batch of batches) {
  const a = rows.find((r) => r.batch === batch && r.path.startsWith('(a)'));
  const b = rows.find((r) => r.batch === batch && r.path.startsWith('(b)'));
  if (a && b) console.log(`(b)/(a) at batch ${batch}: ${(b.perS / a.perS).toFixed(3)}`);
}
