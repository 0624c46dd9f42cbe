// Builds the addon a second way, with node-gyp from binding.gyp, then runs the parity tests
// against that build (BERTGATE_ADDON), so binding.gyp cannot rot unnoticed.
// node-gyp always builds into ./build, which cmake-js owns here, so it runs in .gyp-check/,
// a directory of links to the sources.
import { mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';

import { devEnv } from './dev-env.mjs';
import { engineFileName, writeEngineManifest } from './engine-manifest.mjs';
import { ROOT } from './paths.mjs';
import { run } from './run.mjs';
import { torchBuildConfig } from './torch-config.mjs';

// Two build files list the engine's sources: a file one of them misses builds an engine with an
// undefined symbol, found only when it loads. Both must list every .cpp under native/engine
// (binding.gyp builds the CPU flavour only, without the cuda_ ones).
const onDisk = readdirSync(join(ROOT, 'native', 'engine')).filter((f) => f.endsWith('.cpp'));
for (const file of ['binding.gyp', 'CMakeLists.txt']) {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const needed = file === 'binding.gyp' ? onDisk.filter((f) => !f.startsWith('cuda_')) : onDisk;
  const missing = needed.filter((f) => !text.includes(`native/engine/${f}`));
  if (missing.length > 0)
    throw new Error(`${file} does not build ${missing.map((f) => `native/engine/${f}`).join(', ')}`);
}

const dir = join(ROOT, '.gyp-check');
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir);
for (const entry of ['binding.gyp', 'native', 'node_modules', 'package.json', 'scripts', 'dist']) {
  symlinkSync(join(ROOT, entry), join(dir, entry));
}
const nodeGyp = createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
// The headers of the running Node, so node-gyp does not try to download any.
const nodedir = resolve(dirname(process.execPath), '..');
run(
  process.execPath,
  [nodeGyp, 'rebuild', `--nodedir=${nodedir}`, `--jobs=${availableParallelism()}`, '--loglevel=warn'],
  {
    cwd: dir,
    env: devEnv(),
  },
);
// node-gyp builds the CPU flavour; the run time chooses it through engines.json.
const { version } = await torchBuildConfig();
const release = join(dir, 'build', 'Release');
writeEngineManifest(release, [{ file: engineFileName(version, 'cpu'), torchVersion: version, flavour: 'cpu' }]);
run(process.execPath, ['--test', join(ROOT, 'dist', 'test', 'parity.test.js')], {
  cwd: ROOT,
  env: { ...devEnv(), BERTGATE_ADDON: join(release, 'bertgate.node') },
});
