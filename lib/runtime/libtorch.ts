/**
 * Where libtorch comes from, decided at run time in a fixed, documented order:
 *
 *   1. `LIBTORCH`: a directory with `include/` and `lib/` (a libtorch distribution, or the
 *      `torch` folder of a pip install). When set, it is the only place looked at.
 *   2. The `torch` package of a Python: `BERTGATE_PYTHON` when set (and then only it), else
 *      the active virtualenv's python (`VIRTUAL_ENV`), else `python3` on PATH.
 *   3. The system: /usr/local/libtorch, /opt/libtorch, /usr/local, /usr.
 *
 * The result says which libraries to preload, in order, so that the engine library's
 * dependencies (libc10.so, libtorch_cpu.so) resolve to this copy: a pip torch's libraries
 * have no RUNPATH to the nvidia-* wheels they need, so those are preloaded first, as
 * torch/__init__.py itself does.
 */

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';

import { elfProblem, neededLibraries, readSection } from './elf.js';
import { RuntimeLoadError } from '../errors.js';

const run = promisify(execFile);

export type LookupSource = 'LIBTORCH' | 'python' | 'system';

export interface LookupStep {
  source: LookupSource;
  /** What was looked at: a directory, or a python executable. */
  candidate: string;
  outcome: 'found' | 'not-found' | 'unusable';
  detail: string;
}

export interface LibtorchLocation {
  source: LookupSource;
  /** Holds include/ and lib/; symbolic links resolved, so one libtorch has one name. */
  dir: string;
  /**
   * major.minor.patch of the libraries themselves (libtorch_cpu.so's own version string),
   * checked against the headers or version file; null when neither says.
   */
  version: string | null;
  /** CPU runtime, in load order: dependencies, then libc10.so and libtorch_cpu.so. */
  preload: string[];
  /** What CUDA additionally needs, in load order; empty for a CPU-only libtorch. */
  cudaPreload: string[];
  /** libc10_cuda.so, which an engine built with CUDA kernels links; null for a CPU libtorch. */
  c10Cuda: string | null;
  /** The CUDA runtime libc10_cuda.so links ("libcudart.so.13"); null for a CPU libtorch or when unreadable. */
  cudaRuntime: string | null;
  /** Directories of libtorch's own dependencies (linking and running the engine tests). */
  dependencyDirs: string[];
}

export interface LookupResult {
  location: LibtorchLocation | null;
  steps: LookupStep[];
}

const SYSTEM_DIRS = ['/usr/local/libtorch', '/opt/libtorch', '/usr/local', '/usr'];
const PYTHON_TIMEOUT_MS = 20_000;

/** Why a libtorch cannot be used, naming the file: thrown by the readers below, a step's detail. */
class Unusable extends Error {}

/** Whether `path` exists (a dangling link does not): a file that is not regular is Unusable. */
function regularFile(path: string, name = path): boolean {
  let stats;
  try {
    stats = statSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new Unusable(`${name} cannot be read (${(error as NodeJS.ErrnoException).code})`);
  }
  // A directory would fail the read untyped, a FIFO or a device hang it.
  if (!stats.isFile()) throw new Unusable(`${name} is not a regular file`);
  return true;
}

/** The text of `path`, or null when it does not exist; unreadable or not a file: Unusable. */
function readText(path: string, name = path): string | null {
  if (!regularFile(path, name)) return null;
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new Unusable(`${name} cannot be read (${(error as NodeJS.ErrnoException).code})`);
  }
}

/** The entries of directory `path`, or null when it does not exist; anything else is Unusable. */
function entries(path: string): string[] | null {
  try {
    return readdirSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    throw new Unusable(code === 'ENOTDIR' ? `${path} is not a directory` : `${path} cannot be read (${code})`);
  }
}

// The nvidia-* wheel libraries, in the order torch/__init__.py preloads them (cublasLt before
// cublas, so cublas cannot pick up a system cublasLt). libtorch_cpu itself needs only the
// first group: the CUDA runtime and CUPTI, referenced by its profiler.
const NVIDIA_CPU_DEPS: Array<[string, string]> = [
  ['cuda_runtime', 'libcudart.so.'],
  ['cuda_cupti', 'libcupti.so.'],
];
const NVIDIA_CUDA_DEPS: Array<[string, string]> = [
  ['cublas', 'libcublasLt.so.'],
  ['cublas', 'libcublas.so.'],
  ['cudnn', 'libcudnn.so.'],
  ['cuda_nvrtc', 'libnvrtc.so.'],
  ['cufft', 'libcufft.so.'],
  ['curand', 'libcurand.so.'],
  ['nvjitlink', 'libnvJitLink.so.'],
  ['cusparse', 'libcusparse.so.'],
  ['cusparselt', 'libcusparseLt.so.'],
  ['cusolver', 'libcusolver.so.'],
  ['nccl', 'libnccl.so.'],
  ['nvshmem', 'libnvshmem_host.so.'],
  ['cufile', 'libcufile.so.'],
];

/**
 * Reads major.minor.patch from libtorch's headers (present in both layouts); without them (a
 * runtime-only copy of the libraries), from a pip torch's version.py or a libtorch
 * distribution's build-version file.
 */
function readVersion(dir: string): string | null {
  const header = join(dir, 'include', 'torch', 'headeronly', 'version.h');
  const text = readText(header, 'include/torch/headeronly/version.h');
  if (text !== null) {
    const part = (name: string): string | undefined =>
      new RegExp(`#define TORCH_VERSION_${name} (\\d+)`).exec(text)?.[1];
    const [major, minor, patch] = [part('MAJOR'), part('MINOR'), part('PATCH')];
    return major && minor && patch ? `${major}.${minor}.${patch}` : null;
  }
  for (const [file, pattern] of [
    ['version.py', /^__version__ = '(\d+\.\d+\.\d+)/m],
    ['build-version', /^(\d+\.\d+\.\d+)/],
  ] as const) {
    const text = readText(join(dir, file), file);
    if (text !== null) return pattern.exec(text)?.[1] ?? null;
  }
  return null;
}

/**
 * The torch release a libtorch_cpu.so was built as, read from the file (never loaded): its
 * read-only data holds the release as a string ("2.11.0"). `claimed` is what the directory's
 * version files say; when the library holds it, that is the answer. Otherwise the one string
 * of a torch 2.x-9.x release there, or null when there is not exactly one.
 */
export function readLibraryVersion(libtorchCpu: string, claimed: string | null): string | null {
  const rodata = readSection(libtorchCpu, '.rodata');
  if (!rodata) return null;
  if (claimed !== null && rodata.includes(`\0${claimed}\0`, 0, 'latin1')) return claimed;
  const releases = new Set<string>();
  for (const match of rodata.toString('latin1').matchAll(/\0([2-9]\.\d{1,3}\.\d{1,3})\0/g)) {
    releases.add(match[1] as string);
  }
  return releases.size === 1 ? ([...releases][0] as string) : null;
}

/**
 * Whether libtorch was built with the C++11 std::string ABI (all torch >= 2.7 wheels; older
 * or custom builds may differ). Its symbols say so. The addon must match, since strings
 * cross from it into the engine, and the engine must match libtorch.
 */
export async function readCxx11Abi(dir: string): Promise<boolean> {
  return (await readFile(join(dir, 'lib', 'libc10.so'))).includes('__cxx11');
}

function isLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

// A pip torch keeps its CUDA dependencies in sibling nvidia/<component>/lib folders, or in
// nvidia/cu<major>/lib since CUDA 13.
function nvidiaLibrary(sitePackages: string, folder: string, prefix: string): string | null {
  const nvidia = join(sitePackages, 'nvidia');
  const listed = entries(nvidia);
  if (listed === null) return null;
  const dirs = [join(nvidia, folder, 'lib')];
  for (const entry of listed) if (/^cu\d+$/.test(entry)) dirs.push(join(nvidia, entry, 'lib'));
  for (const dir of dirs) {
    const match = entries(dir)?.find((name) => name.startsWith(prefix) && /\.so\.\d+$/.test(name));
    if (match) return join(dir, match);
  }
  return null;
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * libc10.so names no release of its own, but a pip torch lists the SHA-256 of each of its
 * files in torch-<version>.dist-info/RECORD beside the torch folder: a libc10.so of another
 * release there (copied in, or left by an upgrade cut short) differs from it. Other layouts
 * have no such list, and the library's symbols are then all there is (dlopen checks them).
 */
function unrecordedLibrary(dir: string, version: string): string | null {
  if (basename(dir) !== 'torch') return null;
  const site = dirname(dir);
  const distInfo = (entries(site) ?? []).find(
    (name) => /^torch-(\d+\.\d+\.\d+)(\+[^/]*)?\.dist-info$/.exec(name)?.[1] === version,
  );
  if (distInfo === undefined) return null;
  const record = join(site, distInfo, 'RECORD');
  const lines = readText(record)?.split('\n') ?? [];
  for (const name of ['libc10.so', 'libc10_cuda.so']) {
    // torch/lib/libc10.so,sha256=<base64url digest>,<bytes>
    const listed = lines
      .find((line) => line.startsWith(`torch/lib/${name},sha256=`))
      ?.split(',')[1]
      ?.slice(7);
    const path = join(dir, 'lib', name);
    if (listed === undefined || !isFile(path)) continue;
    if (createHash('sha256').update(readFileSync(path)).digest('base64url') !== listed) {
      return (
        `lib/${name} is not the file torch ${version} installed (its SHA-256 differs from the one ${record} lists): ` +
        'files of two releases are mixed there; reinstall torch'
      );
    }
  }
  return null;
}

function describeLayout(dir: string, sitePackages: string[]): Omit<LibtorchLocation, 'source'> | string {
  const lib = join(dir, 'lib');
  for (const name of ['libc10.so', 'libtorch_cpu.so']) {
    if (!regularFile(join(lib, name), `lib/${name}`)) return `no lib/${name}`;
    // An empty or truncated library says nothing of its version or ABI, and a truncated one
    // kills the process that loads it (SIGBUS).
    const problem = elfProblem(join(lib, name));
    if (problem) return `lib/${name} ${problem}`;
  }
  // A version file can be left over from another release, or simply wrong; loading libraries
  // of one release with an engine for another can crash the process. The library decides.
  const claimed = readVersion(dir);
  const version = readLibraryVersion(join(lib, 'libtorch_cpu.so'), claimed);
  if (claimed !== null && version !== claimed) {
    return (
      `its ${versionSource(dir)} says torch ${claimed}, but lib/libtorch_cpu.so is ` +
      `${version === null ? 'of no torch release bertgate can read' : `torch ${version}`}: ` +
      'files of two releases are mixed there; reinstall torch'
    );
  }
  const mixed = version === null ? null : unrecordedLibrary(dir, version);
  if (mixed) return mixed;
  const deps = (list: Array<[string, string]>): string[] =>
    list
      .map(([folder, prefix]) =>
        sitePackages.map((site) => nvidiaLibrary(site, folder, prefix)).find((p) => p !== null),
      )
      .filter((p): p is string => p !== undefined && p !== null);
  const gomp = join(lib, 'libgomp.so.1');
  const preload = [
    ...deps(NVIDIA_CPU_DEPS),
    // libtorch_cpu needs libgomp.so.1 without a RUNPATH: use the copy the wheel ships.
    ...(existsSync(gomp) ? [gomp] : []),
    join(lib, 'libc10.so'),
    join(lib, 'libtorch_cpu.so'),
  ];
  const cuda = join(lib, 'libtorch_cuda.so');
  // libtorch_cuda.so brings libc10_cuda and the rest of its own folder along by itself.
  const cudaPreload = existsSync(cuda) ? [...deps(NVIDIA_CUDA_DEPS), cuda] : [];
  const dependencyDirs = [...new Set([...preload, ...cudaPreload].map((p) => dirname(p)))].filter((d) => d !== lib);
  const c10Cuda = join(lib, 'libc10_cuda.so');
  const hasC10Cuda = isFile(c10Cuda);
  return {
    dir,
    version,
    preload,
    cudaPreload,
    c10Cuda: hasC10Cuda ? c10Cuda : null,
    cudaRuntime: hasC10Cuda ? (neededLibraries(c10Cuda)?.find((n) => n.startsWith('libcudart.so')) ?? null) : null,
    dependencyDirs,
  };
}

/** Which of readVersion's sources the directory has: for messages. */
function versionSource(dir: string): string {
  if (existsSync(join(dir, 'include', 'torch', 'headeronly', 'version.h'))) return 'include/torch/headeronly/version.h';
  return existsSync(join(dir, 'version.py')) ? 'version.py' : 'build-version';
}

function inspect(source: LookupSource, given: string, steps: LookupStep[], via = given): LibtorchLocation | null {
  let dir: string;
  try {
    dir = realpathSync(given);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'ELOOP'
        ? 'is a loop of symbolic links'
        : code === 'ENOENT'
          ? 'does not exist'
          : `cannot be read (${code})`;
    const dangling = code === 'ENOENT' && isLink(given) ? ' (a symbolic link to nothing)' : '';
    steps.push({ source, candidate: via, outcome: 'not-found', detail: `${given} ${why}${dangling}` });
    return null;
  }
  // The nvidia-* wheels sit beside the torch folder as it was named: a linked torch folder
  // finds them beside the link or beside its target.
  let layout: ReturnType<typeof describeLayout>;
  try {
    layout = describeLayout(dir, [...new Set([dirname(given), dirname(dir)])]);
  } catch (error) {
    if (!(error instanceof Unusable)) throw error;
    layout = error.message;
  }
  if (typeof layout === 'string') {
    steps.push({ source, candidate: via, outcome: 'unusable', detail: `${dir}: ${layout}` });
    return null;
  }
  steps.push({
    source,
    candidate: via,
    outcome: 'found',
    detail: `${dir} (libtorch ${layout.version ?? 'of unknown version'})`,
  });
  return { source, ...layout };
}

// find_spec locates the package without importing it (importing torch takes seconds).
const FIND_TORCH =
  "import importlib.util as u; s = u.find_spec('torch'); print(s.submodule_search_locations[0] if s else '')";

async function torchOfPython(python: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<string | null> {
  const { stdout } = await run(python, ['-c', FIND_TORCH], {
    timeout: timeoutMs,
    // The lookup's environment: its PATH decides which python3 runs.
    env: { ...env, PYTHONNOUSERSITE: '' },
  });
  return stdout.trim() || null;
}

/** Why asking `python` failed, for a step's detail. */
function pythonFailure(python: string, error: unknown, timeoutMs: number): string {
  const e = error as NodeJS.ErrnoException & { killed?: boolean };
  if (e.code === 'ENOENT') return `${python}: not found`;
  if (e.killed) {
    return `${python} did not answer within ${timeoutMs / 1000} s and was stopped (it was asked: ${python} -c "${FIND_TORCH}")`;
  }
  return `${python}: ${e.message}`;
}

function pythonCandidates(env: NodeJS.ProcessEnv): string[] {
  if (env['BERTGATE_PYTHON']) return [env['BERTGATE_PYTHON']];
  const list: string[] = [];
  if (env['VIRTUAL_ENV']) list.push(join(env['VIRTUAL_ENV'], 'bin', 'python'));
  list.push('python3');
  return list;
}

/**
 * Walks the lookup order; the steps say what was tried, for errors and `bertgate doctor`.
 * `systemDirs` is the system step's list and `pythonTimeoutMs` how long a Python may take to
 * answer (parameters so tests can exercise those branches).
 */
export async function findLibtorch(
  env: NodeJS.ProcessEnv = process.env,
  systemDirs: readonly string[] = SYSTEM_DIRS,
  pythonTimeoutMs = PYTHON_TIMEOUT_MS,
): Promise<LookupResult> {
  const steps: LookupStep[] = [];
  const explicit = env['LIBTORCH'];
  if (explicit) return { location: inspect('LIBTORCH', explicit, steps), steps };

  for (const python of pythonCandidates(env)) {
    let dir: string | null;
    try {
      dir = await torchOfPython(python, env, pythonTimeoutMs);
    } catch (error) {
      const detail = pythonFailure(python, error, pythonTimeoutMs);
      steps.push({ source: 'python', candidate: python, outcome: 'not-found', detail });
      continue;
    }
    if (dir === null) {
      steps.push({
        source: 'python',
        candidate: python,
        outcome: 'not-found',
        detail: `${python} has no torch package`,
      });
      continue;
    }
    const location = inspect('python', dir, steps, python);
    if (location) return { location, steps };
  }
  if (env['BERTGATE_PYTHON']) return { location: null, steps };

  for (const dir of systemDirs) {
    if (!existsSync(join(dir, 'lib', 'libtorch_cpu.so'))) {
      steps.push({
        source: 'system',
        candidate: dir,
        outcome: 'not-found',
        detail: `${dir}/lib has no libtorch_cpu.so`,
      });
      continue;
    }
    const location = inspect('system', dir, steps);
    if (location) return { location, steps };
  }
  return { location: null, steps };
}

export function formatSteps(steps: LookupStep[]): string {
  return steps.map((s, i) => `  ${i + 1}. [${s.source}] ${s.outcome}: ${s.detail}`).join('\n');
}

/**
 * Whether to load libtorch's CUDA half. libtorch decides once per process whether CUDA
 * exists (the first question about CUDA fixes the answer), so this is settled before the
 * engine opens: `BERTGATE_CUDA=1` or `0` forces it; otherwise CUDA is loaded when this
 * libtorch has it and an NVIDIA driver is visible. Skipping it saves ~265 MB of resident
 * memory on machines without a GPU.
 */
export function cudaDecision(
  location: LibtorchLocation,
  env: NodeJS.ProcessEnv = process.env,
): { load: boolean; reason: string } {
  const forced = env['BERTGATE_CUDA'];
  if (forced !== undefined && forced !== '' && forced !== '0' && forced !== '1') {
    throw new RuntimeLoadError(
      'ERR_LIBTORCH_LOAD',
      `BERTGATE_CUDA is ${JSON.stringify(forced)}; expected "1" (load libtorch's CUDA half), "0" (do not), or unset (decide by the driver)`,
    );
  }
  if (location.cudaPreload.length === 0)
    return { load: false, reason: `the libtorch at ${location.dir} has no CUDA support` };
  if (forced === '0') return { load: false, reason: 'BERTGATE_CUDA=0' };
  if (forced === '1') return { load: true, reason: 'BERTGATE_CUDA=1' };
  if (existsSync('/proc/driver/nvidia/version') || existsSync('/dev/nvidiactl')) {
    return { load: true, reason: 'an NVIDIA driver is present' };
  }
  return {
    load: false,
    reason: 'no NVIDIA driver found (/proc/driver/nvidia/version); set BERTGATE_CUDA=1 to load CUDA anyway',
  };
}
