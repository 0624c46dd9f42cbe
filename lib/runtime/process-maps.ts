// What this process has loaded already, read from /proc/self/maps: the one truth every thread
// shares. A worker_thread has JS state of its own (its own copy of open.ts's cache, and with
// BERTGATE_ADDON possibly another copy of the addon, with native state of its own), so neither
// can say whether some other thread has put a libtorch or an addon into the process.

import { readFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';

export interface LoadedNative {
  /** The directory of the libc10.so mapped into the process, or null before any libtorch loaded. */
  libtorchLibDir: string | null;
  /** Every bertgate addon (bertgate*.node) mapped into the process. */
  addons: string[];
}

/** Mapped file paths are as the loader opened them: callers compare real paths (lib/libtorch.ts resolves links). */
export function loadedNative(maps = '/proc/self/maps'): LoadedNative {
  let text: string;
  try {
    text = readFileSync(maps, 'utf8');
  } catch {
    return { libtorchLibDir: null, addons: [] }; // not Linux's procfs: nothing to learn
  }
  let libtorchLibDir: string | null = null;
  const addons = new Set<string>();
  for (const line of text.split('\n')) {
    const slash = line.indexOf('/');
    if (slash < 0) continue;
    const path = line.slice(slash).replace(/ \(deleted\)$/, '');
    const name = basename(path);
    if (name === 'libc10.so' && libtorchLibDir === null) libtorchLibDir = dirname(path);
    else if (name.startsWith('bertgate') && name.endsWith('.node')) addons.add(path);
  }
  return { libtorchLibDir, addons: [...addons] };
}
