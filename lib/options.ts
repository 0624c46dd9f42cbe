/**
 * Every option a Classifier takes, in one place: the types users write, their names (an
 * unknown key is an error), the defaults (DEFAULTS, which doctor, the server and the CLI
 * read rather than repeat), and the parsing that turns what a caller passed into settings the
 * classifier trusts. Exact messages, as lib/validate.ts writes them.
 */

import { availableParallelism } from 'node:os';

import type { Bundle } from './bundle.js';
import { BundleError, InvalidArgumentError } from './errors.js';
import { DEFAULT_THREADS } from './runtime/threads.js';
import type { TruncationSide, TruncationStrategy } from './tokenizer.js';
import {
  integerIn,
  invalid,
  isPlainObject,
  knownKeys,
  oneOf,
  option,
  positiveFinite,
  probability,
  temperatureProblem,
} from './validate.js';

export type Device = 'cpu' | 'cuda' | `cuda:${number}` | 'cuda:*';
export type DType = 'float32' | 'float16' | 'bfloat16';
/** Per call: cancel it, or give it a deadline. Cancelled texts never reach the device. */
export interface CallOptions {
  signal?: AbortSignal;
  /**
   * Deadline for the whole call, tokenizing included; then it rejects with TimeoutError.
   * In (0, 2^31 - 1] milliseconds, the range Node's timers hold.
   */
  timeoutMs?: number;
}

/** How the classifier forms batches; see lib/batcher.ts for the semantics. */
export interface BatchingOptions {
  /** Texts per batch; default 32 on a CPU, 256 on CUDA. */
  maxBatchSize?: number;
  /**
   * Padded tokens per batch (padded length x rows); default maxBatchSize x the model's maximum
   * length on a CPU, and on CUDA 32,768 (256 x 128, 64 x 512), at least the maximum length.
   */
  maxBatchTokens?: number;
  /**
   * Pad each batch to a multiple of this many tokens (never past the model's maximum), so
   * shapes repeat; default 1 on a CPU (padding costs as much as text there), 32 on CUDA.
   */
  padToMultipleOf?: number;
  /** How long a partial batch may wait while the device is busy; default 2 ms. Never when idle. */
  maxDelayMs?: number;
  /** Texts allowed to wait; beyond, calls are refused at once with OverloadedError. Default 10,000. */
  maxQueue?: number;
  /** Batches handed to the device at once, so host preparation overlaps device work; default 2. */
  batchesInFlight?: number;
  /** Group texts of similar length to cut padding (the oldest text always goes first); default true. */
  lengthAware?: boolean;
  /** With lengthAware, the largest share of a batch that may be padding; default 0.25. */
  maxPaddingRatio?: number;
}

export interface ClassifierOptions<L extends string = string, O extends string = 'Other'> extends BatchingOptions {
  /**
   * 'cpu' (default), 'cuda' (= 'cuda:0'), 'cuda:N', 'cuda:*' (every visible GPU), or a list of
   * CUDA devices (['cuda:0', 'cuda:1']): one batcher feeds a replica on each.
   */
  device?: Device | readonly Device[];
  /**
   * Replicas per listed device, default 1: each takes batches from the one queue as it comes
   * free. On a CPU they share one copy of the weights, each with `threads` threads of its own.
   */
  replicas?: number;
  /** Weights precision: 'float32' (the default on a CPU); 'float16' (the default on CUDA) and 'bfloat16' on CUDA only. */
  dtype?: DType;
  /** Accept the best label when its probability is at least this; default: calibration.json's, else 0. */
  threshold?: number;
  /** Per-label thresholds, overriding `threshold` for the labels named. */
  thresholds?: Partial<Record<L, number>>;
  /** The label of rejected texts; default 'Other'. Must not be one of the model's labels. */
  otherLabel?: O;
  /** Softmax temperature; default: calibration.json's, else 1. */
  temperature?: number;
  /** How many of the best labels each decision lists; default min(5, labels). */
  topK?: number;
  /**
   * Intra-op threads per replica; default: all cores but one, at least 1 (on a CPU, shared out
   * between the replicas).
   */
  threads?: number;
  /** The labels the caller expects: checked against the bundle, and they type the decisions. */
  labels?: readonly L[];
  /** HF truncation strategy for texts over the model's maximum length; default 'longest_first'. */
  truncation?: TruncationStrategy;
  /** Which end is cut; default 'right'. */
  truncationSide?: TruncationSide;
  /** Longest text accepted, in UTF-16 code units; default 1,000,000. Longer texts are an error. */
  maxTextLength?: number;
  /** Freeze the TorchScript module for inference (default true). */
  freeze?: boolean;
  /**
   * CUDA only: the share of the device's memory, in (0, 1], that libtorch's caching allocator
   * may hold (per device, for the whole process). Past it, batches split as on a full device.
   * Default: no limit.
   */
  cudaMemoryFraction?: number;
  /**
   * The drift alarm (lib/drift.ts) against the bundle's calibration: `alpha` is its false-alarm
   * probability per 1,000 texts (default 0.01: at least 100,000 texts between false alarms on
   * average, on traffic like the calibration set); false turns it off. On by default
   * when calibration.json carries a drift reference and the temperature is the calibration's.
   */
  drift?: false | { alpha?: number };
  /**
   * The out-of-distribution gate calibrate fitted on the model's features: a text whose score
   * passes its threshold becomes "Other" with reason 'out-of-distribution'. On by default where
   * calibration.json has one; false turns it off; true insists (an error where there is none).
   */
  gate?: boolean;
  /**
   * Check the files against the SHA-256 digests bundle.json records (default true). Costs a
   * read of the bundle (about 0.3 s per 100 MB); false skips it for bundles you trust as is.
   */
  verify?: boolean;
}

const OPTION_NAMES = [
  'device',
  'replicas',
  'dtype',
  'threshold',
  'thresholds',
  'otherLabel',
  'temperature',
  'topK',
  'threads',
  'labels',
  'maxTextLength',
  'freeze',
  'verify',
  'drift',
  'gate',
  'cudaMemoryFraction',
  'truncation',
  'truncationSide',
  'maxBatchSize',
  'maxBatchTokens',
  'padToMultipleOf',
  'maxDelayMs',
  'maxQueue',
  'batchesInFlight',
  'lengthAware',
  'maxPaddingRatio',
] as const;

/** What applies when neither the caller nor the bundle's calibration.json says otherwise. */
export const DEFAULTS = {
  device: 'cpu',
  dtype: 'float32',
  /** No threshold unless calibration.json or the caller gives one: never a silent cut-off. */
  threshold: 0,
  otherLabel: 'Other',
  temperature: 1,
  /** At most this many; fewer when the model has fewer labels. */
  topK: 5,
  /** All cores but one, so the event loop keeps a core. */
  threads: DEFAULT_THREADS,
  maxTextLength: 1_000_000,
  freeze: true,
  verify: true,
  drift: { alpha: 0.01 },
  truncation: 'longest_first',
  truncationSide: 'right',
  batching: {
    maxBatchSize: 32,
    /** Per text of maxBatchSize: the model's maximum length (so any batch of full texts fits). */
    maxBatchTokens: undefined,
    padToMultipleOf: 1,
    maxDelayMs: 2,
    maxQueue: 10_000,
    batchesInFlight: 2,
    lengthAware: true,
    maxPaddingRatio: 0.25,
  },
  /**
   * On a CUDA device, where the CPU's defaults would leave most of the GPU idle: fp32 weights
   * run plain FP32 matmuls (TF32 stays off, so float32 means float32), a fraction of the
   * tensor cores' half-precision rate; one forward pass has a large fixed cost (kernel
   * launches), which batches of 256 amortise; and fused kernels are compiled per shape, which
   * buckets of 32 tokens make repeat. docs/design-decisions.md ("Defaults on CUDA") says why
   * these numbers, and docs/benchmarks.md what they are expected to give.
   */
  cuda: {
    dtype: 'float16',
    maxBatchSize: 256,
    maxBatchTokens: 32_768,
    padToMultipleOf: 32,
    /** The warm-up forward pass at load: rows of this many tokens (or the maximum length). */
    warmupTokens: 128,
  },
  /** `bertgate serve`. */
  server: {
    port: 8080,
    host: '127.0.0.1',
    bodyLimit: 1024 * 1024,
    maxTexts: 1024,
    requestTimeoutMs: 30_000,
    /** After SIGTERM/SIGINT, how long the drain may take before the process exits anyway. */
    drainTimeoutMs: 30_000,
  },
} as const;

const MAX_TOP_K = 64; // the fused kernel's limit

export interface Settings {
  device: 'cpu' | 'cuda';
  /** The CUDA devices asked for, in order, or 'all' ('cuda:*': every visible one); [0] on a CPU. */
  deviceIndices: readonly number[] | 'all';
  /** Per device. */
  replicas: number;
  dtype: DType;
  threshold: number | undefined;
  thresholds: Map<string, number>;
  otherLabel: string;
  temperature: number | undefined;
  topK: number | undefined;
  threads: number;
  labels: readonly string[] | undefined;
  maxTextLength: number;
  freeze: boolean;
  verify: boolean;
  /** undefined: the default (on where the bundle allows); false: off; an object: asked for. */
  drift: false | { alpha: number } | undefined;
  /** undefined: the default (on where calibration.json has one). */
  gate: boolean | undefined;
  cudaMemoryFraction: number;
  truncation: TruncationStrategy;
  truncationSide: TruncationSide;
  batching: BatchingOptions;
}

const DEVICE_FORMS = '"cpu", "cuda", "cuda:N", "cuda:*" or a non-empty list of CUDA devices';
/** The most replicas per device: each holds a native thread (and on a GPU a copy of the model). */
export const MAX_REPLICAS = 64;

function parseOne(value: unknown): { device: 'cpu' | 'cuda'; index: number | 'all' } {
  const match = typeof value === 'string' ? /^(cpu|cuda)(?::(0|[1-9]\d{0,8}|\*))?$/.exec(value) : null;
  if (!match || (match[1] === 'cpu' && match[2] !== undefined)) throw invalid(option('device'), DEVICE_FORMS, value);
  return { device: match[1] as 'cpu' | 'cuda', index: match[2] === '*' ? 'all' : Number(match[2] ?? 0) };
}

/**
 * One kind of device per classifier: its batching defaults and dtype are per kind, so a list
 * is of CUDA devices, each once ('cuda' and 'cuda:0' are the same device).
 */
function parseDevice(value: unknown): Pick<Settings, 'device' | 'deviceIndices'> {
  if (!Array.isArray(value)) {
    const { device, index } = parseOne(value);
    return { device, deviceIndices: index === 'all' ? 'all' : [index] };
  }
  if (value.length === 0) throw invalid(option('device'), DEVICE_FORMS, value);
  const indices: number[] = [];
  for (const item of value) {
    const { device, index } = parseOne(item);
    if (device === 'cpu' || index === 'all') {
      throw new InvalidArgumentError(
        `The "device" list holds CUDA devices only ("cuda:N"), got ${JSON.stringify(item)}: ` +
          `use "cpu" alone (with "replicas") or "cuda:*" alone`,
      );
    }
    if (indices.includes(index)) {
      throw new InvalidArgumentError(
        `The "device" list names cuda:${index} twice; list each device once and use "replicas" for more per device`,
      );
    }
    indices.push(index);
  }
  return { device: 'cuda', deviceIndices: indices };
}

/**
 * More CPU threads than cores slows every replica down. Allowed (a user may know the machine
 * better than the count): the classifier warns with this, and doctor prints it.
 */
export function oversubscription(settings: Pick<Settings, 'device' | 'replicas' | 'threads'>): string | undefined {
  const cores = availableParallelism();
  const threads = settings.replicas * settings.threads;
  if (settings.device !== 'cpu' || threads <= cores) return undefined;
  const lower = settings.threads > 1 ? 'lower "threads" or "replicas"' : 'lower "replicas"';
  return (
    `${settings.replicas} replicas x ${settings.threads} thread${settings.threads > 1 ? 's' : ''} each = ${threads} ` +
    `threads on ${cores} cores: they will contend for the cores; ${lower}`
  );
}

/**
 * CPU replicas split the default's cores between them (each at least one), so that two
 * replicas do not each start a thread per core; a GPU replica's threads only prepare batches.
 */
function defaultThreads(device: 'cpu' | 'cuda', replicas: number): number {
  return device === 'cpu' ? Math.max(1, Math.floor(DEFAULTS.threads / replicas)) : DEFAULTS.threads;
}

export function parseOptions(options: unknown): Settings {
  if (options === undefined) options = {};
  if (!isPlainObject(options)) throw invalid('the options', 'an object', options);
  knownKeys('the options', options, OPTION_NAMES);
  const o = options as Record<(typeof OPTION_NAMES)[number], unknown>;
  const { device, deviceIndices } = parseDevice(o.device === undefined ? DEFAULTS.device : o.device); // null is refused, not the default;
  const replicas = o.replicas === undefined ? 1 : integerIn(option('replicas'), o.replicas, 1, MAX_REPLICAS);
  const dtype =
    o.dtype === undefined
      ? device === 'cuda'
        ? DEFAULTS.cuda.dtype
        : DEFAULTS.dtype
      : oneOf(option('dtype'), o.dtype, ['float32', 'float16', 'bfloat16'] as const);
  if (dtype !== 'float32' && device === 'cpu') {
    throw new InvalidArgumentError(`The "dtype" option "${dtype}" needs a CUDA device; on "cpu" use "float32"`);
  }
  // A Map: a label named "constructor" or "__proto__" is a label like any other.
  const thresholds = new Map<string, number>();
  if (o.thresholds !== undefined) {
    if (!isPlainObject(o.thresholds))
      throw invalid(option('thresholds'), 'an object mapping labels to numbers', o.thresholds);
    for (const [label, value] of Object.entries(o.thresholds)) {
      thresholds.set(label, probability(`the threshold for label ${JSON.stringify(label)}`, value));
    }
  }
  let labels: readonly string[] | undefined;
  if (o.labels !== undefined) {
    if (!Array.isArray(o.labels) || o.labels.some((l) => typeof l !== 'string')) {
      throw invalid(option('labels'), 'an array of strings', o.labels);
    }
    labels = o.labels as string[];
  }
  if (o.otherLabel !== undefined && (typeof o.otherLabel !== 'string' || o.otherLabel.length === 0)) {
    throw invalid(option('otherLabel'), 'a non-empty string', o.otherLabel);
  }
  if (o.freeze !== undefined && typeof o.freeze !== 'boolean') throw invalid(option('freeze'), 'a boolean', o.freeze);
  if (o.verify !== undefined && typeof o.verify !== 'boolean') throw invalid(option('verify'), 'a boolean', o.verify);
  if (o.cudaMemoryFraction !== undefined) {
    const f = o.cudaMemoryFraction;
    if (typeof f !== 'number' || !(f > 0 && f <= 1))
      throw invalid(option('cudaMemoryFraction'), 'a number in (0, 1]', f);
    if (device === 'cpu') {
      throw new InvalidArgumentError('The "cudaMemoryFraction" option applies to CUDA devices; the device is "cpu"');
    }
  }
  return {
    device,
    deviceIndices,
    replicas,
    dtype,
    threshold: o.threshold === undefined ? undefined : probability(option('threshold'), o.threshold),
    thresholds,
    otherLabel: (o.otherLabel as string | undefined) ?? DEFAULTS.otherLabel,
    temperature: o.temperature === undefined ? undefined : temperature(o.temperature),
    topK: o.topK === undefined ? undefined : integerIn(option('topK'), o.topK, 1, MAX_TOP_K),
    threads:
      o.threads === undefined ? defaultThreads(device, replicas) : integerIn(option('threads'), o.threads, 1, 1024),
    labels,
    maxTextLength:
      o.maxTextLength === undefined
        ? DEFAULTS.maxTextLength
        : integerIn(option('maxTextLength'), o.maxTextLength, 1, 2 ** 29),
    freeze: (o.freeze as boolean | undefined) ?? DEFAULTS.freeze,
    verify: (o.verify as boolean | undefined) ?? DEFAULTS.verify,
    drift: parseDrift(o.drift),
    gate:
      o.gate === undefined
        ? undefined
        : typeof o.gate === 'boolean'
          ? o.gate
          : (() => {
              throw invalid(option('gate'), 'a boolean', o.gate);
            })(),
    cudaMemoryFraction: (o.cudaMemoryFraction as number | undefined) ?? 0,
    truncation:
      o.truncation === undefined
        ? DEFAULTS.truncation
        : oneOf(option('truncation'), o.truncation, ['longest_first', 'only_first', 'only_second'] as const),
    truncationSide:
      o.truncationSide === undefined
        ? DEFAULTS.truncationSide
        : oneOf(option('truncationSide'), o.truncationSide, ['right', 'left'] as const),
    batching: parseBatching(o),
  };
}

function temperature(value: unknown): number {
  const problem = temperatureProblem(value);
  if (problem) throw invalid(option('temperature'), problem, value);
  return value as number;
}

function parseDrift(value: unknown): Settings['drift'] {
  if (value === undefined || value === false) return value;
  if (!isPlainObject(value)) throw invalid(option('drift'), 'false or { alpha }', value);
  knownKeys('the "drift" option', value, ['alpha']);
  const alpha = value['alpha'];
  if (alpha === undefined) return { alpha: DEFAULTS.drift.alpha };
  if (typeof alpha !== 'number' || !(alpha > 0 && alpha < 1))
    throw invalid('the "drift.alpha" option', 'a number in (0, 1)', alpha);
  return { alpha };
}

function parseBatching(o: Record<string, unknown>): BatchingOptions {
  const out: BatchingOptions = {};
  if (o['maxBatchSize'] !== undefined)
    out.maxBatchSize = integerIn(option('maxBatchSize'), o['maxBatchSize'], 1, 65536);
  if (o['maxBatchTokens'] !== undefined) {
    out.maxBatchTokens = integerIn(option('maxBatchTokens'), o['maxBatchTokens'], 1, 2 ** 31 - 1);
  }
  if (o['padToMultipleOf'] !== undefined) {
    out.padToMultipleOf = integerIn(option('padToMultipleOf'), o['padToMultipleOf'], 1, 4096);
  }
  if (o['maxDelayMs'] !== undefined) {
    if (typeof o['maxDelayMs'] !== 'number' || !(o['maxDelayMs'] >= 0 && o['maxDelayMs'] <= 60_000)) {
      throw invalid(option('maxDelayMs'), 'a number in [0, 60000]', o['maxDelayMs']);
    }
    out.maxDelayMs = o['maxDelayMs'];
  }
  if (o['maxQueue'] !== undefined) out.maxQueue = integerIn(option('maxQueue'), o['maxQueue'], 1, 2 ** 31 - 1);
  if (o['batchesInFlight'] !== undefined) {
    out.batchesInFlight = integerIn(option('batchesInFlight'), o['batchesInFlight'], 1, 64);
  }
  if (o['lengthAware'] !== undefined) {
    if (typeof o['lengthAware'] !== 'boolean') throw invalid(option('lengthAware'), 'a boolean', o['lengthAware']);
    out.lengthAware = o['lengthAware'];
  }
  if (o['maxPaddingRatio'] !== undefined)
    out.maxPaddingRatio = probability(option('maxPaddingRatio'), o['maxPaddingRatio']);
  return out;
}

/** Applies the caller's expectations to the bundle (the rule's own options: lib/rule.ts). */
export function resolveAgainstBundle(
  settings: Settings,
  bundle: Bundle,
): { topK: number; batching: Required<BatchingOptions> } {
  if (settings.labels) {
    const expected = [...settings.labels].sort();
    const actual = [...bundle.labels].sort();
    if (expected.length !== actual.length || expected.some((l, i) => l !== actual[i])) {
      throw new BundleError(
        'config.json',
        'id2label',
        `The "labels" option lists ${JSON.stringify(settings.labels)}, but config.json "id2label" names ${JSON.stringify(bundle.labels)}`,
      );
    }
  }
  if (bundle.labels.includes(settings.otherLabel)) {
    throw new InvalidArgumentError(
      `The "otherLabel" ${JSON.stringify(settings.otherLabel)} is also one of the model's labels; choose a label the model does not have`,
    );
  }
  if (settings.topK !== undefined && settings.topK > bundle.labels.length) {
    throw invalid(
      option('topK'),
      `an integer in [1, ${bundle.labels.length}] (the model's label count)`,
      settings.topK,
    );
  }
  const d = DEFAULTS.batching;
  const cuda = settings.device === 'cuda';
  const maxBatchSize = settings.batching.maxBatchSize ?? (cuda ? DEFAULTS.cuda.maxBatchSize : d.maxBatchSize);
  const batching: Required<BatchingOptions> = {
    maxBatchSize,
    maxBatchTokens:
      settings.batching.maxBatchTokens ??
      (cuda
        ? Math.max(bundle.maxLength, Math.min(DEFAULTS.cuda.maxBatchTokens, maxBatchSize * bundle.maxLength))
        : maxBatchSize * bundle.maxLength),
    padToMultipleOf: settings.batching.padToMultipleOf ?? (cuda ? DEFAULTS.cuda.padToMultipleOf : d.padToMultipleOf),
    maxDelayMs: settings.batching.maxDelayMs ?? d.maxDelayMs,
    maxQueue: settings.batching.maxQueue ?? d.maxQueue,
    batchesInFlight: settings.batching.batchesInFlight ?? d.batchesInFlight,
    lengthAware: settings.batching.lengthAware ?? d.lengthAware,
    maxPaddingRatio: settings.batching.maxPaddingRatio ?? d.maxPaddingRatio,
  };
  if (batching.maxBatchTokens < bundle.maxLength) {
    throw invalid(
      option('maxBatchTokens'),
      `at least the model's maximum length (${bundle.maxLength}), so that any one text fits a batch`,
      batching.maxBatchTokens,
    );
  }
  return {
    topK: settings.topK ?? Math.min(DEFAULTS.topK, bundle.labels.length),
    batching,
  };
}

/**
 * The forward pass the engine runs at load after its probe. On CUDA the executor profiles and
 * the fuser compiles there, at a full batch of typical texts (warmupTokens, bucketed), so the
 * first requests find the optimised graph ready; a CPU (no fuser in the pip builds) would gain
 * nothing from it but load time, so it gets none.
 */
export function warmupShape(
  device: Settings['device'],
  batching: Required<BatchingOptions>,
  maxLength: number,
  paddedLength: (longest: number) => number,
): { warmupRows: number; warmupSeqLen: number } {
  if (device !== 'cuda') return { warmupRows: 0, warmupSeqLen: 0 };
  const warmupSeqLen = paddedLength(Math.min(DEFAULTS.cuda.warmupTokens, maxLength));
  const rows = Math.min(batching.maxBatchSize, Math.floor(batching.maxBatchTokens / warmupSeqLen));
  return { warmupRows: Math.max(1, rows), warmupSeqLen };
}

const MAX_TIMER_MS = 2 ** 31 - 1;

export function parseCallOptions(options: unknown): { signal: AbortSignal | undefined; timeoutMs: number | undefined } {
  if (options === undefined) return { signal: undefined, timeoutMs: undefined };
  if (!isPlainObject(options)) throw invalid('the call options', 'an object', options);
  knownKeys('the call options', options, ['signal', 'timeoutMs']);
  const { signal, timeoutMs } = options;
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw invalid(option('signal'), 'an AbortSignal', signal);
  // Timers hold at most 2^31 - 1 ms; a longer one fires after 1 ms, so it is refused instead.
  if (timeoutMs !== undefined && positiveFinite(option('timeoutMs'), timeoutMs) > MAX_TIMER_MS)
    throw invalid(
      option('timeoutMs'),
      `a finite number greater than 0 and at most ${MAX_TIMER_MS} (about 24.8 days)`,
      timeoutMs,
    );
  return { signal: signal as AbortSignal | undefined, timeoutMs: timeoutMs as number | undefined };
}
