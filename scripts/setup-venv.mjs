// Creates .venv with the pinned Python requirements, or leaves it alone when it already
// matches requirements.txt (a stamp holds the file's hash).
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { ROOT, VENV_PYTHON, isMain } from './paths.mjs';
import { run } from './run.mjs';

export function setupVenv() {
  const requirements = join(ROOT, 'requirements.txt');
  const stamp = join(ROOT, '.venv', '.requirements.sha256');
  const want = createHash('sha256').update(readFileSync(requirements)).digest('hex');
  if (existsSync(VENV_PYTHON) && existsSync(stamp) && readFileSync(stamp, 'utf8') === want) return;
  const python = process.env.BERTGATE_SETUP_PYTHON ?? 'python3';
  console.log(`setting up .venv from requirements.txt with ${python} (torch is large; pip caches it)`);
  if (!existsSync(VENV_PYTHON)) run(python, ['-m', 'venv', join(ROOT, '.venv')]);
  run(VENV_PYTHON, ['-m', 'pip', 'install', '--disable-pip-version-check', '-r', requirements]);
  writeFileSync(stamp, want);
}

if (isMain(import.meta.url)) setupVenv();
