/**
 * The native boundary, typed in one place. native/addon/*.cpp implements exactly this; the
 * values passed in are already validated and normalised (see classifier.ts), so the native
 * side trusts them.
 */

import { createRequire } from 'node:module';
import { isMainThread } from 'node:worker_threads';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { ENGINE_FILE, pickAddon, type AddonCandidate } from './addon-path.js';
import { RuntimeLoadError } from './errors.js';
import {
  cudaDecision,
  findLibtorch,
  formatSteps,
  readCxx11Abi,
  type LibtorchLocation,
  type LookupStep,
} from './libtorch.js';

export interface NativeBuildInfo {
  torchVersion: string;
  cxx11Abi: boolean;
  buildSystem: string;
  compiler: string;
  napiVersion: number;
  /** The engine has the CUDA kernels (and then needs libc10_cuda.so from its libtorch). */
  cudaKernels: boolean;
  /** Empty until the runtime is open. */
  engineLibrary: string;
}

export interface NativeLoadOptions {
  modelPath: string;
  device: 'cpu' | 'cuda';
  deviceIndex: number;
  dtype: 'float32' | 'float16' | 'bfloat16';
  threads: number;
  freeze: boolean;
  /** CUDA: the share of device memory the caching allocator may hold; 0 for no limit. */
  cudaMemoryFraction: number;
}

export interface NativeModelInfo {
  loader: string;
  device: string;
  dtype: string;
  outputKind: 'tensor' | 'tuple' | 'dict';
  logitsDtype: string;
  numLabels: number;
  frozen: boolean;
  /** -1 where the module has no such embedding table. */
  vocabRows: number;
  positionRows: number;
  typeVocabRows: number;
}

export interface NativeInferRequest {
  /** [rows * seqLen] token ids, row-major; copied by the addon before the call returns. */
  ids: Int32Array;
  mask: Uint8Array;
  typeIds: Uint8Array;
  rows: number;
  seqLen: number;
  temperature: number;
  /** 1 <= topK <= min(64, labels). */
  topK: number;
  wantLogits: boolean;
  wantLogProbs: boolean;
}

/** Views over native memory, handed over without a copy. */
export interface NativeInferResult {
  rows: number;
  cols: number;
  topK: number;
  topIndex: Int32Array;
  topLogProb: Float32Array;
  margin: Float32Array;
  entropy: Float32Array;
  energy: Float32Array;
  valid: Uint8Array;
  /** Empty unless wantLogits. */
  logits: Float32Array;
  /** Empty unless wantLogProbs. */
  logProbs: Float32Array;
  forwardMs: number;
}

export interface NativeRuntimeInfo {
  torchVersion: string;
  cxx11Abi: boolean;
  cudaAvailable: boolean;
  cudaDeviceCount: number;
  intraOpThreads: number;
  interopThreads: number;
  parallelInfo: string;
}

export interface NativeEngineHandle {
  load(options: NativeLoadOptions): Promise<NativeModelInfo>;
  infer(request: NativeInferRequest): Promise<NativeInferResult>;
  runtime(): Promise<NativeRuntimeInfo>;
  close(): Promise<void>;
}

export interface NativeAddon {
  openRuntime(preload: string[], engineLibrary: string): Promise<void>;
  /** Drops queued native work and waits for forward passes under way; for process exit. */
  quiesce(): void;
  buildInfo(): NativeBuildInfo;
  EngineHandle: new () => NativeEngineHandle;
}

export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The addon to load (see addon-path.ts for the order); the first candidate when none fits. */
export function addonPath(env: NodeJS.ProcessEnv = process.env): string {
  const { chosen, candidates } = pickAddon(PACKAGE_ROOT, env);
  return (chosen ?? (candidates[0] as AddonCandidate)).path;
}

let addon: NativeAddon | undefined;

/** The addon alone: it has no libtorch dependency, so this works even where libtorch is missing. */
export function loadAddon(): NativeAddon {
  if (addon) return addon;
  const { chosen, candidates } = pickAddon(PACKAGE_ROOT);
  if (!chosen) {
    const tried = candidates.map((c) => `  [${c.source}] ${c.problem}`).join('\n');
    throw new RuntimeLoadError(
      'ERR_ADDON_LOAD',
      `the native addon is not built. Looked at, in order:\n${tried}\n` +
        'Run "npm run build:native" in a checkout, or reinstall bertgate (npm rebuild bertgate --build-from-source).',
    );
  }
  const path = chosen.path;
  try {
    addon = createRequire(import.meta.url)(path) as NativeAddon;
  } catch (error) {
    throw new RuntimeLoadError(
      'ERR_ADDON_LOAD',
      `the native addon at ${path} failed to load: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  // process.exit() skips the addon's cleanup hooks and runs C exit(), whose static destructors
  // would pull libtorch out from under a forward pass: stop the native workers first. Only on
  // the main thread, since the workers are process-wide and a worker_thread's exit is not ours.
  if (isMainThread) process.once('exit', () => addon?.quiesce());
  return addon;
}

export interface Runtime {
  addon: NativeAddon;
  libtorch: LibtorchLocation;
  steps: LookupStep[];
  cuda: { loaded: boolean; reason: string };
}

let opening: Promise<Runtime> | undefined;

/**
 * Finds libtorch, checks it is the version the addon was built for, preloads it and opens
 * the engine library. Once per process; later calls share the first result.
 */
export function openRuntime(): Promise<Runtime> {
  opening ??= open().catch((error: unknown) => {
    opening = undefined; // a fixed environment may succeed on the next try
    throw error;
  });
  return opening;
}

async function open(): Promise<Runtime> {
  const native = loadAddon();
  const built = native.buildInfo();
  const { location, steps } = await findLibtorch();
  if (!location) {
    throw new RuntimeLoadError(
      'ERR_LIBTORCH_NOT_FOUND',
      `libtorch ${built.torchVersion} was not found. Looked at, in order:\n${formatSteps(steps)}\n` +
        `Install torch==${built.torchVersion} into the active Python, or set LIBTORCH to a libtorch directory.`,
    );
  }
  if (location.version !== built.torchVersion) {
    throw new RuntimeLoadError(
      'ERR_LIBTORCH_VERSION',
      `bertgate was built for libtorch ${built.torchVersion}, but the libtorch found at ${location.dir} ` +
        `(via ${location.source}) is ${location.version ?? 'of unknown version (no include/torch/headeronly/version.h)'}. ` +
        `Point LIBTORCH or BERTGATE_PYTHON at a ${built.torchVersion} install, or rebuild bertgate against this one.`,
    );
  }
  if ((await readCxx11Abi(location.dir)) !== built.cxx11Abi) {
    throw new RuntimeLoadError(
      'ERR_LIBTORCH_VERSION',
      `bertgate was built with the C++11 string ABI ${built.cxx11Abi ? 'on' : 'off'}, but the libtorch at ${location.dir} ` +
        `uses it ${built.cxx11Abi ? 'off' : 'on'}; they cannot share a process. Rebuild bertgate against this libtorch.`,
    );
  }
  const decision = cudaDecision(location);
  const engine = join(dirname(addonPath()), ENGINE_FILE);
  // An engine built with CUDA kernels links libc10_cuda (streams, guards): small, and loadable
  // without a GPU, unlike the rest of libtorch's CUDA half.
  const cpuSet =
    built.cudaKernels && location.c10Cuda ? withC10Cuda(location.preload, location.c10Cuda) : location.preload;
  let cuda = { loaded: false, reason: decision.reason };
  if (decision.load) {
    try {
      await native.openRuntime([...cpuSet, ...location.cudaPreload], engine);
      cuda = { loaded: true, reason: decision.reason };
    } catch (error) {
      // The CPU half may still load; CUDA requests will then say why CUDA is missing.
      cuda = { loaded: false, reason: `loading libtorch's CUDA libraries failed: ${(error as Error).message}` };
    }
  }
  if (!cuda.loaded) {
    try {
      await native.openRuntime(cpuSet, engine);
    } catch (error) {
      const code = (error as { code?: string }).code === 'ERR_ENGINE_LOAD' ? 'ERR_ENGINE_LOAD' : 'ERR_LIBTORCH_LOAD';
      throw new RuntimeLoadError(code, `opening libtorch from ${location.dir} failed: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
  return { addon: native, libtorch: location, steps, cuda };
}

/** libc10_cuda.so goes right after libc10.so, which it needs. */
function withC10Cuda(preload: string[], c10Cuda: string): string[] {
  const at = preload.findIndex((path) => path.endsWith('/libc10.so'));
  return [...preload.slice(0, at + 1), c10Cuda, ...preload.slice(at + 1)];
}
