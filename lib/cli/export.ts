// bertgate export HF_MODEL_DIR BUNDLE_DIR: the export tool (python/bertgate_export, shipped in
// the package), run by the Python the libtorch lookup finds, which has torch; it needs
// transformers too. The tool traces the model, checks the trace against eager, and writes
// the bundle.

import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, realpathSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { PACKAGE_ROOT } from '../runtime/package-root.js';
import { ExportError, InvalidArgumentError } from '../errors.js';
import { findLibtorch } from '../runtime/libtorch.js';

/** The Python whose torch the lookup found; with LIBTORCH or the system, BERTGATE_PYTHON or python3. */
async function exportPython(): Promise<{ python: string; why: string }> {
  const { location, steps } = await findLibtorch();
  if (location?.source === 'python') {
    const found = steps.find((s) => s.outcome === 'found' && s.source === 'python');
    if (found) return { python: found.candidate, why: `its torch is the libtorch bertgate found (${location.dir})` };
  }
  // Empty counts as unset, as the lookup reads it.
  const python = process.env['BERTGATE_PYTHON'] || 'python3';
  return { python, why: `libtorch came from ${location ? location.source : 'nowhere'}, so ${python} is used` };
}

export async function exportCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      'max-length': { type: 'string' },
      tolerance: { type: 'string' },
      quantize: { type: 'string' },
      weights: { type: 'string' },
      features: { type: 'boolean' },
      'feature-kind': { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 2) {
    throw new InvalidArgumentError(
      `Expected two arguments, HF_MODEL_DIR and BUNDLE_DIR, got ${positionals.length} (see "bertgate help")`,
    );
  }
  const [modelDir, bundleDir] = checkDirs(positionals[0] as string, positionals[1] as string);
  const maxLength = values['max-length'];
  if (maxLength !== undefined && !(/^\d+$/.test(maxLength) && Number(maxLength) >= 2)) {
    throw new InvalidArgumentError(
      `Expected --max-length to be a whole number of tokens, at least 2, got ${JSON.stringify(maxLength)}`,
    );
  }
  const tolerance = values.tolerance;
  if (tolerance !== undefined && !(Number(tolerance) > 0 && Number.isFinite(Number(tolerance)))) {
    throw new InvalidArgumentError(`Expected --tolerance to be a positive number, got ${JSON.stringify(tolerance)}`);
  }
  const { quantize, weights } = values;
  if (quantize !== undefined && quantize !== 'int8')
    throw new InvalidArgumentError(
      `Expected --quantize to be int8, got ${JSON.stringify(quantize)}` +
        (quantize === 'int8-fast'
          ? ' (int8-fast is gone: int8 now quantizes every encoder layer, and runs faster)'
          : ''),
    );
  if (weights !== undefined && weights !== 'float32' && weights !== 'float16')
    throw new InvalidArgumentError(`Expected --weights to be float32 or float16, got ${JSON.stringify(weights)}`);
  const featureKind = values['feature-kind'];
  // mean:K names a hidden state (0 the embeddings); whether the model has layer K is the
  // exporter's to say, since only it reads the model's config.
  if (
    featureKind !== undefined &&
    featureKind !== 'pooler' &&
    featureKind !== 'pooler+mean' &&
    !/^mean:(0|[1-9][0-9]{0,2})$/.test(featureKind)
  )
    throw new InvalidArgumentError(
      `Expected --feature-kind to be pooler, pooler+mean or mean:K (K a layer, 0 the embeddings), got ${JSON.stringify(featureKind)}`,
    );
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
  const args = ['-m', 'bertgate_export', modelDir, bundleDir];
  if (maxLength !== undefined) args.push('--max-length', maxLength);
  if (tolerance !== undefined) args.push('--tolerance', tolerance);
  if (quantize !== undefined) args.push('--quantize', quantize);
  if (weights !== undefined) args.push('--weights', weights);
  if (values.features) args.push('--features');
  if (featureKind !== undefined) args.push('--feature-kind', featureKind);
  // The tool's stderr is shown as it comes and kept: its own refusals are one line, which
  // becomes the error's message.
  let stderr = '';
  const code = await new Promise<number>((done, reject) => {
    const child = spawn(python, args, { env, stdio: ['ignore', 'inherit', 'pipe'] });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
      process.stderr.write(chunk);
    });
    child.on('error', reject);
    child.on('close', (status, signal) => done(status ?? (signal ? 1 : 0)));
  });
  if (code !== 0) {
    const refusal = /^bertgate_export: (.*)$/m.exec(stderr)?.[1];
    throw new ExportError(
      refusal ?? `the export tool (${python} -m bertgate_export) failed with exit code ${code}; its output is above`,
    );
  }
  return 0;
}

/**
 * The directories, checked before any Python runs: the model directory must hold a
 * save_pretrained model, and the bundle goes to a new or empty directory other than it (an
 * export over an old bundle would leave its calibration.json applied to another model).
 */
function checkDirs(model: string, bundle: string): [string, string] {
  const modelDir = resolve(model);
  const bundleDir = resolve(bundle);
  let real: string;
  try {
    real = realpathSync(modelDir);
    if (!statSync(real).isDirectory()) throw new Error('not a directory');
  } catch {
    throw new InvalidArgumentError(`HF_MODEL_DIR ${modelDir} is not a directory`);
  }
  let entries: string[] | undefined;
  try {
    entries = readdirSync(bundleDir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR') throw new InvalidArgumentError(`BUNDLE_DIR ${bundleDir} is a file, not a directory`);
    if (code !== 'ENOENT') throw new InvalidArgumentError(`BUNDLE_DIR ${bundleDir} cannot be read (${code})`);
  }
  if (entries !== undefined && realpathSync(bundleDir) === real) {
    throw new InvalidArgumentError(`BUNDLE_DIR is HF_MODEL_DIR (${modelDir}); give the bundle a directory of its own`);
  }
  if (entries !== undefined && entries.length > 0) {
    throw new InvalidArgumentError(
      `BUNDLE_DIR ${bundleDir} is not empty (${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', ...' : ''}): ` +
        'export into a new or empty directory, so no file of an older bundle (calibration.json) stays behind',
    );
  }
  return [modelDir, bundleDir];
}
