// Prepares .gpu-carry/ for scripts/gpu-check.sh: the GPU machines have no Node, no npm
// registry and no network, so Node itself, the production node_modules (tokenizers pruned to
// linux-x64) and the compiled JavaScript travel with the tree, compressed to fit the 64 MiB a
// run may carry, and GoogleTest's sources in case the machine lacks the package.
// Usage: node scripts/gpu-pack.mjs   then carry [".gpu-carry"] with the run.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { buildTs } from './build-ts.mjs';
import { ROOT } from './paths.mjs';
import { run } from './run.mjs';

/** A device run carries the working tree (tracked and untracked-not-ignored files) and the carry, 64 MiB in all. */
const LIMIT = 64 * 2 ** 20;

const carry = join(ROOT, '.gpu-carry');
const stage = join(tmpdir(), `bertgate-gpu-stage-${process.pid}`);
rmSync(carry, { recursive: true, force: true });
rmSync(stage, { recursive: true, force: true });
mkdirSync(carry);
mkdirSync(stage);

buildTs();
run('sh', ['-c', `xz -T0 -9 -c "${process.execPath}" > "${join(carry, 'node.xz')}"`]);

cpSync(join(ROOT, 'package.json'), join(stage, 'package.json'));
cpSync(join(ROOT, 'package-lock.json'), join(stage, 'package-lock.json'));
run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: stage });
const tokenizers = join(stage, 'node_modules', 'tokenizers');
for (const file of readdirSync(tokenizers)) {
  if (file.endsWith('.node') && file !== 'tokenizers.linux-x64-gnu.node') rmSync(join(tokenizers, file));
}
cpSync(join(ROOT, 'dist'), join(stage, 'dist'), { recursive: true });
run('tar', ['-cJf', join(carry, 'runtime.tar.xz'), '-C', stage, 'node_modules', 'dist']);
if (existsSync('/usr/src/googletest'))
  run('tar', ['-cJf', join(carry, 'googletest.tar.xz'), '-C', '/usr/src', 'googletest']);
rmSync(stage, { recursive: true, force: true });

let total = 0;
for (const file of readdirSync(carry)) {
  const size = statSync(join(carry, file)).size;
  total += size;
  console.log(`${file.padEnd(20)} ${(size / 2 ** 20).toFixed(1)} MiB`);
}
const tree = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT })
  .toString()
  .split('\0')
  .filter((f) => f && existsSync(join(ROOT, f)))
  .reduce((sum, f) => sum + statSync(join(ROOT, f)).size, 0);
const mib = (n) => `${(n / 2 ** 20).toFixed(1)} MiB`;
console.log(`${'carry'.padEnd(20)} ${mib(total)}`);
console.log(`${'working tree'.padEnd(20)} ${mib(tree)}`);
console.log(`${'what travels'.padEnd(20)} ${mib(total + tree)} of ${mib(LIMIT)}`);
if (total + tree > LIMIT)
  throw new Error(`the tree and the carry (${mib(total + tree)}) are over a device run's ${mib(LIMIT)}`);
