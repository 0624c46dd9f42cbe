// Runs a benchmark with its inputs prepared: Debian texts from the apt lists, the
// small-geometry bench model, and for `peers` its ONNX export and npm packages.
// Usage: node scripts/bench.mjs forward|batching|tokenize|peers|replicas|soak|leaks|queue|mixed [extra flags for the bench]
// (soak and leaks use the tests' small fixture model: run npm test, or scripts/setup.mjs, first;
// queue uses the default model, the Debian test split and a redis-server of its own; replicas
// the default model and the Debian test split; mixed the int8 default and the Debian test split)
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import { devEnv } from './dev-env.mjs';
import { ROOT, VENV_PYTHON } from './paths.mjs';
import { run } from './run.mjs';

const [name, ...extra] = process.argv.slice(2);

/** An int8 bench bundle of today's exporter (bertgate::linear_int8), not one left by an older one. */
function isCurrentInt8(dir) {
  if (!existsSync(join(dir, 'model.pt'))) return false;
  const manifest = JSON.parse(readFileSync(join(dir, 'bundle.json'), 'utf8'));
  return manifest.quantization?.op === 'bertgate::linear_int8';
}
const env = devEnv();
const inRoot = { cwd: ROOT, env };
const texts = join('bench', 'data', 'debian.jsonl');
const small = join('bench', 'models', 'small');

const ownInputs = ['soak', 'leaks', 'queue', 'replicas', 'mixed'].includes(name); // no bench texts file or bench model
if (!ownInputs && !existsSync(join(ROOT, texts)))
  run(VENV_PYTHON, ['-m', 'bertgate_export.debian', 'sample', texts, '--limit', '5000'], inRoot);
if (!ownInputs && !existsSync(join(ROOT, small, 'model.pt')))
  run(VENV_PYTHON, ['bench/make_model.py', small, 'small', '--max-length', '128'], inRoot);

const args = {
  forward: ['--bundle', small, '--batches', '1,4,16,32'],
  batching: ['--bundle', small, '--texts', texts],
  tokenize: ['--bundle', small, '--texts', texts],
  peers: [
    '--bundle',
    small,
    '--bundle-int8',
    `${small}-int8`,
    '--hf',
    `${small}-hf`,
    '--onnx',
    `${small}-onnx`,
    '--texts',
    texts,
  ],
  replicas: ['--bundle', join('models', 'default'), '--texts', join('data', 'debian', 'test.jsonl.gz')],
  soak: ['--bundle', join('.fixtures', 'labels7')],
  leaks: ['--bundle', join('.fixtures', 'labels7')],
  // Later flags win: --bundle models/default compares the float model.
  mixed: ['--bundle', join('models', 'default-int8'), '--data', join('data', 'debian', 'test.jsonl.gz')],
  queue: [],
}[name];
if (!args)
  throw new Error(
    'usage: node scripts/bench.mjs forward|batching|tokenize|peers|replicas|soak|leaks|queue|mixed [flags]',
  );

if (name === 'peers') {
  run(VENV_PYTHON, ['-m', 'pip', 'install', '-q', '-r', 'bench/requirements.txt'], inRoot);
  if (!existsSync(join(ROOT, `${small}-onnx`, 'onnx', 'model.onnx'))) {
    run(VENV_PYTHON, ['bench/export_onnx.py', `${small}-hf`, `${small}-onnx`, '128'], inRoot);
  }
  // The int8 competitors: the same weights quantized by each runtime's own tool.
  if (!existsSync(join(ROOT, `${small}-onnx`, 'onnx', 'model_quantized.onnx'))) {
    run(VENV_PYTHON, ['bench/quantize_onnx.py', `${small}-onnx`], inRoot);
  }
  if (!isCurrentInt8(join(ROOT, `${small}-int8`))) {
    rmSync(join(ROOT, `${small}-int8`), { recursive: true, force: true });
    const exporter = ['-m', 'bertgate_export', `${small}-hf`, `${small}-int8`, '--max-length', '128'];
    run(VENV_PYTHON, [...exporter, '--quantize', 'int8'], inRoot);
  }
  if (!existsSync(join(ROOT, 'bench', 'peers', 'node_modules'))) {
    // onnxruntime-node's post-install would fetch CUDA files from outside npm; its CPU binaries ship in the package.
    run('npm', ['install', '--no-audit', '--no-fund'], {
      cwd: join(ROOT, 'bench', 'peers'),
      env: { ...env, ONNXRUNTIME_NODE_INSTALL: 'skip' },
    });
  }
}
const nodeFlags = name === 'leaks' ? ['--expose-gc'] : [];
run(process.execPath, [...nodeFlags, join('dist', 'bench', `${name}.js`), ...args, ...extra], inRoot);
