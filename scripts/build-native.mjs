// Builds the engine library and the addon with cmake-js, against the libtorch that the
// run-time lookup would pick, so build and run agree on one copy.
// Usage: node scripts/build-native.mjs [--tests]
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';

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
 * <out>/Release. `extra`: more -D definitions, e.g. for the sanitizer build.
 */
export async function buildNative({ tests = false, out = undefined, extra = [] } = {}) {
  const torch = await torchBuildConfig();
  // BERTGATE_CUDA=OFF builds for the CPU only even where nvcc exists; ON insists on CUDA.
  const cudaMode = process.env.BERTGATE_CUDA ?? 'AUTO';
  const nvcc = cudaMode === 'OFF' ? undefined : findNvcc(torch);
  const cmakeJs = createRequire(import.meta.url).resolve('cmake-js/bin/cmake-js');
  const common = ['--log-level', 'warn', '--parallel', String(availableParallelism()), ...(out ? ['--out', out] : [])];
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
      `--CDBERTGATE_CUDA=${cudaMode}`,
      ...(process.env.BERTGATE_GTEST_SOURCE ? [`--CDBERTGATE_GTEST_SOURCE=${process.env.BERTGATE_GTEST_SOURCE}`] : []),
      ...(nvcc ? [`--CDCMAKE_CUDA_COMPILER=${nvcc}`, ...pipToolkitFlags(nvcc)] : []),
      ...extra.map((definition) => `--CD${definition}`),
    ],
    { cwd: ROOT },
  );
  run(process.execPath, [cmakeJs, 'build', ...common], { cwd: ROOT });
}

if (isMain(import.meta.url)) await buildNative({ tests: process.argv.includes('--tests') });
