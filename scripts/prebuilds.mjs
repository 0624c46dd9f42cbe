// npm run prebuilds: everything an installed package runs, for this platform, in
// prebuilds/<platform>-<arch>/: the N-API addon (prebuildify: bertgate.glibc.node), and one
// engine library per torch minor of the matrix and flavour (CUDA with the fused kernels, and
// CPU-only, linking no CUDA library), stripped, listed in engines.json. Offline but for PyPI:
// each torch comes from its wheel (scripts/torch-wheels.mjs, cached outside the repository);
// the CUDA flavour is compiled by the project's pinned nvcc. Builds live in build-prebuild/,
// one directory per engine, and are skipped when their sources did not change.
// Usage: node scripts/prebuilds.mjs [--torch 2.11.0,2.15.0] [--flavour cuda,cpu]
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';

import { buildNative } from './build-native.mjs';
import { devEnv } from './dev-env.mjs';
import { engineFileName, writeEngineManifest } from './engine-manifest.mjs';
import { ROOT, isMain } from './paths.mjs';
import { run } from './run.mjs';
import { buildIfStale } from './stamp.mjs';
import { torchBuildConfig } from './torch-config.mjs';
import { MATRIX, libtorchDir } from './torch-wheels.mjs';

export const STAGE = join(ROOT, 'build-prebuild');
export const FLAVOURS = ['cuda', 'cpu'];

/** prebuildify builds the addon (no libtorch needed) through scripts/prebuild-gyp.mjs. */
function addon(platformDir) {
  mkdirSync(STAGE, { recursive: true });
  // prebuildify reads the package name from its cwd; the stage says it.
  writeFileSync(join(STAGE, 'package.json'), JSON.stringify({ name: 'bertgate', private: true }) + '\n');
  rmSync(platformDir, { recursive: true, force: true });
  // prebuildify copies every .so beside the addon: an engine left there by an older build
  // would ship unlisted.
  const release = join(STAGE, 'build', 'Release');
  if (existsSync(release)) for (const f of readdirSync(release)) if (f.endsWith('.so')) rmSync(join(release, f));
  const bin = createRequire(import.meta.url).resolve('prebuildify/bin.js');
  run(
    process.execPath,
    [
      bin,
      '--napi',
      '--tag-libc',
      '--strip',
      '--name',
      'bertgate',
      '--cwd',
      STAGE,
      '--out',
      ROOT,
      '--node-gyp',
      join(ROOT, 'scripts', 'prebuild-gyp.mjs'),
    ],
    { cwd: ROOT, env: devEnv() },
  );
}

/** The pinned nvcc of the project's .venv (requirements.txt): the CUDA flavour's compiler. */
async function projectNvcc() {
  const dev = await torchBuildConfig();
  const nvcc = dev.dependencyDirs.map((dir) => join(dirname(dir), 'bin', 'nvcc')).find((path) => existsSync(path));
  if (!nvcc) throw new Error(`no nvcc beside the project's torch (${dev.dir}); run npm test once to set up .venv`);
  return nvcc;
}

async function engine(version, flavour, nvcc) {
  const dir = join(STAGE, `engine-${version}-${flavour}`);
  const file = join(dir, 'Release', engineFileName(version, flavour));
  if (!existsSync(file)) rmSync(join(dir, '.stamp'), { force: true });
  const inputs = [join(ROOT, 'native', 'engine'), join(ROOT, 'native', 'shim'), join(ROOT, 'CMakeLists.txt')];
  await buildIfStale(dir, inputs, () => {
    const torchDir = libtorchDir(version);
    const torch = {
      dir: torchDir,
      version,
      cxx11Abi: true,
      dependencyDirs: [join(dirname(torchDir), 'nvidia', 'cu13', 'lib')],
    };
    return buildNative({ out: dir, parts: 'engine', torch, cuda: flavour === 'cuda' ? 'ON' : 'OFF', nvcc });
  });
  return file;
}

export async function prebuilds({ versions = MATRIX, flavours = FLAVOURS } = {}) {
  const platformDir = join(ROOT, 'prebuilds', `${process.platform}-${process.arch}`);
  addon(platformDir);
  const nvcc = flavours.includes('cuda') ? await projectNvcc() : undefined;
  const engines = [];
  for (const version of versions) {
    for (const flavour of flavours) {
      const built = await engine(version, flavour, nvcc);
      const name = engineFileName(version, flavour);
      copyFileSync(built, join(platformDir, name));
      run('strip', ['--strip-unneeded', join(platformDir, name)]);
      engines.push({ file: name, torchVersion: version, flavour });
      console.log(`prebuilds: engine for torch ${version} (${flavour})`);
    }
  }
  // MKL's vendor check answered "Intel" (native/shim/mkl_any_cpu.cpp): the same file from every
  // engine build (it uses no libtorch), shipped once beside the engines; lib/runtime/engines.ts
  // names it MKL_SHIM.
  const shim = 'libbertgate_mkl_any_cpu.so';
  copyFileSync(join(STAGE, `engine-${versions[0]}-${flavours[0]}`, 'Release', shim), join(platformDir, shim));
  run('strip', ['--strip-unneeded', join(platformDir, shim)]);
  writeEngineManifest(platformDir, engines);
  return platformDir;
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { torch: { type: 'string' }, flavour: { type: 'string' } } });
  const list = (value, all) => (value ? value.split(',') : all);
  console.log(
    `wrote ${await prebuilds({ versions: list(values.torch, MATRIX), flavours: list(values.flavour, FLAVOURS) })}`,
  );
}
