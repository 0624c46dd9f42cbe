/**
 * Which engine library runs on the libtorch found. The addon is the same for every libtorch;
 * beside it, engines.json lists one engine per torch minor and flavour (written by every
 * build: scripts/engine-manifest.mjs). libtorch's C++ ABI drifts between minors, so an engine
 * fits only the minor it was built against, with the same std::string ABI; the CUDA flavour
 * also needs the libtorch's libc10_cuda.so. Among the engines that fit, the CUDA flavour is
 * preferred when libtorch's CUDA half is loaded and the CPU flavour otherwise;
 * `BERTGATE_ENGINE=cuda|cpu` insists on one. Nothing here loads a library.
 */

import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { elfProblem, neededLibraries } from './elf.js';
import { RuntimeLoadError } from '../errors.js';
import type { LibtorchLocation } from './libtorch.js';

export const ENGINE_MANIFEST = 'engines.json';
/** CMakeLists.txt's bertgate_mkl_any_cpu target, which every engine build leaves beside its engines. */
export const MKL_SHIM = 'libbertgate_mkl_any_cpu.so';
export type EngineFlavour = 'cuda' | 'cpu';

export interface EngineEntry {
  file: string;
  /** The torch minor it runs on: "2.11". */
  torch: string;
  /** The exact release whose headers it was compiled against: "2.11.0". */
  builtAgainst: string;
  flavour: EngineFlavour;
  cxx11Abi: boolean;
  bytes: number;
  sha256: string;
}

export interface EngineCandidate extends EngineEntry {
  path: string;
  /** Why it does not fit, or undefined when it does. */
  problem: string | undefined;
}

export interface EngineChoice {
  /** engines.json's path. */
  manifest: string;
  chosen: EngineCandidate | undefined;
  /** Every engine listed, in the manifest's order, each with why it fits or not. */
  candidates: EngineCandidate[];
  /** Why the chosen one was preferred over the others that fit. */
  reason: string;
}

/** What the choice needs to know of the libtorch found. */
export interface LibtorchTraits {
  dir: string;
  version: string | null;
  cxx11Abi: boolean;
  c10Cuda: LibtorchLocation['c10Cuda'];
  cudaRuntime: LibtorchLocation['cudaRuntime'];
}

// A file name in the engine's own directory: no path, no "." or "..", a shared library.
const ENGINE_FILE = /^[A-Za-z0-9_+-][A-Za-z0-9._+-]*\.so$/;

function engineLoadError(message: string, cause?: unknown): RuntimeLoadError {
  return new RuntimeLoadError('ERR_ENGINE_LOAD', message, cause === undefined ? undefined : { cause });
}

function isEntry(value: unknown): value is EngineEntry {
  const e = value as Record<string, unknown> | null;
  return (
    typeof e === 'object' &&
    e !== null &&
    typeof e['file'] === 'string' &&
    ENGINE_FILE.test(e['file']) &&
    typeof e['torch'] === 'string' &&
    /^\d+\.\d+$/.test(e['torch']) &&
    typeof e['builtAgainst'] === 'string' &&
    (e['flavour'] === 'cuda' || e['flavour'] === 'cpu') &&
    typeof e['cxx11Abi'] === 'boolean' &&
    typeof e['bytes'] === 'number' &&
    typeof e['sha256'] === 'string'
  );
}

/** The engines listed beside the addon in `addonDir`. */
export function readEngines(addonDir: string): EngineEntry[] {
  const manifest = join(addonDir, ENGINE_MANIFEST);
  if (!existsSync(manifest)) {
    throw engineLoadError(
      `${manifest} does not exist: the addon in ${addonDir} comes with no engine list. ` +
        'Rebuild (npm run build:native in a checkout, npx bertgate build in an installed package).',
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(manifest, 'utf8'));
  } catch (error) {
    throw engineLoadError(`${manifest} is not valid JSON: ${(error as Error).message}`, error);
  }
  const engines = (parsed as { engines?: unknown } | null)?.engines;
  if (!Array.isArray(engines) || !engines.every(isEntry)) {
    throw engineLoadError(
      `${manifest} is not an engine list (expected { "engines": [{ file, torch, flavour, ... }] })`,
    );
  }
  return engines;
}

/** "2.11" of "2.11.0", or null. */
export function minorOf(version: string | null): string | null {
  const match = version === null ? null : /^(\d+)\.(\d+)/.exec(version);
  return match ? `${match[1]}.${match[2]}` : null;
}

/** "2.11 (CUDA, CPU), 2.15 (CPU)": the torch minors engines exist for. */
export function describeSupport(entries: readonly EngineEntry[]): string {
  const byMinor = new Map<string, EngineFlavour[]>();
  for (const e of entries) byMinor.set(e.torch, [...(byMinor.get(e.torch) ?? []), e.flavour]);
  return [...byMinor]
    .map(([minor, flavours]) => `${minor} (${flavours.map((f) => f.toUpperCase()).join(', ')})`)
    .join(', ');
}

function problemWith(
  entry: EngineEntry,
  addonDir: string,
  libtorch: LibtorchTraits,
  forced: EngineFlavour | undefined,
): string | undefined {
  const minor = minorOf(libtorch.version);
  if (entry.torch !== minor) {
    return `built for torch ${entry.torch}; this libtorch is ${libtorch.version ?? 'of unknown version'}`;
  }
  if (entry.cxx11Abi !== libtorch.cxx11Abi) {
    return `built with the C++11 string ABI ${entry.cxx11Abi ? 'on' : 'off'}; this libtorch has it ${libtorch.cxx11Abi ? 'on' : 'off'}`;
  }
  if (forced !== undefined && entry.flavour !== forced)
    return `BERTGATE_ENGINE=${forced} asks for the ${forced} flavour`;
  if (entry.flavour === 'cuda' && libtorch.c10Cuda === null) {
    return `the CUDA flavour needs libc10_cuda.so, which ${join(libtorch.dir, 'lib')} lacks (a CPU-only libtorch)`;
  }
  if (entry.flavour === 'cuda' && libtorch.cudaRuntime !== null) {
    // A torch of the same minor built for another CUDA major (torch's own index has +cu126,
    // +cu128, ... builds) has a libc10_cuda.so too, but not the CUDA runtime this engine needs.
    const needs = neededLibraries(join(addonDir, entry.file))?.find((n) => n.startsWith('libcudart.so'));
    if (needs !== undefined && needs !== libtorch.cudaRuntime) {
      return `built against the CUDA runtime ${needs}; this libtorch uses ${libtorch.cudaRuntime}`;
    }
  }
  return undefined;
}

/**
 * Chooses among the engines in `addonDir` for `libtorch`. `cudaLoaded`: libtorch's CUDA half
 * is (to be) loaded, so the CUDA flavour can use a device. `env` is read for BERTGATE_ENGINE.
 */
export function chooseEngine(
  entries: readonly EngineEntry[],
  addonDir: string,
  libtorch: LibtorchTraits,
  cudaLoaded: boolean,
  env: NodeJS.ProcessEnv = process.env,
): EngineChoice {
  const manifest = join(addonDir, ENGINE_MANIFEST);
  const asked = env['BERTGATE_ENGINE'];
  if (asked !== undefined && asked !== '' && asked !== 'cuda' && asked !== 'cpu') {
    throw new RuntimeLoadError(
      'ERR_ENGINE_LOAD',
      `BERTGATE_ENGINE is ${JSON.stringify(asked)}; expected "cuda" or "cpu" (or unset: chosen by the CUDA decision)`,
    );
  }
  const forced = asked === 'cuda' || asked === 'cpu' ? asked : undefined;
  const candidates = entries.map((e) => ({
    ...e,
    path: join(addonDir, e.file),
    problem: problemWith(e, addonDir, libtorch, forced),
  }));
  const fitting = candidates.filter((c) => c.problem === undefined);
  const preferred: EngineFlavour = forced ?? (cudaLoaded ? 'cuda' : 'cpu');
  const chosen = fitting.find((c) => c.flavour === preferred) ?? fitting[0];
  let reason = '';
  if (chosen) {
    if (forced) reason = `BERTGATE_ENGINE=${forced}`;
    else if (chosen.flavour !== preferred) reason = `no ${preferred} flavour for torch ${chosen.torch} here`;
    else reason = cudaLoaded ? "libtorch's CUDA half is loaded" : "libtorch's CUDA half is not loaded";
  }
  return { manifest, chosen, candidates, reason };
}

/** The error for a libtorch no engine fits: what was found, what would fit, what to run. */
export function noEngineError(
  choice: EngineChoice,
  libtorch: LibtorchTraits,
  via: string,
  env: NodeJS.ProcessEnv = process.env,
  hint = '',
): RuntimeLoadError {
  const support = describeSupport(choice.candidates);
  const lines = choice.candidates.map((c) => `  ${c.file}: ${c.problem ?? 'fits'}`).join('\n');
  const forced = env['BERTGATE_ENGINE'];
  const minor = minorOf(libtorch.version);
  if ((forced === 'cuda' || forced === 'cpu') && choice.candidates.some((c) => c.torch === minor)) {
    // The version fits; the flavour the variable insists on does not.
    return new RuntimeLoadError(
      'ERR_ENGINE_LOAD',
      `BERTGATE_ENGINE=${forced} asks for the ${forced.toUpperCase()} engine, and none of those in ${choice.manifest} ` +
        `for torch ${minor} fits the libtorch at ${libtorch.dir}:\n${lines}\n` +
        'Unset BERTGATE_ENGINE to take the engine that fits' +
        (forced === 'cuda' ? ', or use a CUDA build of torch.' : '.'),
    );
  }
  return new RuntimeLoadError(
    'ERR_LIBTORCH_VERSION',
    `no bertgate engine fits the libtorch found at ${libtorch.dir} (via ${via}), which is ` +
      // An unreadable libtorch_cpu.so says nothing of its ABI either: claim none for it.
      (libtorch.version === null
        ? 'of unknown version and ABI (its libtorch_cpu.so could not be read as a libtorch). '
        : `${libtorch.version}${libtorch.cxx11Abi ? '' : ' with the pre-C++11 string ABI'}. `) +
      `The engines in ${choice.manifest} are for torch ${support || 'nothing'}:\n${lines}\n` +
      'Install one of those torch releases into the active Python (or point LIBTORCH or BERTGATE_PYTHON at one), ' +
      'or build an engine for this libtorch with: npx bertgate build' +
      hint,
  );
}

/**
 * Checks the chosen file against engines.json, and its own ELF tables, before anything loads
 * it: a truncated or corrupted shared library can crash the process where dlopen would not
 * notice, and a build cut short lists the size and digest of what it left.
 */
export async function verifyEngine(engine: EngineCandidate): Promise<void> {
  if (!existsSync(engine.path)) throw engineLoadError(`${engine.path} (listed in engines.json) does not exist`);
  // Reading a FIFO would wait forever, a directory fail untyped.
  if (!statSync(engine.path).isFile()) throw engineLoadError(`${engine.path} (listed in engines.json) is not a file`);
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(engine.path)) {
    bytes += (chunk as Buffer).length;
    hash.update(chunk as Buffer);
  }
  if (bytes !== engine.bytes) {
    throw engineLoadError(
      `${engine.path} is ${bytes} bytes, but engines.json lists ${engine.bytes}: the file is truncated or was replaced. ` +
        'Reinstall bertgate, or rebuild it (npx bertgate build).',
    );
  }
  const digest = hash.digest('hex');
  if (digest !== engine.sha256) {
    throw engineLoadError(
      `${engine.path} does not match the SHA-256 engines.json lists (${digest} against ${engine.sha256}): ` +
        'the file is corrupt or was replaced. Reinstall bertgate, or rebuild it (npx bertgate build).',
    );
  }
  const problem = elfProblem(engine.path);
  if (problem) {
    throw engineLoadError(`${engine.path} ${problem}. Reinstall bertgate, or rebuild it (npx bertgate build).`);
  }
}
