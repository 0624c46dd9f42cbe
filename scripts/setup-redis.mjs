// The worker tests (test/worker.test.ts) start their own redis-server on a loopback port. Debian's
// `redis-server` package provides it: installed here with apt where it is missing and we are
// root; otherwise set-up stops with one line naming the package (a test never skips silently).
import { spawnSync } from 'node:child_process';

import { isMain } from './paths.mjs';
import { run } from './run.mjs';

const onPath = (command) => spawnSync(command, ['--version'], { stdio: 'ignore' }).status === 0;

export function setupRedis() {
  if (onPath('redis-server')) return;
  const root = process.getuid?.() === 0;
  if (!root || !onPath('apt-get')) {
    process.stderr.write(
      'setup: redis-server is missing: install the redis-server package (Debian/Ubuntu: apt-get install ' +
        'redis-server), which the worker tests start\n',
    );
    process.exit(1);
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  run('apt-get', ['update', '-qq'], { env });
  run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'redis-server'], { env });
  if (!onPath('redis-server')) throw new Error('apt-get installed redis-server, but it is not on PATH');
}

if (isMain(import.meta.url)) setupRedis();
