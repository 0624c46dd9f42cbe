// The sanitizer run: engine, addon and engine tests built with ASan + UBSan (CPU only) in
// build-asan/, then the engine's GoogleTest suite and the Node suites that drive the addon,
// against that build. Node itself is not instrumented, so the ASan runtime is preloaded into
// it; leak checking is off for Node (V8 and libtorch keep process-lifetime allocations; the
// leak scripts measure growth instead) and on for the engine tests, which own their process.
// Usage: node scripts/sanitize.mjs [--no-build]
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { buildNative } from './build-native.mjs';
import { devEnv } from './dev-env.mjs';
import { ROOT } from './paths.mjs';
import { run } from './run.mjs';

const OUT = join(ROOT, 'build-asan');
export const SANITIZED_SUITES = [
  'classify',
  'async',
  'errors',
  'parity',
  'batching',
  'bad-input',
  'property',
  'faults',
].map((name) => join(ROOT, 'dist', 'test', `${name}.test.js`));

function runtime(name) {
  const path = spawnSync('g++', [`-print-file-name=${name}`], { encoding: 'utf8' }).stdout.trim();
  if (!path.startsWith('/') || !existsSync(path)) throw new Error(`g++ does not know where ${name} is`);
  return path;
}

if (!process.argv.includes('--no-build')) {
  process.env.BERTGATE_BUILD_CUDA = 'OFF'; // nvcc-compiled code is not instrumented anyway
  await buildNative({ out: OUT, tests: true, extra: ['BERTGATE_SANITIZE=ON'] });
}

// A build that silently lost its flags would pass everything: check the runtimes are linked.
const engine = JSON.parse(readFileSync(join(OUT, 'Release', 'engine-build.json'), 'utf8')).file;
for (const product of ['bertgate.node', engine]) {
  const needed = spawnSync('ldd', [join(OUT, 'Release', product)], { encoding: 'utf8' }).stdout;
  if (!needed.includes('libasan') || !needed.includes('libubsan'))
    throw new Error(`${product} in ${OUT} is not linked with ASan and UBSan`);
}

const sanitizer = {
  UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
  // libtorch's own objects are not instrumented; container-overflow checks need everything to be.
  ASAN_OPTIONS: 'detect_container_overflow=0:abort_on_error=0:exitcode=86',
};
console.log('== engine tests (ASan + UBSan, leaks checked)');
run(join(OUT, 'engine_tests'), ['--gtest_brief=1'], {
  env: { ...devEnv(), ...sanitizer, ASAN_OPTIONS: `${sanitizer.ASAN_OPTIONS}:detect_leaks=1` },
});
console.log('== Node suites against the sanitized addon');
run(process.execPath, ['--test', '--test-reporter=dot', ...SANITIZED_SUITES.filter((f) => existsSync(f))], {
  cwd: ROOT,
  env: {
    ...devEnv(),
    ...sanitizer,
    ASAN_OPTIONS: `${sanitizer.ASAN_OPTIONS}:detect_leaks=0`,
    LD_PRELOAD: [runtime('libasan.so'), runtime('libubsan.so')].join(' '),
    BERTGATE_ADDON: join(OUT, 'Release', 'bertgate.node'),
  },
});
console.log('sanitizers: clean');
