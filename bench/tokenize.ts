// Tokenizer throughput: bertgate's tokenizer (HF's Rust core through npm `tokenizers`, on
// the libuv pool, ids copied out to JS) against Python `tokenizers` encode_batch of the same
// texts, same chunks, same truncation and thread count, measured in the same run.
//
//   node scripts/dev-env.mjs node dist/bench/tokenize.js --bundle DIR --texts FILE.jsonl [--chunk 256] [--rounds 5]

import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';

import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { readBundle } from '../lib/bundle.js';
import { TextTokenizer } from '../lib/tokenizer.js';

const { values } = parseArgs({
  options: {
    bundle: { type: 'string' },
    texts: { type: 'string' },
    chunk: { type: 'string', default: '256' },
    rounds: { type: 'string', default: '5' },
  },
});
if (!values.bundle || !values.texts) throw new Error('--bundle DIR and --texts FILE.jsonl are required');
const chunk = Number(values.chunk);
const rounds = Number(values.rounds);
const texts = (await readFile(values.texts, 'utf8'))
  .trim()
  .split('\n')
  .map((line) => (JSON.parse(line) as { text: string }).text);
const bundle = await readBundle(values.bundle);
const tokenizer = await TextTokenizer.load(bundle.tokenizerPath, {
  maxLength: bundle.maxLength,
  strategy: 'longest_first',
  side: 'right',
  padToMultipleOf: 1,
});

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1] as number;
}

async function rate(run: () => Promise<unknown>): Promise<number> {
  const rates: number[] = [];
  for (let r = 0; r <= rounds; r++) {
    const start = performance.now();
    await run();
    if (r > 0) rates.push((texts.length * 1000) / (performance.now() - start));
  }
  return median(rates);
}

const chunked = await rate(async () => {
  for (let i = 0; i < texts.length; i += chunk) await tokenizer.encode(texts.slice(i, i + chunk));
});
// As `serve` sees them: many concurrent single-text calls.
const single = await rate(async () => {
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next < texts.length) await tokenizer.encode([texts[next++] as string]);
    }),
  );
});

const dir = await mkdtemp(join(tmpdir(), 'bertgate-tok-'));
await writeFile(join(dir, 'texts.json'), JSON.stringify(texts));
const python = process.env['VIRTUAL_ENV'] ? join(process.env['VIRTUAL_ENV'], 'bin', 'python') : 'python3';
const baseline = async (rayon: string | undefined): Promise<number> => {
  // Python's own defaults, whatever bertgate set for itself in this process.
  const env = { ...process.env };
  delete env['TOKENIZERS_PARALLELISM'];
  if (rayon === undefined) delete env['RAYON_NUM_THREADS'];
  else env['RAYON_NUM_THREADS'] = rayon;
  const { stdout } = await promisify(execFile)(
    python,
    [
      join(PACKAGE_ROOT, 'bench', 'tokenize_baseline.py'),
      bundle.tokenizerPath,
      join(dir, 'texts.json'),
      '--max-length',
      String(bundle.maxLength),
      '--chunk',
      String(chunk),
      '--rounds',
      String(rounds),
    ],
    { env },
  );
  return (JSON.parse(stdout) as { texts_per_s: number }).texts_per_s;
};
const python1 = await baseline('1');
const pythonAll = await baseline(undefined);
await rm(dir, { recursive: true, force: true });

const parallelism = `TOKENIZERS_PARALLELISM=${process.env['TOKENIZERS_PARALLELISM']}`;
console.log(
  `${texts.length} texts from ${values.texts}, ${bundle.tokenizerPath}, truncation to ${bundle.maxLength}; ` +
    `${cpus()[0]?.model}, ${availableParallelism()} CPUs; bertgate ${parallelism}; median of ${rounds}\n`,
);
console.log('| encoder | texts/s | bertgate chunks of ' + chunk + ' / this |');
console.log('| --- | --- | --- |');
console.log(`| bertgate, chunks of ${chunk} | ${chunked.toFixed(0)} | 1.00 |`);
console.log(`| bertgate, 64 concurrent single-text calls | ${single.toFixed(0)} | ${(chunked / single).toFixed(2)} |`);
console.log(`| Python tokenizers encode_batch, 1 thread | ${python1.toFixed(0)} | ${(chunked / python1).toFixed(2)} |`);
console.log(
  `| Python tokenizers encode_batch, all threads | ${pythonAll.toFixed(0)} | ${(chunked / pythonAll).toFixed(2)} |`,
);
