// Content stamps: a generated directory is rebuilt only when what generated it changed.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

function files(path) {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path)
    .filter((name) => name !== '__pycache__')
    .sort()
    .flatMap((name) => files(join(path, name)));
}

export function digest(paths) {
  const hash = createHash('sha256');
  for (const file of paths.flatMap(files)) hash.update(file).update(readFileSync(file));
  return hash.digest('hex');
}

/**
 * Runs `build` (and awaits it) unless `dir` holds a stamp equal to the digest of `inputs`;
 * the stamp is written only once the build succeeded.
 */
export async function buildIfStale(dir, inputs, build) {
  const stamp = join(dir, '.stamp');
  const want = digest(inputs);
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === want) return false;
  await build();
  writeFileSync(stamp, want);
  return true;
}
