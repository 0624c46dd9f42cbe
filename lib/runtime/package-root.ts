// The installed package (or checkout): the addon, its engines, the default model and the
// scripts are found from here. This file compiles to dist/lib/runtime/.
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
