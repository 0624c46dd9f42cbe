/**
 * The library's front door: a loaded bundle that classifies text.
 *
 * Everything is validated here, before the native boundary; the native side receives
 * normalised values and trusts them.
 */

import { availableParallelism } from 'node:os';

import { Batcher, type BatchEvent, type BatcherStats } from './batcher.js';
import { openRuntime, type NativeEngineHandle, type NativeInferResult, type NativeModelInfo } from './binding.js';
import { DEFAULT_MODEL, checkAgainstModel, readBundle, verifyFiles, type Bundle } from './bundle.js';
import { DecisionPolicy, type Decision } from './decision.js';
import {
  AbortedError,
  BertgateError,
  BundleError,
  ClosedError,
  DeviceUnavailableError,
  InvalidArgumentError,
  OverloadedError,
  TimeoutError,
  callerStack,
  fromNative,
  restack,
} from './errors.js';
import {
  TextTokenizer,
  type Encoded,
  type TokenizerInput,
  type TruncationSide,
  type TruncationStrategy,
} from './tokenizer.js';
import {
  integerIn,
  invalid,
  isPlainObject,
  knownKeys,
  oneOf,
  option,
  positiveFinite,
  probability,
} from './validate.js';

export type Device = 'cpu' | 'cuda' | `cuda:${number}`;
export type DType = 'float32' | 'float16' | 'bfloat16';
/** A text as a string or its UTF-8 bytes (checked: invalid UTF-8 is an error, never replaced). */
export type Text = string | Uint8Array;
/** Two texts classified together, as sentence-pair models take them (type ids 0 and 1). */
export interface TextPair {
  text: Text;
  pair: Text;
}
export type TextInput = Text | TextPair;

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
  /** Texts per batch; default 32. */
  maxBatchSize?: number;
  /** Padded tokens per batch (longest row x rows); default maxBatchSize x the model's maximum length. */
  maxBatchTokens?: number;
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
  /** 'cpu' (default), 'cuda' (= 'cuda:0') or 'cuda:N'. */
  device?: Device;
  /** Weights precision: 'float32' (default); 'float16' and 'bfloat16' on CUDA only. */
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
  /** Intra-op threads for this model; default: all cores but one, at least 1. */
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
   * Check the files against the SHA-256 digests bundle.json records (default true). Costs a
   * read of the bundle (about 0.3 s per 100 MB); false skips it for bundles you trust as is.
   */
  verify?: boolean;
}

const OPTION_NAMES = [
  'device',
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
  'cudaMemoryFraction',
  'truncation',
  'truncationSide',
  'maxBatchSize',
  'maxBatchTokens',
  'maxDelayMs',
  'maxQueue',
  'batchesInFlight',
  'lengthAware',
  'maxPaddingRatio',
] as const;

const MAX_TOP_K = 64; // the fused kernel's limit
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export interface ClassifierStats extends BatcherStats {
  /** Batches split in half after the device ran out of memory for them. */
  outOfMemorySplits: number;
}

export interface ClassifierInfo {
  bundleDir: string;
  labels: readonly string[];
  otherLabel: string;
  device: string;
  dtype: string;
  threshold: number;
  thresholds: Readonly<Record<string, number>>;
  temperature: number;
  topK: number;
  threads: number;
  maxLength: number;
  maxTextLength: number;
  truncation: TruncationStrategy;
  truncationSide: TruncationSide;
  batching: Required<BatchingOptions>;
  frozen: boolean;
  /** The bundle's weights are random (a development stand-in, not a trained model). */
  randomWeights: boolean;
  /** The guarantee calibration.json records for the threshold, if any. */
  guarantee: Readonly<Record<string, unknown>> | undefined;
  model: NativeModelInfo;
}

interface Settings {
  device: 'cpu' | 'cuda';
  deviceIndex: number;
  dtype: DType;
  threshold: number | undefined;
  thresholds: Record<string, number>;
  otherLabel: string;
  temperature: number | undefined;
  topK: number | undefined;
  threads: number;
  labels: readonly string[] | undefined;
  maxTextLength: number;
  freeze: boolean;
  verify: boolean;
  cudaMemoryFraction: number;
  truncation: TruncationStrategy;
  truncationSide: TruncationSide;
  batching: BatchingOptions;
}

function parseDevice(value: unknown): { device: 'cpu' | 'cuda'; deviceIndex: number } {
  const match = typeof value === 'string' ? /^(cpu|cuda)(?::(\d{1,3}))?$/.exec(value) : null;
  if (!match || (match[1] === 'cpu' && match[2] !== undefined)) {
    throw invalid(option('device'), '"cpu", "cuda" or "cuda:N"', value);
  }
  return { device: match[1] as 'cpu' | 'cuda', deviceIndex: Number(match[2] ?? 0) };
}

function parseOptions(options: unknown): Settings {
  if (options === undefined) options = {};
  if (!isPlainObject(options)) throw invalid('the options', 'an object', options);
  knownKeys('the options', options, OPTION_NAMES);
  const o = options as Record<(typeof OPTION_NAMES)[number], unknown>;
  const { device, deviceIndex } =
    o.device === undefined ? { device: 'cpu' as const, deviceIndex: 0 } : parseDevice(o.device);
  const dtype =
    o.dtype === undefined ? 'float32' : oneOf(option('dtype'), o.dtype, ['float32', 'float16', 'bfloat16'] as const);
  if (dtype !== 'float32' && device === 'cpu') {
    throw new InvalidArgumentError(`The "dtype" option "${dtype}" needs a CUDA device; on "cpu" use "float32"`);
  }
  const thresholds: Record<string, number> = {};
  if (o.thresholds !== undefined) {
    if (!isPlainObject(o.thresholds))
      throw invalid(option('thresholds'), 'an object mapping labels to numbers', o.thresholds);
    for (const [label, value] of Object.entries(o.thresholds)) {
      thresholds[label] = probability(`the threshold for label ${JSON.stringify(label)}`, value);
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
    deviceIndex,
    dtype,
    threshold: o.threshold === undefined ? undefined : probability(option('threshold'), o.threshold),
    thresholds,
    otherLabel: (o.otherLabel as string | undefined) ?? 'Other',
    temperature: o.temperature === undefined ? undefined : positiveFinite(option('temperature'), o.temperature),
    topK: o.topK === undefined ? undefined : integerIn(option('topK'), o.topK, 1, MAX_TOP_K),
    threads:
      o.threads === undefined
        ? Math.max(1, availableParallelism() - 1)
        : integerIn(option('threads'), o.threads, 1, 1024),
    labels,
    maxTextLength:
      o.maxTextLength === undefined ? 1_000_000 : integerIn(option('maxTextLength'), o.maxTextLength, 1, 2 ** 29),
    freeze: (o.freeze as boolean | undefined) ?? true,
    verify: (o.verify as boolean | undefined) ?? true,
    cudaMemoryFraction: (o.cudaMemoryFraction as number | undefined) ?? 0,
    truncation:
      o.truncation === undefined
        ? 'longest_first'
        : oneOf(option('truncation'), o.truncation, ['longest_first', 'only_first', 'only_second'] as const),
    truncationSide:
      o.truncationSide === undefined
        ? 'right'
        : oneOf(option('truncationSide'), o.truncationSide, ['right', 'left'] as const),
    batching: parseBatching(o),
  };
}

function parseBatching(o: Record<string, unknown>): BatchingOptions {
  const out: BatchingOptions = {};
  if (o['maxBatchSize'] !== undefined)
    out.maxBatchSize = integerIn(option('maxBatchSize'), o['maxBatchSize'], 1, 65536);
  if (o['maxBatchTokens'] !== undefined) {
    out.maxBatchTokens = integerIn(option('maxBatchTokens'), o['maxBatchTokens'], 1, 2 ** 31 - 1);
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

/** Applies the caller's expectations and the bundle's calibration to the settings. */
function resolveAgainstBundle(
  settings: Settings,
  bundle: Bundle,
): { threshold: number; temperature: number; topK: number; batching: Required<BatchingOptions> } {
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
  for (const label of Object.keys(settings.thresholds)) {
    if (!bundle.labels.includes(label)) {
      throw new InvalidArgumentError(
        `Unknown label ${JSON.stringify(label)} in the "thresholds" option; the model's labels are ${JSON.stringify(bundle.labels)}`,
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
  const calibration = bundle.calibration ?? {};
  const maxBatchSize = settings.batching.maxBatchSize ?? 32;
  const batching: Required<BatchingOptions> = {
    maxBatchSize,
    maxBatchTokens: settings.batching.maxBatchTokens ?? maxBatchSize * bundle.maxLength,
    maxDelayMs: settings.batching.maxDelayMs ?? 2,
    maxQueue: settings.batching.maxQueue ?? 10_000,
    batchesInFlight: settings.batching.batchesInFlight ?? 2,
    lengthAware: settings.batching.lengthAware ?? true,
    maxPaddingRatio: settings.batching.maxPaddingRatio ?? 0.25,
  };
  if (batching.maxBatchTokens < bundle.maxLength) {
    throw invalid(
      option('maxBatchTokens'),
      `at least the model's maximum length (${bundle.maxLength}), so that any one text fits a batch`,
      batching.maxBatchTokens,
    );
  }
  return {
    threshold: settings.threshold ?? calibration.threshold ?? 0,
    temperature: settings.temperature ?? calibration.temperature ?? 1,
    topK: settings.topK ?? Math.min(5, bundle.labels.length),
    batching,
  };
}

interface Row {
  result: NativeInferResult;
  row: number;
  truncated: boolean;
}
interface Job {
  encoded: Encoded;
  wantLogits: boolean;
}

export class Classifier<L extends string = string, O extends string = 'Other'> {
  readonly labels: readonly L[];
  readonly otherLabel: O;
  readonly #handle: NativeEngineHandle;
  readonly #tokenizer: TextTokenizer;
  readonly #policy: DecisionPolicy<L, O>;
  readonly #batcher: Batcher<Job, Row>;
  readonly #info: ClassifierInfo;
  // Calls accepted before close(): close() waits for them, including those still tokenizing.
  readonly #inflight = new Set<Promise<unknown>>();
  #closed = false;
  #outOfMemorySplits = 0;
  #closing: Promise<void> = Promise.resolve();

  private constructor(
    handle: NativeEngineHandle,
    tokenizer: TextTokenizer,
    policy: DecisionPolicy<L, O>,
    info: ClassifierInfo,
  ) {
    this.#handle = handle;
    this.#tokenizer = tokenizer;
    this.#policy = policy;
    this.labels = policy.labels;
    this.otherLabel = policy.otherLabel;
    this.#info = info;
    const { batching } = info;
    this.#batcher = new Batcher<Job, Row>((jobs) => this.#infer(jobs), {
      maxBatchSize: batching.maxBatchSize,
      maxBatchTokens: batching.maxBatchTokens,
      maxDelayMs: batching.maxDelayMs,
      maxQueue: batching.maxQueue,
      inFlight: batching.batchesInFlight,
      lengthAware: batching.lengthAware,
      maxPaddingRatio: batching.maxPaddingRatio,
    });
  }

  /**
   * Loads a bundle directory (model.pt, config.json, tokenizer.json, optional calibration.json);
   * without one (undefined), the bundled default model (`DEFAULT_MODEL`).
   *
   * @example
   * const clf = await Classifier.load('./bundle', { labels: ['spam', 'ham'], thresholds: { spam: 0.9 } });
   * const d = await clf.classify('win a prize');
   * if (d.accepted) console.log(d.label); else console.log(d.label, 'because', d.reason);
   * @throws {InvalidArgumentError} bad options (before anything is read)
   * @throws {BundleError} a bundle file is missing, malformed, or disagrees with the model
   * @throws {ModelLoadError} model.pt cannot be loaded or returns no logits
   * @throws {DeviceUnavailableError} the device does not exist here
   * @throws {RuntimeLoadError} libtorch or the addon could not be found or loaded
   */
  static async load<const L extends string = string, const O extends string = 'Other'>(
    bundleDir?: string,
    options?: ClassifierOptions<L, O>,
  ): Promise<Classifier<L, O>> {
    const stack = callerStack(Classifier.load);
    try {
      if (bundleDir !== undefined && (typeof bundleDir !== 'string' || bundleDir.length === 0))
        throw invalid('bundleDir', 'a directory path (or undefined: the default model)', bundleDir);
      return await Classifier.#load<L, O>(bundleDir ?? DEFAULT_MODEL, parseOptions(options));
    } catch (error) {
      throw error instanceof BertgateError ? restack(error, stack) : fromNative(error, stack);
    }
  }

  static async #load<L extends string, O extends string>(
    bundleDir: string,
    settings: Settings,
  ): Promise<Classifier<L, O>> {
    const runtime = await openRuntime();
    const bundle = await readBundle(bundleDir);
    if (settings.verify) await verifyFiles(bundle);
    const resolved = resolveAgainstBundle(settings, bundle);
    const deviceName = settings.device === 'cpu' ? 'cpu' : `cuda:${settings.deviceIndex}`;
    if (settings.device === 'cuda' && !runtime.cuda.loaded) {
      throw new DeviceUnavailableError(
        `device '${deviceName}' was requested but libtorch's CUDA libraries are not loaded: ${runtime.cuda.reason}`,
      );
    }
    const tokenizer = await TextTokenizer.load(bundle.tokenizerPath, {
      maxLength: bundle.maxLength,
      strategy: settings.truncation,
      side: settings.truncationSide,
    });
    const handle = new runtime.addon.EngineHandle();
    let model: NativeModelInfo;
    try {
      model = await handle.load({
        modelPath: bundle.modelPath,
        device: settings.device,
        deviceIndex: settings.deviceIndex,
        dtype: settings.dtype,
        threads: settings.threads,
        freeze: settings.freeze,
        cudaMemoryFraction: settings.cudaMemoryFraction,
      });
      checkAgainstModel(bundle, model, tokenizer.vocabSize);
    } catch (error) {
      await handle.close();
      throw error;
    }
    const policy = new DecisionPolicy<L, O>(bundle.labels as L[], settings.otherLabel as O, resolved.threshold, {
      ...bundle.calibration?.thresholds,
      ...settings.thresholds,
    } as Partial<Record<L, number>>);
    const info: ClassifierInfo = {
      bundleDir,
      labels: bundle.labels,
      otherLabel: settings.otherLabel,
      device: model.device,
      dtype: model.dtype,
      threshold: resolved.threshold,
      thresholds: Object.fromEntries(bundle.labels.map((l, i) => [l, policy.thresholdFor(i)])),
      temperature: resolved.temperature,
      topK: resolved.topK,
      threads: settings.threads,
      maxLength: bundle.maxLength,
      maxTextLength: settings.maxTextLength,
      truncation: settings.truncation,
      truncationSide: settings.truncationSide,
      batching: resolved.batching,
      frozen: model.frozen,
      randomWeights: bundle.manifest?.random_weights === true,
      guarantee: bundle.calibration?.guarantee,
      model,
    };
    return new Classifier<L, O>(handle, tokenizer, policy, info);
  }

  /** What was loaded and the settings in force. */
  get info(): ClassifierInfo {
    return this.#info;
  }

  /**
   * Classifies one text (or text pair), or an array of them (results in the same order).
   * Concurrent calls are batched together; see BatchingOptions.
   *
   * An empty string is classified like any other text (it tokenizes to [CLS] [SEP]); texts
   * longer than the model's maximum length are truncated and flagged `truncated: true`.
   * @throws {InvalidArgumentError} not a text, invalid UTF-8, unpaired surrogates, an empty array, over maxTextLength
   * @throws {OverloadedError} more texts are waiting than maxQueue allows (at once, before any work)
   * @throws {AbortedError} / {TimeoutError} the call was cancelled; its texts never reached the device
   * @throws {ClosedError} after close()
   */
  classify(text: TextInput, options?: CallOptions): Promise<Decision<L, O>>;
  classify(texts: readonly TextInput[], options?: CallOptions): Promise<Decision<L, O>[]>;
  async classify(
    input: TextInput | readonly TextInput[],
    options?: CallOptions,
  ): Promise<Decision<L, O> | Decision<L, O>[]> {
    const stack = callerStack(this.classify);
    const single = !Array.isArray(input);
    const rows = await this.#run(
      single ? [input as TextInput] : (input as readonly TextInput[]),
      single,
      options,
      stack,
      false,
    );
    const decisions = rows.map(({ result, row, truncated }) => this.#policy.decide(result, row, truncated));
    return single ? (decisions[0] as Decision<L, O>) : decisions;
  }

  /**
   * Raw logits (fp32, before temperature), one row of `labels.length` per text, in the
   * order of `labels`. The rows are views over memory handed over by the native side.
   */
  logits(text: TextInput, options?: CallOptions): Promise<Float32Array>;
  logits(texts: readonly TextInput[], options?: CallOptions): Promise<Float32Array[]>;
  async logits(input: TextInput | readonly TextInput[], options?: CallOptions): Promise<Float32Array | Float32Array[]> {
    const stack = callerStack(this.logits);
    const single = !Array.isArray(input);
    const rows = await this.#run(
      single ? [input as TextInput] : (input as readonly TextInput[]),
      single,
      options,
      stack,
      true,
    );
    const out = rows.map(({ result, row }) => result.logits.subarray(row * result.cols, (row + 1) * result.cols));
    return single ? (out[0] as Float32Array) : out;
  }

  /** Queue depth, batch sizes, padding, latency percentiles. */
  stats(): ClassifierStats {
    return { ...this.#batcher.stats(), outOfMemorySplits: this.#outOfMemorySplits };
  }

  /** Calls `listener` for every batch sent to the model; returns the unsubscribe function. */
  onBatch(listener: (event: BatchEvent) => void): () => void {
    return this.#batcher.observe(listener);
  }

  /**
   * Refuses new calls and frees the model once the calls already made are settled: with
   * `drain` (the default) they all run; with `drain: false` the ones still queued reject
   * with ClosedError, and only batches already on the device finish. Idempotent.
   */
  close(options: { drain?: boolean } = {}): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      const drain = options.drain ?? true;
      this.#closing = (async () => {
        if (!drain) await this.#batcher.close('reject');
        await Promise.allSettled(this.#inflight);
        await this.#batcher.close('drain');
        await this.#handle.close();
      })();
    }
    return this.#closing;
  }

  #text(item: unknown, name: string, expected = 'a string, a Uint8Array of UTF-8, or { text, pair }'): string {
    let text: string;
    if (typeof item === 'string') {
      if (!item.isWellFormed()) {
        throw new InvalidArgumentError(
          `Expected ${name} to be well-formed Unicode, got a string with an unpaired surrogate`,
        );
      }
      text = item;
    } else if (item instanceof Uint8Array) {
      try {
        text = utf8.decode(item);
      } catch {
        throw new InvalidArgumentError(`Expected ${name} to be valid UTF-8, got bytes that are not`);
      }
    } else {
      throw invalid(name, expected, item);
    }
    if (text.length > this.#info.maxTextLength) {
      throw new InvalidArgumentError(
        `Expected ${name} to be at most ${this.#info.maxTextLength} characters (the "maxTextLength" option), got ${text.length}`,
      );
    }
    return text;
  }

  #inputs(input: readonly TextInput[], single: boolean): TokenizerInput[] {
    if (input.length === 0)
      throw new InvalidArgumentError('Expected texts to be a non-empty array, got an empty array');
    // Array.from, not map: map skips the holes of a sparse array, which would reach the
    // tokenizer as undefined.
    return Array.from(input, (item, i) => {
      const name = single ? 'text' : `texts[${i}]`;
      if (typeof item === 'object' && item !== null && !(item instanceof Uint8Array) && !Array.isArray(item)) {
        const keys = Object.keys(item);
        if (keys.length === 2 && 'text' in item && 'pair' in item) {
          const member = 'a string or a Uint8Array of UTF-8';
          return [
            this.#text(item.text, `${name}.text`, member),
            this.#text(item.pair, `${name}.pair`, member),
          ] as const;
        }
      }
      return this.#text(item, name);
    });
  }

  #run(
    input: readonly TextInput[],
    single: boolean,
    options: CallOptions | undefined,
    stack: string,
    wantLogits: boolean,
  ): Promise<Row[]> {
    if (this.#closed) return Promise.reject(restack(new ClosedError(), stack));
    const call = this.#runOpen(input, single, options, wantLogits).catch((error: unknown) => {
      throw error instanceof BertgateError ? restack(error, stack) : fromNative(error, stack);
    });
    this.#inflight.add(call);
    void call.finally(() => this.#inflight.delete(call)).catch(() => {});
    return call;
  }

  async #runOpen(
    input: readonly TextInput[],
    single: boolean,
    options: CallOptions | undefined,
    wantLogits: boolean,
  ): Promise<Row[]> {
    const { signal, timeoutMs } = parseCallOptions(options);
    const started = performance.now();
    const inputs = this.#inputs(input, single);
    // Refuse at once, before spending anything on tokenizing.
    if (this.#batcher.wouldOverflow(inputs.length)) {
      const { maxQueue } = this.#info.batching;
      throw new OverloadedError(
        `overloaded: ${this.#batcher.queueDepth} texts are waiting and ${inputs.length} more would exceed maxQueue (${maxQueue})`,
      );
    }
    if (signal?.aborted) throw new AbortedError(signal.reason);
    const encoded = await this.#tokenizer.encode(inputs);
    let remaining: number | undefined;
    if (timeoutMs !== undefined) {
      remaining = timeoutMs - (performance.now() - started);
      if (remaining <= 0) throw new TimeoutError(timeoutMs);
    }
    return this.#batcher.submit(
      encoded.map((e) => ({ tokens: e.ids.length, payload: { encoded: e, wantLogits } })),
      { signal, timeoutMs: remaining },
    );
  }

  /**
   * A batch the device has no memory for is split in halves and retried, down to single
   * texts; a text that does not fit alone fails with OutOfMemoryError (its batch-mates are
   * answered). The halves run one after the other, so their peaks do not add up.
   */
  async #infer(jobs: Job[]): Promise<Row[]> {
    try {
      return await this.#forward(jobs);
    } catch (error) {
      if (jobs.length === 1 || (error as { code?: unknown } | null)?.code !== 'ERR_OUT_OF_MEMORY') throw error;
      this.#outOfMemorySplits++;
      const half = Math.ceil(jobs.length / 2);
      const first = await this.#infer(jobs.slice(0, half));
      return [...first, ...(await this.#infer(jobs.slice(half)))];
    }
  }

  async #forward(jobs: Job[]): Promise<Row[]> {
    const batch = this.#tokenizer.pad(jobs.map((j) => j.encoded));
    const result = await this.#handle.infer({
      ...batch,
      temperature: this.#info.temperature,
      topK: this.#info.topK,
      wantLogits: jobs.some((j) => j.wantLogits),
      wantLogProbs: false,
    });
    return jobs.map((j, row) => ({ result, row, truncated: j.encoded.truncated }));
  }
}

const MAX_TIMER_MS = 2 ** 31 - 1;

function parseCallOptions(options: unknown): { signal: AbortSignal | undefined; timeoutMs: number | undefined } {
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
