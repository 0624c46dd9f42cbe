// Runs a command inside the project's environment: the .venv as the active Python (so the
// libtorch lookup finds the project's pinned torch, as a user's active virtualenv would be
// found) and python/ on PYTHONPATH. Usage: node scripts/dev-env.mjs <command> [args...]
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';

import { ROOT, isMain } from './paths.mjs';

export function devEnv(env = process.env) {
  const venv = join(ROOT, '.venv');
  const out = {
    ...env,
    PYTHONPATH: [join(ROOT, 'python'), env.PYTHONPATH].filter(Boolean).join(delimiter),
    // Nothing in this project may reach the Hugging Face hub: fail instead of downloading.
    HF_HUB_OFFLINE: '1',
    TRANSFORMERS_OFFLINE: '1',
    HF_HUB_DISABLE_PROGRESS_BARS: '1',
    TRANSFORMERS_VERBOSITY: 'error',
  };
  if (existsSync(join(venv, 'bin', 'python'))) {
    out.VIRTUAL_ENV = venv;
    out.PATH = [join(venv, 'bin'), env.PATH].join(delimiter);
  }
  return out;
}

if (isMain(import.meta.url)) {
  const [command, ...args] = process.argv.slice(2);
  const result = spawnSync(command, args, { stdio: 'inherit', env: devEnv(), cwd: ROOT });
  if (result.error) throw result.error;
  process.exit(result.status ?? 1);
}
