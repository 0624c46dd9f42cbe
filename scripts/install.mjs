// npm's install hook. In a development checkout: the .venv with the pinned torch, then the
// TypeScript and native builds (the tests' fixtures come with `npm test`). Installed as a
// dependency: the prebuild shipped in prebuilds/ when it fits this platform, else a source
// build with cmake-js against the libtorch the run-time lookup finds (node-gyp-build would
// fall back to node-gyp, which is why this script exists). `npm install --build-from-source`
// (or BERTGATE_BUILD_FROM_SOURCE=1) always compiles.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { ROOT } from './paths.mjs';

const developing = existsSync(join(ROOT, '.git')) && existsSync(join(ROOT, 'tsconfig.json'));
if (developing) {
  const { setupVenv } = await import('./setup-venv.mjs');
  const { run } = await import('./run.mjs');
  const { buildNative } = await import('./build-native.mjs');
  setupVenv();
  run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')]);
  await buildNative({ tests: true });
} else {
  const fromSource =
    ['true', '1'].includes(process.env.npm_config_build_from_source ?? '') ||
    process.env.BERTGATE_BUILD_FROM_SOURCE === '1';
  const { pickAddon } = await import('../dist/lib/addon-path.js');
  const { chosen, candidates } = pickAddon(ROOT, { ...process.env, BERTGATE_ADDON: undefined });
  if (chosen && !fromSource) {
    console.log(`bertgate: using the ${chosen.source === 'prebuild' ? 'prebuilt' : 'existing'} addon ${chosen.path}`);
  } else {
    console.log(
      fromSource
        ? 'bertgate: building from source (asked for)'
        : `bertgate: no prebuilt addon fits this platform (${candidates.map((c) => c.problem).join('; ')}); building from source with cmake-js`,
    );
    const { buildNative } = await import('./build-native.mjs');
    await buildNative();
  }
}
