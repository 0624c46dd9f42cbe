/**
 * Which native addon this process loads, in a fixed order (the one node-gyp-build uses, so a
 * local build always beats a shipped binary):
 *   1. BERTGATE_ADDON, a .node file (tests, sanitizer builds);
 *   2. build/Release/bertgate.node, a source build (a checkout, or an install that compiled);
 *   3. prebuilds/<platform>-<arch>/bertgate.glibc.node, the prebuild shipped in the
 *      package (`npm run prebuilds`, prebuildify --napi --tag-libc --name bertgate).
 * The engine library (libbertgate_engine.so) always sits beside the addon it belongs to.
 * No N-API, no libtorch here: scripts/install.mjs uses it to decide whether to compile.
 */

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

export const ADDON_FILE = 'bertgate.node';
export const ENGINE_FILE = 'libbertgate_engine.so';
/** prebuildify's name for an N-API build (no ABI tag) for glibc: <name>.<libc>.node. */
export const PREBUILD_FILE = 'bertgate.glibc.node';

export type AddonSource = 'BERTGATE_ADDON' | 'build' | 'prebuild';

export interface AddonCandidate {
  source: AddonSource;
  path: string;
  /** Why this candidate cannot be used, or undefined when it can. */
  problem: string | undefined;
}

/** The prebuild directory for this platform: prebuilds/linux-x64 on the only one we ship. */
export function prebuildDir(root: string, platform = process.platform, arch = process.arch): string {
  return join(root, 'prebuilds', `${platform}-${arch}`);
}

/** glibc or not: the prebuilds link against glibc's libstdc++ ABI, like libtorch's wheels. */
function isGlibc(): boolean {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return typeof header?.glibcVersionRuntime === 'string';
}

/** Every place looked at, in order, each with why it does not fit (or undefined). */
export function addonCandidates(root: string, env: NodeJS.ProcessEnv = process.env): AddonCandidate[] {
  const out: AddonCandidate[] = [];
  const override = env['BERTGATE_ADDON'];
  if (override) {
    out.push({ source: 'BERTGATE_ADDON', path: override, problem: missing(override, true) });
    return out; // an explicit choice is never silently replaced by another binary
  }
  const built = join(root, 'build', 'Release', ADDON_FILE);
  out.push({ source: 'build', path: built, problem: missing(built) });
  const prebuilt = join(prebuildDir(root), PREBUILD_FILE);
  let problem = missing(prebuilt);
  if (!problem && !isGlibc()) problem = 'this C library is not glibc; the prebuilds are for glibc';
  out.push({ source: 'prebuild', path: prebuilt, problem });
  return out;
}

function missing(addon: string, engineOptional = false): string | undefined {
  if (!existsSync(addon)) return `${addon} does not exist`;
  const engine = join(dirname(addon), ENGINE_FILE);
  // BERTGATE_ADDON may name an addon whose engine is elsewhere; the runtime reports that later.
  if (!engineOptional && !existsSync(engine)) return `${engine} (its engine library) does not exist`;
  return undefined;
}

/** The first usable candidate, or undefined with the whole list for the error message. */
export function pickAddon(
  root: string,
  env: NodeJS.ProcessEnv = process.env,
): { chosen: AddonCandidate | undefined; candidates: AddonCandidate[] } {
  const candidates = addonCandidates(root, env);
  return { chosen: candidates.find((c) => c.problem === undefined), candidates };
}
