// The libtorch a build compiles against: the one the run-time lookup (lib/libtorch.ts) finds
// in this environment. Shared by build-native.mjs (cmake-js) and binding.gyp (node-gyp),
// which calls it as: node scripts/torch-config.mjs dir|version|abi|rpath-link
import { devEnv } from './dev-env.mjs';
import { isMain } from './paths.mjs';

export async function torchBuildConfig() {
  const { findLibtorch, formatSteps, readCxx11Abi } = await import('../dist/lib/libtorch.js');
  const { location, steps } = await findLibtorch(devEnv());
  if (!location) {
    throw new Error(`cannot build bertgate: libtorch was not found. Looked at, in order:\n${formatSteps(steps)}`);
  }
  if (!location.version)
    throw new Error(`cannot build bertgate: ${location.dir} has no include/torch/headeronly/version.h`);
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
  };
  const field = process.argv[2];
  if (!(field in fields)) throw new Error(`usage: torch-config.mjs ${Object.keys(fields).join('|')}`);
  process.stdout.write(fields[field]);
}
