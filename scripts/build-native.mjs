// Builds the engine library and the addon with cmake-js, against the libtorch that the
// run-time lookup would pick (or one given), so build and run agree on one copy; then lists
// the engine in engines.json beside the addon.
// Usage: node scripts/build-native.mjs [--tests]
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';

import { writeEngineManifest } from './engine-manifest.mjs';
import { ROOT, isMain } from './paths.mjs';
import { run } from './run.mjs';
import { torchBuildConfig } from './torch-config.mjs';

/**
 * nvcc for the optional CUDA kernels: CUDACXX, else nvcc on PATH, else the pip toolkit beside
 * torch's own CUDA libraries (nvidia/cu13/bin next to nvidia/cu13/lib). None: a CPU build.
 */
function findNvcc(torch) {
  if (process.env.CUDACXX) return process.env.CUDACXX;
  const onPath = spawnSync('sh', ['-c', 'command -v nvcc'], { encoding: 'utf8' }).stdout.trim();
  if (onPath) return onPath;
  return torch.dependencyDirs.map((dir) => join(dirname(dir), 'bin', 'nvcc')).find((path) => existsSync(path));
}

/**
 * The nvidia-cuda-nvcc wheel keeps its libraries in <root>/lib, not the <root>/targets/<arch>/lib
 * its nvcc.profile names; without this even CMake's compiler check cannot link.
 */
function pipToolkitFlags(nvcc) {
  const root = dirname(dirname(nvcc));
  if (existsSync(join(root, 'targets')) || !existsSync(join(root, 'lib', 'libcudart_static.a'))) return [];
  return [`--CDCMAKE_CUDA_FLAGS=-L${join(root, 'lib')}`];
}

/**
 * `out`: the build directory (cmake-js --out), build/ by default; the products land in
 * <out>/Release. `parts`: 'all', 'engine' or 'addon' (which needs no libtorch). `torch`: the
 * libtorch to build against (torchBuildConfig's shape), else the lookup's. `cuda`: AUTO, ON
 * or OFF (default BERTGATE_BUILD_CUDA, else AUTO; BERTGATE_CUDA is the run time's, "1"/"0");
 * `nvcc` the compiler to use, else found. `extra`:
 * more -D definitions, e.g. for the sanitizer build. Returns the engine built, if any.
 */
export async function buildNative({
  tests = false,
  out = undefined,
  extra = [],
  parts = 'all',
  torch = undefined,
  cuda = process.env.BERTGATE_BUILD_CUDA ?? 'AUTO',
  nvcc = undefined,
} = {}) {
  const withEngine = parts !== 'addon';
  const libtorch = withEngine ? (torch ?? (await torchBuildConfig())) : undefined;
  const compiler = withEngine && cuda !== 'OFF' ? (nvcc ?? findNvcc(libtorch)) : undefined;
  const cmakeJs = createRequire(import.meta.url).resolve('cmake-js/bin/cmake-js');
  const outDir = out ?? join(ROOT, 'build');
  const common = ['--log-level', 'warn', '--parallel', String(availableParallelism()), '--out', outDir];
  const torchDefinitions = libtorch
    ? [
        `--CDLIBTORCH_DIR=${libtorch.dir}`,
        `--CDBERTGATE_CXX11_ABI=${libtorch.cxx11Abi ? 1 : 0}`,
        `--CDBERTGATE_RUNTIME_DIRS=${libtorch.dependencyDirs.join(';')}`,
      ]
    : [];
  // `cmake-js build` alone skips configuring an existing build directory, so changed inputs
  // (another libtorch, tests on or off) would never reach the cache: configure every time.
  run(
    process.execPath,
    [
      cmakeJs,
      'configure',
      ...common,
      `--CDBERTGATE_PARTS=${parts}`,
      ...torchDefinitions,
      `--CDBERTGATE_BUILD_TESTS=${tests ? 'ON' : 'OFF'}`,
      `--CDBERTGATE_CUDA=${cuda}`,
      ...(process.env.BERTGATE_GTEST_SOURCE ? [`--CDBERTGATE_GTEST_SOURCE=${process.env.BERTGATE_GTEST_SOURCE}`] : []),
      ...(compiler ? [`--CDCMAKE_CUDA_COMPILER=${compiler}`, ...pipToolkitFlags(compiler)] : []),
      ...extra.map((definition) => `--CD${definition}`),
    ],
    { cwd: ROOT },
  );
  run(process.execPath, [cmakeJs, 'build', ...common], { cwd: ROOT });
  if (!withEngine) return undefined;
  const release = join(outDir, 'Release');
  const built = JSON.parse(readFileSync(join(release, 'engine-build.json'), 'utf8'));
  return { dir: release, ...writeEngineManifest(release, [built])[0] };
}

if (isMain(import.meta.url)) await buildNative({ tests: process.argv.includes('--tests') });
