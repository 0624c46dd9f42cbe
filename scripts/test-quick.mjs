// npm run test:quick [-- NAME...]: the inner loop. Compiles the TypeScript (dist/ from scratch,
// about 5 s) and runs the Node tests that need neither the prebuild matrix nor child processes
// by the dozen, or only those whose file name contains one of the NAMEs given. It expects a
// checkout `npm test` (or `node scripts/setup.mjs`) has set up once. `npm test` stays the
// full CI suite: linters, C++ tests, Python tests, every Node test, node-gyp, sanitizers.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

import { buildTs } from './build-ts.mjs';
import { devEnv } from './dev-env.mjs';
import { ROOT } from './paths.mjs';

// Minutes, not seconds: installs of the packed tarball, every engine of the matrix, many
// child processes and servers.
const SLOW = [
  'packed-install',
  'engines',
  'libtorch',
  'faults',
  'worker-teardown',
  'serve',
  'calibrate-cli',
  'cli',
  'deploy',
];

buildTs();
const names = process.argv.slice(2);
const tests = readdirSync(join(ROOT, 'dist', 'test'))
  .filter((f) => f.endsWith('.test.js'))
  .filter((f) => {
    const name = f.replace(/\.test\.js$/, '');
    return names.length > 0 ? names.some((n) => name.includes(n)) : !SLOW.includes(name);
  })
  .map((f) => join('dist', 'test', f));
if (tests.length === 0) throw new Error(`no test file matches ${names.join(', ')}`);
const result = spawnSync(process.execPath, ['--test', '--test-reporter=spec', ...tests], {
  stdio: 'inherit',
  env: devEnv(),
  cwd: ROOT,
});
process.exit(result.status ?? 1);
