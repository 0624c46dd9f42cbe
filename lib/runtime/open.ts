/**
 * Opens the runtime: loads the addon, finds libtorch, chooses the engine that fits it,
 * preloads libtorch and opens the engine, once per process. Everything here is planned from
 * the files (runtime/libtorch.ts, engines.ts, addon-path.ts) before anything is loaded.
 */

import { isMainThread } from 'node:worker_threads';
import { existsSync, realpathSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

import type { NativeAddon } from '../binding.js';
import { RuntimeLoadError } from '../errors.js';
import { chooseAddon, prebuildDir } from './addon-path.js';
import {
  MKL_SHIM,
  chooseEngine,
  describeSupport,
  minorOf,
  noEngineError,
  readEngines,
  verifyEngine,
  type EngineCandidate,
  type EngineChoice,
  type LibtorchTraits,
} from './engines.js';
import {
  cudaDecision,
  findLibtorch,
  formatSteps,
  readCxx11Abi,
  type LibtorchLocation,
  type LookupResult,
  type LookupStep,
} from './libtorch.js';
import { PACKAGE_ROOT } from './package-root.js';
import { engineSwitches } from './engine-switches.js';
import { loadedNative } from './process-maps.js';

let addon: { native: NativeAddon; path: string } | undefined;

// What every bertgate addon exports: a module without one of them is another package's.
const ADDON_FUNCTIONS = ['openRuntime', 'quiesce', 'buildInfo', 'EngineHandle'] as const satisfies ReadonlyArray<
  keyof NativeAddon
>;

/** The addon alone: it has no libtorch dependency, so this works even where libtorch is missing. */
export function loadAddon(): { native: NativeAddon; path: string } {
  if (addon) return addon;
  const choice = chooseAddon(PACKAGE_ROOT);
  if (!choice.path) {
    throw new RuntimeLoadError(
      'ERR_ADDON_LOAD',
      `the native addon was not found: ${choice.problem}\n` +
        'Reinstall bertgate for this platform (linux-x64, glibc), run "npm run build:native" in a checkout, ' +
        'or build it in the installed package with "npx bertgate build".',
    );
  }
  const path = choice.path;
  let native: NativeAddon;
  try {
    // dlopen, never require(): a path given in BERTGATE_ADDON is a file, not a module name, and
    // whatever it names is loaded as a native module, never run as JavaScript.
    const module = { exports: {} as NativeAddon };
    process.dlopen(module, path);
    native = module.exports;
  } catch (error) {
    const message = (error as Error).message;
    // The prebuilds are built on Debian 12 (glibc 2.36) and need glibc 2.34 (dlopen moved into libc).
    const glibc = /GLIBC_\d/.test(message)
      ? ` This system's glibc is ${glibcVersion() ?? 'unknown'}; the prebuilt addon needs 2.34 or later: ` +
        'build bertgate here instead (npx bertgate build).'
      : '';
    throw new RuntimeLoadError('ERR_ADDON_LOAD', `the native addon at ${path} failed to load: ${message}${glibc}`, {
      cause: error,
    });
  }
  // Another package's N-API module loads just as well; using it would fail untyped, and the
  // exit hook below would throw on the way out.
  const missing = ADDON_FUNCTIONS.filter(
    (name) => typeof (native as unknown as Record<string, unknown>)[name] !== 'function',
  );
  if (missing.length > 0) {
    throw new RuntimeLoadError(
      'ERR_ADDON_LOAD',
      `${path}${choice.source === 'BERTGATE_ADDON' ? ' (named by BERTGATE_ADDON)' : ''} is a native module, ` +
        `but not bertgate's addon: it has no ${missing.join(', ')}`,
    );
  }
  // process.exit() skips the addon's cleanup hooks and runs C exit(), whose static destructors
  // would pull libtorch out from under a forward pass: stop the native workers first. Only on
  // the main thread, since the workers are process-wide and a worker_thread's exit is not ours.
  if (isMainThread) process.once('exit', () => native.quiesce());
  addon = { native, path };
  return addon;
}

function glibcVersion(): string | undefined {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return header?.glibcVersionRuntime;
}

export interface Runtime {
  addon: NativeAddon;
  addonPath: string;
  libtorch: LibtorchLocation;
  steps: LookupStep[];
  cuda: { loaded: boolean; reason: string };
  engine: EngineChoice & { chosen: EngineCandidate };
  /**
   * BERTGATE_MKL_ANY_CPU=1: the shim that answers MKL's vendor check (native/shim/mkl_any_cpu.cpp),
   * loaded before libtorch; null without it.
   */
  mklAnyCpu: string | null;
}

/** What a lookup and an engine choice found, before anything of libtorch is loaded. */
interface Plan extends Omit<Runtime, 'cuda'> {
  cudaDecision: { load: boolean; reason: string };
}

// The environment the lookup and the choice read: when it changes, they are made again.
const PLAN_INPUTS = [
  'LIBTORCH',
  'BERTGATE_PYTHON',
  'VIRTUAL_ENV',
  'PATH',
  'BERTGATE_CUDA',
  'BERTGATE_ENGINE',
  'BERTGATE_MKL_ANY_CPU',
] as const;
// A copy of the whole environment (the lookup runs Python with it), taken when a call is made.
export type PlanEnv = Readonly<NodeJS.ProcessEnv>;
const planKey = (env: PlanEnv): string => JSON.stringify(PLAN_INPUTS.map((name) => env[name] ?? null));

let opened: { key: string; env: PlanEnv; runtime: Promise<Runtime> } | undefined;

/**
 * Finds libtorch, chooses the engine that fits it, preloads libtorch and opens the engine.
 * Once per process: later calls share the first runtime, unless the lookup's environment has
 * changed and now finds another libtorch or engine, which is refused (ERR_LIBTORCH_CONFLICT):
 * a process holds one libtorch. Each call works with the environment as it was when it was
 * made, even while an earlier call is still opening. `lookup`: findLibtorch's answer for
 * `env`, when the caller has it already (doctor), so that a slow Python is asked once.
 */
export function openRuntime(env: PlanEnv = { ...process.env }, lookup?: LookupResult): Promise<Runtime> {
  const key = planKey(env);
  const current = opened;
  if (!current) {
    const runtime = plan(env, lookup, true).then(open);
    opened = { key, env, runtime };
    // A fixed environment may succeed on the next try.
    runtime.catch(() => {
      if (opened?.runtime === runtime) opened = undefined;
    });
    return runtime;
  }
  if (current.key === key) return current.runtime;
  return current.runtime.then(
    async (first) => {
      const next = await plan(env, lookup, false);
      if (next.mklAnyCpu !== first.mklAnyCpu && next.libtorch.dir === first.libtorch.dir) {
        throw new RuntimeLoadError(
          'ERR_LIBTORCH_CONFLICT',
          `this process loaded libtorch ${first.mklAnyCpu ? 'with' : 'without'} BERTGATE_MKL_ANY_CPU=1, which is ` +
            'read once, before libtorch loads: load this model in another process, or restore BERTGATE_MKL_ANY_CPU ' +
            'as the first load saw it',
        );
      }
      if (next.libtorch.dir === first.libtorch.dir && next.engine.chosen.path === first.engine.chosen.path) {
        return first;
      }
      const changed = PLAN_INPUTS.filter((name) => current.env[name] !== env[name]).join(', ');
      const sameLibtorch = next.libtorch.dir === first.libtorch.dir;
      throw new RuntimeLoadError(
        'ERR_LIBTORCH_CONFLICT',
        `this process already runs libtorch ${first.libtorch.version} from ${first.libtorch.dir} with the engine ` +
          `${first.engine.chosen.file}; ` +
          (sameLibtorch
            ? `with ${changed} changed since, the same libtorch would need the engine ${next.engine.chosen.file}. `
            : `with ${changed} changed since, the lookup finds libtorch ${next.libtorch.version ?? '(unknown version)'} ` +
              `at ${next.libtorch.dir} (via ${next.libtorch.source}), which needs ${next.engine.chosen.file}. `) +
          `One process holds one libtorch and one engine: load this model in another process, or restore ${changed} ` +
          'as the first load saw it.',
      );
    },
    // The first attempt failed (and was forgotten): this environment gets its own.
    () => openRuntime(env, lookup),
  );
}

/** `firstHere`: this thread has no runtime yet (another thread may have loaded libtorch). */
async function plan(env: PlanEnv, lookup: LookupResult | undefined, firstHere: boolean): Promise<Plan> {
  const { native, path } = loadAddon();
  const addonDir = dirname(path);
  const engines = readEngines(addonDir);
  const { location, steps } = await inProcessLibtorch(env, path, lookup ?? (await findLibtorch(env)), firstHere);
  if (!location) {
    throw new RuntimeLoadError(
      'ERR_LIBTORCH_NOT_FOUND',
      `libtorch was not found. Looked at, in order:\n${formatSteps(steps)}\n` +
        `Install torch (bertgate has engines for ${describeSupport(engines)}) into the active Python, ` +
        'or set LIBTORCH to a libtorch directory.',
    );
  }
  const traits = { ...location, cxx11Abi: await readCxx11Abi(location.dir) };
  const decision = cudaDecision(location, env);
  const engine = chooseEngine(engines, addonDir, traits, decision.load, env);
  if (!engine.chosen) {
    // No engine here fits the libtorch this env finds; but if the process holds another one, that is the news.
    const held = loadedNative().libtorchLibDir;
    const dir = c10Dir(location);
    if (held !== null && dir !== undefined && held !== dir) throw libtorchConflict(held, location);
    throw noEngineError(engine, traits, location.source, env, shadowedPrebuilds(path, traits));
  }
  return {
    addon: native,
    addonPath: path,
    libtorch: location,
    steps,
    cudaDecision: decision,
    engine: engine as Plan['engine'],
    mklAnyCpu: engineSwitches(env).mklAnyCpu ? mklShim(engine.chosen.path) : null,
  };
}

async function open(plan: Plan): Promise<Runtime> {
  const { addon: native, libtorch: location, cudaDecision: decision, engine } = plan;
  const chosen = engine.chosen;
  await verifyEngine(chosen);
  // The CUDA flavour links libc10_cuda (streams, guards): small, and loadable without a GPU,
  // unlike the rest of libtorch's CUDA half.
  const cpuSet =
    chosen.flavour === 'cuda' && location.c10Cuda ? withC10Cuda(location.preload, location.c10Cuda) : location.preload;
  let cuda = { loaded: false, reason: decision.reason };
  if (decision.load) {
    try {
      await native.openRuntime([...cpuSet, ...location.cudaPreload], chosen.path, plan.mklAnyCpu ?? '');
      cuda = { loaded: true, reason: decision.reason };
    } catch (error) {
      if ((error as { code?: string }).code === 'ERR_LIBTORCH_CONFLICT') throw conflict(error);
      // The CPU half may still load; CUDA requests will then say why CUDA is missing.
      cuda = { loaded: false, reason: `loading libtorch's CUDA libraries failed: ${(error as Error).message}` };
    }
  }
  if (!cuda.loaded) {
    try {
      await native.openRuntime(cpuSet, chosen.path, plan.mklAnyCpu ?? '');
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === 'ERR_LIBTORCH_CONFLICT') throw conflict(error);
      if (code === 'ERR_ENGINE_LOAD') {
        const message = (error as Error).message;
        throw new RuntimeLoadError(
          'ERR_ENGINE_LOAD',
          // The MKL shim's own failure names the shim and the way out already.
          message.startsWith('BERTGATE_MKL_ANY_CPU') ? message : `opening the engine ${chosen.path} failed: ${message}`,
          {
            cause: error,
          },
        );
      }
      throw new RuntimeLoadError(
        'ERR_LIBTORCH_LOAD',
        `opening libtorch from ${location.dir} failed: ${(error as Error).message}. ` +
          `Its libraries need ${location.dir}/lib and the CUDA runtime libraries (libcudart, libcupti of the ` +
          'nvidia-cuda-runtime and nvidia-cuda-cupti wheels) beside it or in ../nvidia/*/lib.',
        { cause: error },
      );
    }
  }
  const built = native.buildInfo().engine;
  if (!built || minorOf(built.torchVersion) !== chosen.torch || built.cudaKernels !== (chosen.flavour === 'cuda')) {
    throw new RuntimeLoadError(
      'ERR_ENGINE_LOAD',
      `${chosen.path} says it was built for torch ${built?.torchVersion} ` +
        `(${built?.cudaKernels ? 'cuda' : 'cpu'}), but engines.json lists it for torch ${chosen.torch} (${chosen.flavour})`,
    );
  }
  return {
    addon: plan.addon,
    addonPath: plan.addonPath,
    libtorch: plan.libtorch,
    steps: plan.steps,
    engine: plan.engine,
    mklAnyCpu: plan.mklAnyCpu,
    cuda,
  };
}

/** The native refusal, which says what is loaded and what was asked, made a typed error. */
function conflict(error: unknown): RuntimeLoadError {
  return new RuntimeLoadError(
    'ERR_LIBTORCH_CONFLICT',
    `${(error as Error).message}. Load this model in another process (a worker_thread shares this one's libtorch).`,
    { cause: error },
  );
}

/**
 * A source build (build/Release) wins over the prebuilds; when none of its engines fits but a
 * prebuilt one would, the error says so, and how to get it back.
 */
function shadowedPrebuilds(addonPath: string, libtorch: LibtorchTraits): string {
  if (chooseAddon(PACKAGE_ROOT, {}).source !== 'build' || dirname(addonPath) !== join(PACKAGE_ROOT, 'build', 'Release'))
    return '';
  const prebuilt = prebuildDir(PACKAGE_ROOT);
  try {
    const fits = chooseEngine(readEngines(prebuilt), prebuilt, libtorch, false, {}).chosen;
    return fits
      ? `\nThe prebuilt ${fits.file} in ${prebuilt} would fit, but the source build in ${dirname(addonPath)} comes ` +
          `first: remove ${join(PACKAGE_ROOT, 'build')} to use the prebuilds.`
      : '';
  } catch {
    return '';
  }
}

/** libc10_cuda.so goes right after libc10.so, which it needs. */
function withC10Cuda(preload: string[], c10Cuda: string): string[] {
  const at = preload.findIndex((path) => path.endsWith('/libc10.so'));
  return [...preload.slice(0, at + 1), c10Cuda, ...preload.slice(at + 1)];
}

/** The MKL shim every engine build leaves beside its engines (CMakeLists.txt), or a RuntimeLoadError. */
function mklShim(enginePath: string): string {
  const shim = join(dirname(enginePath), MKL_SHIM);
  if (!existsSync(shim)) {
    throw new RuntimeLoadError(
      'ERR_ENGINE_LOAD',
      `BERTGATE_MKL_ANY_CPU=1 needs ${shim}, which every engine build makes beside its engines, but it is not ` +
        'there: rebuild (npx bertgate build), or unset BERTGATE_MKL_ANY_CPU',
    );
  }
  return shim;
}

/**
 * The lookup, held to what the process has loaded already (another thread's load included):
 * one libtorch and one addon per process. A thread whose environment finds no libtorch (a
 * worker given a small `env`) gets the process's; one that finds another, or that loaded
 * another copy of the addon (BERTGATE_ADDON), is refused before anything of it loads.
 */
async function inProcessLibtorch(
  env: PlanEnv,
  addonPath: string,
  found: LookupResult,
  firstHere: boolean,
): Promise<LookupResult> {
  const loaded = loadedNative();
  if (loaded.libtorchLibDir === null) return found;
  const mine = realpathSync(addonPath);
  const other = loaded.addons.find((addon) => addon !== mine);
  if (other) {
    throw new RuntimeLoadError(
      'ERR_LIBTORCH_CONFLICT',
      `this process already runs libtorch from ${loaded.libtorchLibDir} through the bertgate addon ${other}; this ` +
        `thread's environment chose the addon ${mine} (BERTGATE_ADDON), whose engines cannot share it: one process ` +
        'holds one addon and one libtorch, so load this model in another process or use the same BERTGATE_ADDON',
    );
  }
  if (!found.location) return findLibtorch({ ...env, LIBTORCH: dirname(loaded.libtorchLibDir) });
  // A thread that opened its runtime already says more about a change of its own (openRuntime).
  const dir = c10Dir(found.location);
  if (firstHere && dir !== undefined && dir !== loaded.libtorchLibDir) {
    throw libtorchConflict(loaded.libtorchLibDir, found.location);
  }
  return found;
}

/** The real directory of the libc10.so `location` would load (the process's maps name real paths). */
function c10Dir(location: LibtorchLocation): string | undefined {
  const c10 = location.preload.find((p) => basename(p) === 'libc10.so');
  return c10 === undefined ? undefined : dirname(realpathSync(c10));
}

function libtorchConflict(held: string, found: LibtorchLocation): RuntimeLoadError {
  return new RuntimeLoadError(
    'ERR_LIBTORCH_CONFLICT',
    `this process already runs the libtorch in ${held}; this thread's environment finds ` +
      `libtorch ${found.version ?? ''} in ${found.dir} (via ${found.source}). One process ` +
      'holds one libtorch: load this model in another process, or let this thread find the same libtorch ' +
      `(LIBTORCH=${dirname(held)})`,
  );
}
