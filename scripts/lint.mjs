// The project's linters and formatters, as `npm test` runs them; `--fix` rewrites instead.
//   TypeScript/JS: prettier + eslint   C++: clang-format   Python: ruff
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { ROOT, VENV_PYTHON } from './paths.mjs';
import { run } from './run.mjs';

const fix = process.argv.includes('--fix');
const require = createRequire(import.meta.url);
const bin = (pkg, file) => join(require.resolve(`${pkg}/package.json`), '..', file);

const nativeFiles = ['native/engine', 'native/addon', 'native/shim', 'native/tests'].flatMap((dir) =>
  readdirSync(join(ROOT, dir))
    .filter((f) => /\.(h|cpp)$/.test(f))
    .map((f) => join(dir, f)),
);

const steps = [
  [process.execPath, [bin('prettier', 'bin/prettier.cjs'), fix ? '--write' : '--check', '--log-level', 'warn', '.']],
  [process.execPath, [bin('eslint', 'bin/eslint.js'), ...(fix ? ['--fix'] : []), '.']],
  [
    process.execPath,
    [bin('clang-format', 'index.js'), '--style=file', ...(fix ? ['-i'] : ['--dry-run', '--Werror']), ...nativeFiles],
  ],
  [VENV_PYTHON, ['-m', 'ruff', 'format', ...(fix ? [] : ['--check']), 'python']],
  [VENV_PYTHON, ['-m', 'ruff', 'check', ...(fix ? ['--fix'] : []), 'python']],
];
for (const [command, args] of steps) run(command, args, { cwd: ROOT });
