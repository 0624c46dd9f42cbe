// npm's install hook. In a development checkout: the .venv with the pinned torch, then the
// TypeScript and native builds (the tests' fixtures come with `npm test`). Installed as a
// dependency: the addon is built from source against the libtorch the run-time lookup finds.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { buildNative } from './build-native.mjs';
import { ROOT } from './paths.mjs';
import { run } from './run.mjs';
import { setupVenv } from './setup-venv.mjs';

const developing = existsSync(join(ROOT, '.git')) && existsSync(join(ROOT, 'tsconfig.json'));
if (developing) {
  setupVenv();
  run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')]);
  await buildNative({ tests: true });
} else {
  await buildNative();
}
