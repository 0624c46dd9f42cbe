// engines.json: the list of engine libraries beside an addon, with what each was built
// against and its SHA-256, so the run time (lib/engines.ts) can choose one without loading
// any and refuse a file that changed. Every build writes it: build-native.mjs (cmake-js),
// check-gyp-build.mjs (node-gyp) and prebuilds.mjs (the whole matrix).
import { createHash } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const MANIFEST = 'engines.json';

/**
 * `engines`: [{ file, torchVersion: 'X.Y.Z', flavour: 'cuda' | 'cpu' }], files in `dir`.
 * Written in the order given: lib/engines.ts keeps it for equal fits.
 */
export function writeEngineManifest(dir, engines) {
  const entries = engines.map(({ file, torchVersion, flavour }) => {
    const bytes = readFileSync(join(dir, file));
    return {
      file,
      torch: torchVersion.split('.').slice(0, 2).join('.'),
      builtAgainst: torchVersion,
      flavour,
      cxx11Abi: true,
      bytes: statSync(join(dir, file)).size,
      sha256: createHash('sha256').update(bytes).digest('hex'),
    };
  });
  writeFileSync(join(dir, MANIFEST), JSON.stringify({ version: 1, engines: entries }, null, 2) + '\n');
  return entries;
}

/** The engine name CMakeLists.txt and binding.gyp give the engine for `torchVersion`. */
export function engineFileName(torchVersion, flavour) {
  const [major, minor] = torchVersion.split('.');
  return `libbertgate_engine.torch-${major}.${minor}.${flavour}.so`;
}
