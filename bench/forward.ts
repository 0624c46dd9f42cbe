// Forward-pass speed at fixed batch sizes, CPU: bertgate's native infer (token ids in,
// scores out) and its whole logits() path (tokenizing included), beside the baseline of
// Python torch running the same TorchScript file, frozen, with the same ids and threads,
// measured in the same run. Ratios are bertgate time / baseline time (below 1 is faster).
//
//   node scripts/dev-env.mjs node dist/bench/forward.js --bundle DIR [--threads N]
//        [--iterations N] [--batches 1,32]

import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';

import { openRuntime } from '../lib/runtime/open.js';
import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { Classifier } from '../lib/index.js';
import { fullRows, loadHandle, randomIds } from './native.js';

const { values } = parseArgs({
  options: {
    bundle: { type: 'string' },
    threads: { type: 'string', default: String(Math.max(1, availableParallelism() - 1)) },
    iterations: { type: 'string', default: '10' },
    batches: { type: 'string', default: '1,32' },
    // Tokens per row; default: the bundle's maximum length.
    seq: { type: 'string' },
  },
});
if (!values.bundle) throw new Error('--bundle DIR is required');
const bundleDir = values.bundle;
const threads = Number(values.threads);
const iterations = Number(values.iterations);
const batches = values.batches.split(',').map(Number);
const maxBatch = Math.max(...batches);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 3; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  return median(times);
}

const runtimeStart = performance.now();
await openRuntime(); // timed apart: libtorch is preloaded once per process
const runtimeMs = performance.now() - runtimeStart;

const loadStart = performance.now();
const classifier = await Classifier.load(bundleDir, { threads, maxBatchSize: maxBatch });
const loadMs = performance.now() - loadStart;
const { model } = classifier.info;
const seqLen = values.seq ? Number(values.seq) : classifier.info.maxLength;

// The same ids for both sides: random, full rows of the bundle's maximum length.
const ids = randomIds(maxBatch * seqLen, model.vocabRows);
const dir = await mkdtemp(join(tmpdir(), 'bertgate-bench-'));
const idsFile = join(dir, 'ids.bin');
await writeFile(idsFile, ids);

const python = process.env['VIRTUAL_ENV'] ? join(process.env['VIRTUAL_ENV'], 'bin', 'python') : 'python3';
const { stdout } = await promisify(execFile)(
  python,
  [
    join(PACKAGE_ROOT, 'bench', 'torch_baseline.py'),
    join(bundleDir, 'model.pt'),
    idsFile,
    '--threads',
    String(threads),
    '--iterations',
    String(iterations),
    '--batches',
    batches.join(','),
    '--seq-len',
    String(seqLen),
  ],
  { maxBuffer: 1 << 20 },
);
const baseline = JSON.parse(stdout) as { load_ms: number; forward_ms: Record<string, number>; torch: string };
await rm(dir, { recursive: true, force: true });

const { handle } = await loadHandle(join(bundleDir, 'model.pt'), { threads });
// Texts long enough to be truncated to exactly seqLen tokens, so logits() runs the same shapes.
const words = 'the package provides a command line tool for managing network services and data files'.split(' ');
const text = (i: number): string =>
  Array.from({ length: seqLen * 2 }, (_, j) => words[(i + j) % words.length]).join(' ');

const rows: string[] = [];
for (const batch of batches) {
  const request = { ...fullRows(ids, batch, seqLen), wantLogits: true };
  const texts = Array.from({ length: batch }, (_, i) => text(i));
  const infer = await timeIt(() => handle.infer(request));
  // Texts are cut to the bundle's maximum length, so logits() is comparable only at that length.
  const logits = seqLen === classifier.info.maxLength ? await timeIt(() => classifier.logits(texts)) : Number.NaN;
  const base = baseline.forward_ms[String(batch)] as number;
  const seqPerS = (ms: number): string => ((batch * 1000) / ms).toFixed(1);
  rows.push(
    `| ${batch} x ${seqLen} | ${base.toFixed(2)} (${seqPerS(base)}/s) | ${infer.toFixed(2)} (${seqPerS(infer)}/s) | ` +
      `${(infer / base).toFixed(3)} | ${logits.toFixed(2)} (${seqPerS(logits)}/s) | ${(logits / base).toFixed(3)} |`,
  );
}
await handle.close();
await classifier.close();

const cpu = cpus()[0]?.model ?? 'unknown CPU';
console.log(
  `bundle ${bundleDir}: ${model.numLabels} labels, ${model.vocabRows} x ${model.positionRows} embeddings; ` +
    `${threads} intra-op thread(s); ${cpu}, ${availableParallelism()} CPUs; torch ${baseline.torch}; median of ${iterations}\n`,
);
console.log(
  `| load | python torch.jit.load+freeze ${baseline.load_ms.toFixed(0)} ms | bertgate Classifier.load ${loadMs.toFixed(0)} ms ` +
    `(+ libtorch preload ${runtimeMs.toFixed(0)} ms, once per process) |\n`,
);
console.log(
  '| batch x tokens | python torch ms (seq/s) | bertgate infer ms (seq/s) | ratio | bertgate logits() ms (seq/s) | ratio |',
);
console.log('| --- | --- | --- | --- | --- | --- |');
console.log(rows.join('\n'));
