// Builds the engine library and the addon with cmake-js, against the libtorch that the
// run-time lookup would pick (lib/libtorch.ts), so build and run agree on one copy.
// Usage: node scripts/build-native.mjs [--tests]
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';

import { devEnv } from './dev-env.mjs';
import { ROOT } from './paths.mjs';
import { run } from './run.mjs';

export async function findBuildLibtorch() {
  const { findLibtorch, formatSteps } = await import('../dist/lib/libtorch.js');
  const { location, steps } = await findLibtorch(devEnv());
  if (!location) {
    throw new Error(`cannot build bertgate: libtorch was not found. Looked at, in order:\n${formatSteps(steps)}`);
  }
  return location;
}

export async function buildNative({ tests = false } = {}) {
  const libtorch = await findBuildLibtorch();
  const cmakeJs = createRequire(import.meta.url).resolve('cmake-js/bin/cmake-js');
  run(
    process.execPath,
    [
      cmakeJs,
      'build',
      '--log-level',
      'warn',
      '--parallel',
      String(availableParallelism()),
      `--CDLIBTORCH_DIR=${libtorch.dir}`,
      `--CDBERTGATE_RUNTIME_DIRS=${libtorch.dependencyDirs.join(';')}`,
      `--CDBERTGATE_BUILD_TESTS=${tests ? 'ON' : 'OFF'}`,
    ],
    { cwd: ROOT },
  );
}

if (import.meta.url === `file://${process.argv[1]}`) await buildNative({ tests: process.argv.includes('--tests') });
