// Brings a checkout to a testable state (npm test runs it first, as `pretest`; npm run demo as
// `predemo`). Idempotent, and quick when nothing changed: node_modules (npm ci), the .venv,
// the TypeScript and native builds, the test fixtures, with --redis the redis-server the worker
// tests start (scripts/setup-redis.mjs), and with --prebuilds the prebuild
// matrix the packed-install tests install (scripts/prebuilds.mjs). (The default model is
// committed: models/default, trained by python -m bertgate_export.train.)
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import { buildNative } from './build-native.mjs';
import { buildTs } from './build-ts.mjs';
import { devEnv } from './dev-env.mjs';
import { ROOT, VENV_PYTHON } from './paths.mjs';
import { run } from './run.mjs';
import { setupRedis } from './setup-redis.mjs';
import { setupVenv } from './setup-venv.mjs';
import { buildIfStale } from './stamp.mjs';

const npm = process.env.npm_execpath ? [process.execPath, process.env.npm_execpath] : ['npm'];

// --ignore-scripts: bertgate's own set-up is this script; no dependency needs an install script.
if (!existsSync(join(ROOT, 'node_modules', '.package-lock.json'))) {
  run(npm[0], [...npm.slice(1), 'ci', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: ROOT });
}
setupVenv();
buildTs();
await buildNative({ tests: true });

const python = (args) => run(VENV_PYTHON, args, { cwd: ROOT, env: devEnv() });
const exporter = join(ROOT, 'python', 'bertgate_export');
const inputs = [exporter, join(ROOT, 'requirements.txt')];

const fixtures = join(ROOT, '.fixtures');
await buildIfStale(fixtures, inputs, () => {
  rmSync(fixtures, { recursive: true, force: true });
  python(['-m', 'bertgate_export.fixtures', fixtures]);
});

if (process.argv.includes('--redis')) setupRedis();

if (process.argv.includes('--prebuilds')) {
  const { prebuilds } = await import('./prebuilds.mjs');
  await prebuilds();
}
