// Paths the build and test scripts share.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const BUILD_DIR = join(ROOT, 'build');
export const VENV_PYTHON = join(ROOT, '.venv', 'bin', 'python');
