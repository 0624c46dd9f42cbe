/**
 * Which native addon this process loads:
 *   1. BERTGATE_ADDON, a .node file (tests, sanitizer builds), when set: only it;
 *   2. otherwise node-gyp-build's choice for the package directory: build/Release (a source
 *      build: a checkout, or `npx bertgate build`), then prebuilds/<platform>-<arch>/ (the
 *      prebuild shipped in the package, prebuildify's layout, chosen by its tags: N-API,
 *      glibc). node-gyp-build also honours BERTGATE_PREBUILD (a directory to look in instead).
 * The engines (engines.json and the libraries it lists) always sit beside the addon.
 * No N-API, no libtorch here.
 */

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative, resolve, sep } from 'node:path';

export type AddonSource = 'BERTGATE_ADDON' | 'build' | 'prebuild';

export interface AddonChoice {
  /** The addon to load, or undefined with `problem` saying why there is none. */
  path: string | undefined;
  source: AddonSource | undefined;
  problem: string | undefined;
}

interface NodeGypBuild {
  path(dir: string): string;
}

const nodeGypBuild = createRequire(import.meta.url)('node-gyp-build') as NodeGypBuild;

/** The prebuild directory for this platform: prebuilds/linux-x64 on the only one we ship. */
export function prebuildDir(root: string, platform = process.platform, arch = process.arch): string {
  return join(root, 'prebuilds', `${platform}-${arch}`);
}

export function chooseAddon(root: string, env: NodeJS.ProcessEnv = process.env): AddonChoice {
  const given = env['BERTGATE_ADDON'];
  if (given) {
    // An explicit choice is never silently replaced by another binary. Relative to the working
    // directory, as a shell user means it.
    const override = resolve(given);
    const problem = existsSync(override) ? undefined : `BERTGATE_ADDON names ${override}, which does not exist`;
    return { path: problem ? undefined : override, source: 'BERTGATE_ADDON', problem };
  }
  let path: string;
  try {
    // node-gyp-build answers relative to BERTGATE_PREBUILD when that is relative.
    path = resolve(nodeGypBuild.path(root));
  } catch (error) {
    // node-gyp-build names the platform tags it looked for and the directory.
    return { path: undefined, source: undefined, problem: (error as Error).message.trim() };
  }
  const inBuild = !relative(join(root, 'build'), path).startsWith('..' + sep);
  return { path, source: inBuild ? 'build' : 'prebuild', problem: undefined };
}
