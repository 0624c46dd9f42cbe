// Compiles the TypeScript into dist/, from scratch: dist/ is removed first, so a file deleted
// from lib/ or test/ leaves no stale .js behind (node --test dist/test/ would still run a
// deleted test; npm pack would still ship a deleted module).
import { rmSync } from 'node:fs';
import { join } from 'node:path';

import { ROOT, isMain } from './paths.mjs';
import { run } from './run.mjs';

export function buildTs() {
  rmSync(join(ROOT, 'dist'), { recursive: true, force: true });
  run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')]);
}

if (isMain(import.meta.url)) buildTs();
