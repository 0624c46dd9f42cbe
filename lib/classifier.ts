/**
 * The library's front door: a loaded bundle that classifies text.
 *
 * Everything is validated here, before the native boundary; the native side receives
 * normalised values and trusts them.
 */

import { availableParallelism } from 'node:os';

import { openRuntime, type NativeEngineHandle, type NativeInferResult, type NativeModelInfo } from './binding.js';
import { checkAgainstModel, readBundle, type Bundle } from './bundle.js';
import { DecisionPolicy, type Decision } from './decision.js';
import {
  BertgateError,
  BundleError,
  ClosedError,
  DeviceUnavailableError,
  InvalidArgumentError,
  callerStack,
  fromNative,
  restack,
} from './errors.js';
import { TextTokenizer, type Encoded } from './tokenizer.js';
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
/** A text, or its UTF-8 bytes (checked: invalid UTF-8 is an error, never silently replaced). */
export type TextInput = string | Uint8Array;

export interface ClassifierOptions<L extends string = string, O extends string = 'Other'> {
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
  /** Texts per forward pass when classifying an array; default 32. */
  maxBatchSize?: number;
  /** Longest text accepted, in UTF-16 code units; default 1,000,000. Longer texts are an error. */
  maxTextLength?: number;
  /** Freeze the TorchScript module for inference (default true). */
  freeze?: boolean;
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
  'maxBatchSize',
  'maxTextLength',
  'freeze',
] as const;

const MAX_TOP_K = 64; // the fused kernel's limit
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

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
  maxBatchSize: number;
  maxTextLength: number;
  frozen: boolean;
  /** The bundle's weights are random (a development stand-in, not a trained model). */
  randomWeights: boolean;
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
  maxBatchSize: number;
  maxTextLength: number;
  freeze: boolean;
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
    maxBatchSize: o.maxBatchSize === undefined ? 32 : integerIn(option('maxBatchSize'), o.maxBatchSize, 1, 65536),
    maxTextLength:
      o.maxTextLength === undefined ? 1_000_000 : integerIn(option('maxTextLength'), o.maxTextLength, 1, 2 ** 29),
    freeze: (o.freeze as boolean | undefined) ?? true,
  };
}

/** Applies the caller's expectations and the bundle's calibration to the settings. */
function resolveAgainstBundle(
  settings: Settings,
  bundle: Bundle,
): { threshold: number; temperature: number; topK: number } {
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
  return {
    threshold: settings.threshold ?? calibration.threshold ?? 0,
    temperature: settings.temperature ?? calibration.temperature ?? 1,
    topK: settings.topK ?? Math.min(5, bundle.labels.length),
  };
}

export class Classifier<L extends string = string, O extends string = 'Other'> {
  readonly labels: readonly L[];
  readonly otherLabel: O;
  readonly #handle: NativeEngineHandle;
  readonly #tokenizer: TextTokenizer;
  readonly #policy: DecisionPolicy<L, O>;
  readonly #info: ClassifierInfo;
  // Calls accepted before close(): close() waits for them, including those still tokenizing.
  readonly #inflight = new Set<Promise<unknown>>();
  #closed = false;
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
  }

  /**
   * Loads a bundle directory (model.pt, config.json, tokenizer.json, optional calibration.json).
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
    bundleDir: string,
    options?: ClassifierOptions<L, O>,
  ): Promise<Classifier<L, O>> {
    const stack = callerStack(Classifier.load);
    try {
      if (typeof bundleDir !== 'string' || bundleDir.length === 0)
        throw invalid('bundleDir', 'a directory path', bundleDir);
      return await Classifier.#load<L, O>(bundleDir, parseOptions(options));
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
    const resolved = resolveAgainstBundle(settings, bundle);
    const deviceName = settings.device === 'cpu' ? 'cpu' : `cuda:${settings.deviceIndex}`;
    if (settings.device === 'cuda' && !runtime.cuda.loaded) {
      throw new DeviceUnavailableError(
        `device '${deviceName}' was requested but libtorch's CUDA libraries are not loaded: ${runtime.cuda.reason}`,
      );
    }
    const tokenizer = await TextTokenizer.load(bundle.tokenizerPath, bundle.maxLength);
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
      maxBatchSize: settings.maxBatchSize,
      maxTextLength: settings.maxTextLength,
      frozen: model.frozen,
      randomWeights: bundle.manifest?.random_weights === true,
      model,
    };
    return new Classifier<L, O>(handle, tokenizer, policy, info);
  }

  /** What was loaded and the settings in force. */
  get info(): ClassifierInfo {
    return this.#info;
  }

  /**
   * Classifies one text, or an array of texts (results in the same order).
   *
   * An empty string is classified like any other text (it tokenizes to [CLS] [SEP]); texts
   * longer than the model's maximum length are truncated and flagged `truncated: true`.
   * @throws {InvalidArgumentError} not a string / Uint8Array, invalid UTF-8, an empty array, over maxTextLength
   * @throws {ClosedError} after close()
   */
  classify(text: TextInput): Promise<Decision<L, O>>;
  classify(texts: readonly TextInput[]): Promise<Decision<L, O>[]>;
  async classify(input: TextInput | readonly TextInput[]): Promise<Decision<L, O> | Decision<L, O>[]> {
    const stack = callerStack(this.classify);
    const single = !Array.isArray(input);
    const rows = await this.#run(single ? [input as TextInput] : (input as readonly TextInput[]), single, stack, false);
    const decisions = rows.map(({ result, row, truncated }) => this.#policy.decide(result, row, truncated));
    return single ? (decisions[0] as Decision<L, O>) : decisions;
  }

  /**
   * Raw logits (fp32, before temperature), one row of `labels.length` per text, in the
   * order of `labels`. The rows are views over memory handed over by the native side.
   */
  logits(text: TextInput): Promise<Float32Array>;
  logits(texts: readonly TextInput[]): Promise<Float32Array[]>;
  async logits(input: TextInput | readonly TextInput[]): Promise<Float32Array | Float32Array[]> {
    const stack = callerStack(this.logits);
    const single = !Array.isArray(input);
    const rows = await this.#run(single ? [input as TextInput] : (input as readonly TextInput[]), single, stack, true);
    const out = rows.map(({ result, row }) => result.logits.subarray(row * result.cols, (row + 1) * result.cols));
    return single ? (out[0] as Float32Array) : out;
  }

  /**
   * Refuses new calls, lets every call already made finish, then frees the model.
   * Idempotent: a second call waits for the same end.
   */
  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#closing = Promise.allSettled(this.#inflight).then(() => this.#handle.close());
    }
    return this.#closing;
  }

  #texts(input: readonly TextInput[], single: boolean): string[] {
    if (input.length === 0)
      throw new InvalidArgumentError('Expected texts to be a non-empty array, got an empty array');
    return input.map((item, i) => {
      const name = single ? 'text' : `texts[${i}]`;
      let text: string;
      if (typeof item === 'string') {
        text = item;
      } else if (item instanceof Uint8Array) {
        try {
          text = utf8.decode(item);
        } catch {
          throw new InvalidArgumentError(`Expected ${name} to be valid UTF-8, got bytes that are not`);
        }
      } else {
        throw invalid(name, 'a string or a Uint8Array of UTF-8', item);
      }
      if (text.length > this.#info.maxTextLength) {
        throw new InvalidArgumentError(
          `Expected ${name} to be at most ${this.#info.maxTextLength} characters (the "maxTextLength" option), got ${text.length}`,
        );
      }
      return text;
    });
  }

  #run(
    input: readonly TextInput[],
    single: boolean,
    stack: string,
    wantLogits: boolean,
  ): Promise<Array<{ result: NativeInferResult; row: number; truncated: boolean }>> {
    if (this.#closed) return Promise.reject(restack(new ClosedError(), stack));
    const call = this.#runOpen(input, single, stack, wantLogits);
    this.#inflight.add(call);
    void call.finally(() => this.#inflight.delete(call)).catch(() => {});
    return call;
  }

  async #runOpen(
    input: readonly TextInput[],
    single: boolean,
    stack: string,
    wantLogits: boolean,
  ): Promise<Array<{ result: NativeInferResult; row: number; truncated: boolean }>> {
    try {
      const texts = this.#texts(input, single);
      const encoded = await this.#tokenizer.encode(texts);
      const rows: Array<{ result: NativeInferResult; row: number; truncated: boolean }> = [];
      const batch = this.#info.maxBatchSize;
      const pending: Array<Promise<NativeInferResult>> = [];
      for (let start = 0; start < encoded.length; start += batch) {
        pending.push(this.#infer(encoded.slice(start, start + batch), wantLogits));
      }
      const results = await Promise.all(pending);
      results.forEach((result, b) => {
        for (let row = 0; row < result.rows; row++) {
          rows.push({ result, row, truncated: (encoded[b * batch + row] as Encoded).truncated });
        }
      });
      return rows;
    } catch (error) {
      throw error instanceof BertgateError ? restack(error, stack) : fromNative(error, stack);
    }
  }

  #infer(encoded: readonly Encoded[], wantLogits: boolean): Promise<NativeInferResult> {
    const batch = this.#tokenizer.pad(encoded);
    return this.#handle.infer({
      ...batch,
      temperature: this.#info.temperature,
      topK: this.#info.topK,
      wantLogits,
      wantLogProbs: false,
    });
  }
}
