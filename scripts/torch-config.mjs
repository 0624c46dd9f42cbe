// The libtorch a build compiles against: the one the run-time lookup (lib/libtorch.ts) finds
// in this environment. Shared by build-native.mjs (cmake-js) and binding.gyp (node-gyp),
// which calls it as: node scripts/torch-config.mjs dir|version|abi|rpath-link|engine-name|cxx-std
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { devEnv } from './dev-env.mjs';
import { engineFileName } from './engine-manifest.mjs';
import { ROOT, isMain } from './paths.mjs';
import { run } from './run.mjs';

/**
 * The lookup is TypeScript, compiled into dist/. An installed package ships it compiled; in a
 * checkout it is compiled here when missing or older than its source, so a native build does
 * not depend on a TypeScript build having run first.
 */
async function lookup() {
  const compiled = join(ROOT, 'dist', 'lib', 'runtime', 'libtorch.js');
  const source = join(ROOT, 'lib', 'runtime', 'libtorch.ts');
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  if (existsSync(source) && existsSync(tsc)) {
    if (!existsSync(compiled) || statSync(compiled).mtimeMs < statSync(source).mtimeMs) {
      run(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.json')], { stdio: ['ignore', 'ignore', 'inherit'] });
    }
  }
  return import(compiled);
}

export async function torchBuildConfig(env = devEnv()) {
  const { findLibtorch, formatSteps, readCxx11Abi } = await lookup();
  const { location, steps } = await findLibtorch(env);
  if (!location) {
    throw new Error(`cannot build bertgate: libtorch was not found. Looked at, in order:\n${formatSteps(steps)}`);
  }
  if (!location.version) throw new Error(`cannot build bertgate: ${location.dir} does not say its version`);
  if (!existsSync(join(location.dir, 'include', 'torch', 'headeronly', 'version.h')))
    throw new Error(`cannot build bertgate: ${location.dir} has no include/ (a runtime-only libtorch)`);
  return {
    dir: location.dir,
    version: location.version,
    cxx11Abi: await readCxx11Abi(location.dir),
    dependencyDirs: location.dependencyDirs,
  };
}

if (isMain(import.meta.url)) {
  const config = await torchBuildConfig();
  const fields = {
    dir: config.dir,
    version: config.version,
    abi: config.cxx11Abi ? '1' : '0',
    'rpath-link': config.dependencyDirs.map((d) => `-Wl,-rpath-link,${d}`).join(' '),
    'engine-name': engineFileName(config.version, 'cpu').replace(/^lib|\.so$/g, ''),
    // As CMakeLists.txt: libtorch's headers need C++20 from 2.14 on.
    'cxx-std': config.version.localeCompare('2.14', undefined, { numeric: true }) >= 0 ? 'c++20' : 'c++17',
  };
  const field = process.argv[2];
  if (!(field in fields)) throw new Error(`usage: torch-config.mjs ${Object.keys(fields).join('|')}`);
  process.stdout.write(fields[field]);
}
