// Builds the engine library and the addon with cmake-js, against the libtorch that the
// run-time lookup would pick, so build and run agree on one copy.
// Usage: node scripts/build-native.mjs [--tests]
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';

import { ROOT, isMain } from './paths.mjs';
import { run } from './run.mjs';
import { torchBuildConfig } from './torch-config.mjs';

export async function buildNative({ tests = false } = {}) {
  const torch = await torchBuildConfig();
  const cmakeJs = createRequire(import.meta.url).resolve('cmake-js/bin/cmake-js');
  const common = ['--log-level', 'warn', '--parallel', String(availableParallelism())];
  // `cmake-js build` alone skips configuring an existing build directory, so changed inputs
  // (another libtorch, tests on or off) would never reach the cache: configure every time.
  run(
    process.execPath,
    [
      cmakeJs,
      'configure',
      ...common,
      `--CDLIBTORCH_DIR=${torch.dir}`,
      `--CDBERTGATE_TORCH_VERSION=${torch.version}`,
      `--CDBERTGATE_CXX11_ABI=${torch.cxx11Abi ? 1 : 0}`,
      `--CDBERTGATE_RUNTIME_DIRS=${torch.dependencyDirs.join(';')}`,
      `--CDBERTGATE_BUILD_TESTS=${tests ? 'ON' : 'OFF'}`,
    ],
    { cwd: ROOT },
  );
  run(process.execPath, [cmakeJs, 'build', ...common], { cwd: ROOT });
}

if (isMain(import.meta.url)) await buildNative({ tests: process.argv.includes('--tests') });
