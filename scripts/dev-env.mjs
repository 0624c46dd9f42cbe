// Runs a command inside the project's environment: the .venv as the active Python (so the
// libtorch lookup finds the project's pinned torch, as a user's active virtualenv would be
// found) and python/ on PYTHONPATH. Usage: node scripts/dev-env.mjs <command> [args...]
import { spawn } from 'node:child_process';
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

// The child runs while this wrapper waits (asynchronously, so it can hear signals): SIGTERM,
// SIGINT and SIGHUP sent to the wrapper are passed on, so stopping the wrapper stops a `serve`
// under it gracefully instead of orphaning it. (A terminal's Ctrl-C reaches both, so the child
// may see SIGINT twice: serve's drain survives a second signal.) The wrapper exits as its
// child did: the same status, or the same signal.
if (isMain(import.meta.url)) {
  const [command, ...args] = process.argv.slice(2);
  const child = spawn(command, args, { stdio: 'inherit', env: devEnv(), cwd: ROOT });
  const forward = (signal) => child.kill(signal);
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, forward);
  child.on('error', (error) => {
    process.stderr.write(`dev-env: cannot run ${command}: ${error.message}\n`);
    process.exit(127);
  });
  child.on('exit', (code, signal) => {
    for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.off(s, forward);
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
}
