// bertgate export HF_MODEL_DIR BUNDLE_DIR: the export tool (python/bertgate_export, shipped in
// the package), run by the Python the libtorch lookup finds, which has torch; it needs
// transformers too. The tool traces the model, checks the trace against eager, and writes
// the bundle.

import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { PACKAGE_ROOT } from '../binding.js';
import { ExportError, InvalidArgumentError } from '../errors.js';
import { findLibtorch } from '../libtorch.js';

/** The Python whose torch the lookup found; with LIBTORCH or the system, BERTGATE_PYTHON or python3. */
async function exportPython(): Promise<{ python: string; why: string }> {
  const { location, steps } = await findLibtorch();
  if (location?.source === 'python') {
    const found = steps.find((s) => s.outcome === 'found' && s.source === 'python');
    if (found) return { python: found.candidate, why: `its torch is the libtorch bertgate found (${location.dir})` };
  }
  const python = process.env['BERTGATE_PYTHON'] ?? 'python3';
  return { python, why: `libtorch came from ${location ? location.source : 'nowhere'}, so ${python} is used` };
}

export async function exportCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { 'max-length': { type: 'string' }, tolerance: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 2) {
    throw new InvalidArgumentError(
      `Expected two arguments, HF_MODEL_DIR and BUNDLE_DIR, got ${positionals.length} (see "bertgate help")`,
    );
  }
  const { python, why } = await exportPython();
  const env = {
    ...process.env,
    PYTHONPATH: [join(PACKAGE_ROOT, 'python'), process.env['PYTHONPATH']].filter(Boolean).join(':'),
    // A local model directory is all the tool reads: never the hub.
    HF_HUB_OFFLINE: '1',
    TRANSFORMERS_OFFLINE: '1',
  };
  const probe = spawnSync(python, ['-c', 'import torch, transformers'], { env, encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    const detail = probe.error ? probe.error.message : (probe.stderr.trim().split('\n').pop() ?? '');
    throw new ExportError(
      `the export tool needs a Python with torch and transformers; ${python} (${why}) cannot import them: ${detail}. ` +
        'Install transformers there (pip install transformers), or set BERTGATE_PYTHON to a Python that has both.',
    );
  }
  const args = ['-m', 'bertgate_export', ...positionals];
  if (values['max-length'] !== undefined) args.push('--max-length', values['max-length']);
  if (values.tolerance !== undefined) args.push('--tolerance', values.tolerance);
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn(python, args, { env, stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', (status, signal) => resolve(status ?? (signal ? 1 : 0)));
  });
  if (code !== 0) throw new ExportError(`the export tool (${python} -m bertgate_export) failed with exit code ${code}`);
  return 0;
}
