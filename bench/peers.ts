// bertgate against its peers on CPU, one run: the same model (TorchScript for bertgate, the
// Hugging Face directory for Python, ONNX for the Node peers), the same texts, truncation and
// intra-op threads. Texts/s and median latency per call, one text per call and 32 per call,
// plus the worst event-loop gap while each Node competitor ran, and how often each peer's
// top label agrees with bertgate's (a check that all ran the same model).
//
//   node scripts/dev-env.mjs node dist/bench/peers.js --bundle DIR --hf DIR --onnx DIR --texts FILE.jsonl
//        [--count 256] [--threads N]
// Peers come from bench/peers (npm install there with ONNXRUNTIME_NODE_INSTALL=skip).

import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs, promisify } from 'node:util';

import { PACKAGE_ROOT } from '../lib/binding.js';
import { Classifier } from '../lib/index.js';
import { TextTokenizer } from '../lib/tokenizer.js';
import { watchLoop } from './native.js';

const { values } = parseArgs({
  options: {
    bundle: { type: 'string' },
    hf: { type: 'string' },
    onnx: { type: 'string' },
    texts: { type: 'string' },
    count: { type: 'string', default: '256' },
    threads: { type: 'string', default: String(Math.max(1, availableParallelism() - 1)) },
  },
});
if (!values.bundle || !values.hf || !values.onnx || !values.texts) {
  throw new Error('--bundle, --hf, --onnx and --texts are required');
}
const { bundle, hf, onnx } = values as { bundle: string; hf: string; onnx: string };
const threads = Number(values.threads);
const texts = (await readFile(values.texts, 'utf8'))
  .trim()
  .split('\n')
  .slice(0, Number(values.count))
  .map((line) => (JSON.parse(line) as { text: string }).text);

// The few shapes used of the peers, declared here: bench/peers/node_modules is installed on
// demand, so the project must compile without their type declarations.
interface OrtTensor {
  data: unknown;
}
interface OrtModule {
  Tensor: new (type: 'int64', data: BigInt64Array, dims: number[]) => OrtTensor;
  InferenceSession: {
    create(
      path: string,
      options: { intraOpNumThreads: number; interOpNumThreads: number; graphOptimizationLevel: string },
    ): Promise<{ run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>; release(): Promise<void> }>;
  };
}
interface TransformersJs {
  env: { allowRemoteModels: boolean; localModelPath: string };
  pipeline(
    task: 'text-classification',
    model: string,
    options: { dtype: string; session_options: { intraOpNumThreads: number; interOpNumThreads: number } },
  ): Promise<(texts: string[]) => Promise<unknown>>;
}

interface Result {
  name: string;
  perS: Record<number, number>;
  p50: Record<number, number>;
  worstGap: number;
  labels: string[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1] as number;
}

/** Batch 1 and 32 over all texts; `call` returns the top label of each text it was given. */
async function measure(name: string, call: (batch: string[]) => Promise<string[]>): Promise<Result> {
  await call(texts.slice(0, 8)); // warm-up
  const result: Result = { name, perS: {}, p50: {}, worstGap: 0, labels: [] };
  const stopWatching = watchLoop();
  for (const batch of [1, 32]) {
    const calls: number[] = [];
    const start = performance.now();
    for (let i = 0; i < texts.length; i += batch) {
      const t0 = performance.now();
      const labels = await call(texts.slice(i, i + batch));
      calls.push(performance.now() - t0);
      if (batch === 1) result.labels.push(...labels);
    }
    result.perS[batch] = (texts.length * 1000) / (performance.now() - start);
    result.p50[batch] = median(calls);
  }
  result.worstGap = stopWatching();
  return result;
}

const results: Result[] = [];

// bertgate
{
  const clf = await Classifier.load(bundle, { threads });
  results.push(
    await measure('bertgate classify()', async (batch) =>
      (await clf.classify(batch)).map((d) => d.top[0]?.label as string),
    ),
  );
  await clf.close();
}

const peers = createRequire(join(PACKAGE_ROOT, 'bench', 'peers', 'package.json'));
const maxLength = (
  JSON.parse(await readFile(join(onnx, 'tokenizer_config.json'), 'utf8')) as { model_max_length: number }
).model_max_length;
const id2label = (JSON.parse(await readFile(join(onnx, 'config.json'), 'utf8')) as { id2label: Record<string, string> })
  .id2label;

// onnxruntime-node, fed by bertgate's tokenizer (the same ids), arg-max in JS.
{
  const ort = peers('onnxruntime-node') as OrtModule;
  const session = await ort.InferenceSession.create(join(onnx, 'onnx', 'model.onnx'), {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  });
  const tokenizer = await TextTokenizer.load(join(onnx, 'tokenizer.json'), {
    maxLength,
    strategy: 'longest_first',
    side: 'right',
    padToMultipleOf: 1,
  });
  results.push(
    await measure('onnxruntime-node', async (batch) => {
      const padded = tokenizer.pad(await tokenizer.encode(batch));
      const dims = [padded.rows, padded.seqLen];
      const tensor = (a: ArrayLike<number>) => new ort.Tensor('int64', BigInt64Array.from(Array.from(a, BigInt)), dims);
      const out = await session.run({
        input_ids: tensor(padded.ids),
        attention_mask: tensor(padded.mask),
        token_type_ids: tensor(padded.typeIds),
      });
      const logits = out['logits']?.data as Float32Array;
      const cols = logits.length / padded.rows;
      return Array.from({ length: padded.rows }, (_, r) => {
        const row = logits.subarray(r * cols, (r + 1) * cols);
        return id2label[String(row.indexOf(Math.max(...row)))] as string;
      });
    }),
  );
  await session.release();
}

// @huggingface/transformers (transformers.js): its own tokenizer and pipeline, over ORT.
{
  const tjs = (await import(peers.resolve('@huggingface/transformers'))) as TransformersJs;
  tjs.env.allowRemoteModels = false;
  tjs.env.localModelPath = dirname(onnx) + '/';
  const pipe = await tjs.pipeline('text-classification', onnx.split('/').pop() as string, {
    dtype: 'fp32',
    session_options: { intraOpNumThreads: threads, interOpNumThreads: 1 },
  });
  results.push(
    await measure('@huggingface/transformers', async (batch) => {
      const out = (await pipe(batch)) as Array<{ label: string }> | Array<Array<{ label: string }>>;
      return out.map((o) => (Array.isArray(o) ? (o[0]?.label as string) : o.label));
    }),
  );
}

// Python transformers pipeline, in its own process.
{
  const dir = await mkdtemp(join(tmpdir(), 'bertgate-peers-'));
  await writeFile(join(dir, 'texts.json'), JSON.stringify(texts));
  const python = process.env['VIRTUAL_ENV'] ? join(process.env['VIRTUAL_ENV'], 'bin', 'python') : 'python3';
  const { stdout } = await promisify(execFile)(
    python,
    [
      join(PACKAGE_ROOT, 'bench', 'pipeline_baseline.py'),
      hf,
      join(dir, 'texts.json'),
      '--threads',
      String(threads),
      '--max-length',
      String(maxLength),
    ],
    { maxBuffer: 16 << 20 },
  );
  await rm(dir, { recursive: true, force: true });
  const py = JSON.parse(stdout) as { runs: Record<string, { texts_per_s: number; p50_ms: number }>; labels: string[] };
  results.push({
    name: 'Python transformers pipeline',
    perS: { 1: py.runs['1']?.texts_per_s as number, 32: py.runs['32']?.texts_per_s as number },
    p50: { 1: py.runs['1']?.p50_ms as number, 32: py.runs['32']?.p50_ms as number },
    worstGap: Number.NaN,
    labels: py.labels,
  });
}

const ours = results[0] as Result;
console.log(
  `${texts.length} texts from ${values.texts}, truncated to ${maxLength} tokens; ${threads} intra-op thread(s); ` +
    `${cpus()[0]?.model}, ${availableParallelism()} CPUs\n`,
);
console.log(
  '| competitor | batch 1 texts/s | p50 ms | batch 32 texts/s | p50 ms | worst loop gap ms | bertgate / this, batch 1 | batch 32 | same top label |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of results) {
  const agree = r.labels.filter((l, i) => l === ours.labels[i]).length / ours.labels.length;
  console.log(
    `| ${r.name} | ${r.perS[1]?.toFixed(1)} | ${r.p50[1]?.toFixed(2)} | ${r.perS[32]?.toFixed(1)} | ${r.p50[32]?.toFixed(1)} | ` +
      `${Number.isNaN(r.worstGap) ? 'n/a' : r.worstGap.toFixed(0)} | ${((ours.perS[1] as number) / (r.perS[1] as number)).toFixed(2)} | ` +
      `${((ours.perS[32] as number) / (r.perS[32] as number)).toFixed(2)} | ${(agree * 100).toFixed(1)}% |`,
  );
}
