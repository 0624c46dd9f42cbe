/**
 * The library's front door: a loaded bundle that classifies text. Load, classify, logits,
 * log-probabilities, close, and the out-of-memory split; the options and their defaults live
 * in options.ts, the checking of texts in inputs.ts, the scheduling in batcher.ts.
 *
 * Everything is validated before the native boundary; the native side receives normalised
 * values and trusts them.
 */

import { Batcher, EntryFailure, type BatchEvent, type BatcherStats } from './batcher.js';
import type {
  NativeCpuCache,
  NativeEngineHandle,
  NativeInferRequest,
  NativeInferResult,
  NativeModelInfo,
} from './binding.js';
import { DEFAULT_MODEL, checkAgainstModel, readBundle, type Bundle } from './bundle.js';
import type { Gate } from './calibration/file.js';
import { DecisionPolicy, type Decision } from './decision.js';
import { DriftMonitor, type DriftState, type DriftStats } from './drift.js';
import {
  BertgateError,
  ClosedError,
  DeviceUnavailableError,
  InvalidArgumentError,
  callerStack,
  fromNative,
  restack,
} from './errors.js';
import { normaliseTexts, type TextInput } from './inputs.js';
import { callListeners } from './listeners.js';
import {
  DEFAULTS,
  oversubscription,
  parseCallOptions,
  parseOptions,
  resolveAgainstBundle,
  type BatchingOptions,
  type CallOptions,
  type ClassifierOptions,
  type Settings,
  warmupShape,
} from './options.js';
import { ReplicaSet, isBatchFault, resolveDevices, textAtFault, type ReplicaStats } from './replicas.js';
import { resolveRule } from './rule.js';
import { openRuntime } from './runtime/open.js';
import { engineSwitches } from './runtime/engine-switches.js';
import { TextTokenizer, type Encoded, type TruncationSide, type TruncationStrategy } from './tokenizer.js';
import { invalid } from './validate.js';

export interface ClassifierStats extends BatcherStats {
  /** Batches split in half after the device ran out of memory for them. */
  outOfMemorySplits: number;
  /** Batches split in half after failing on a replica that was not at fault (a text the model cannot run). */
  faultSplits: number;
  /** The drift alarm (lib/drift.ts), or null where it is off or the bundle has no drift reference. */
  drift: DriftStats | null;
  /** Per replica, in `info.replicas` order: its work, and its health. */
  replicas: ReplicaStats[];
  /**
   * libtorch's warnings while the model loaded (`info.model.torchWarnings`): kept off stderr, so
   * they are here for `GET /stats` to show (an int8 bundle on torch >= 2.13: the deprecation of
   * quantized tensors). Warnings raised later, in forward passes, are in `doctor()`'s process-wide list.
   */
  torchWarnings: readonly string[];
  /**
   * libtorch's CPU allocator in this process after the latest batch (process-wide, shared by every
   * classifier): what its cache of large buffers holds and the bound it is held to; null before the
   * first batch.
   */
  cpuCache: NativeCpuCache | null;
}

export interface ClassifierInfo {
  bundleDir: string;
  labels: readonly string[];
  otherLabel: string;
  /** The first replica's device; `replicas` lists them all. */
  device: string;
  /** Every replica and its device: devices in the order asked for, `replicas` on each. */
  replicas: readonly { replica: number; device: string }[];
  dtype: string;
  threshold: number;
  /** Per label; null: that label is never accepted (calibrate certified no threshold for it). */
  thresholds: Readonly<Record<string, number | null>>;
  /** Whether a calibration map turns probabilities into the confidence the thresholds apply to. */
  confidenceMap: boolean;
  /** The out-of-distribution gate in force, or null. */
  gate: { alpha: number; threshold: number; dim: number } | null;
  temperature: number;
  topK: number;
  /** Intra-op threads per replica. */
  threads: number;
  maxLength: number;
  maxTextLength: number;
  truncation: TruncationStrategy;
  truncationSide: TruncationSide;
  batching: Required<BatchingOptions>;
  frozen: boolean;
  /** 'int8': the Linear layers run as int8 (CPU only; bundle.json "quantization"). */
  quantization: 'int8' | null;
  /** The bundle's weights are random (a development stand-in, not a trained model). */
  randomWeights: boolean;
  /**
   * The guarantee calibration.json records for its rule, if any; undefined when the caller changed
   * the rule (a temperature, threshold or per-label thresholds of its own, or the gate turned off).
   */
  guarantee: Readonly<Record<string, unknown>> | undefined;
  model: NativeModelInfo;
}

interface Row {
  result: NativeInferResult;
  row: number;
  truncated: boolean;
}

/** The gate in force: the calibration's, unless turned off; asked for where there is none, an error. */
function gateOf(settings: Settings, bundle: Bundle, bundleDir: string): Gate | undefined {
  if (settings.gate === false) return undefined;
  const gate = bundle.calibration?.gate;
  if (!gate && settings.gate === true) {
    throw new InvalidArgumentError(
      `The "gate" option asks for the out-of-distribution gate, but ${bundleDir}/calibration.json has none: ` +
        'calibrate with --gate-alpha (on a bundle exported with --features)',
    );
  }
  return gate;
}

/**
 * The drift alarm of a classifier: on by default where calibration.json carries a drift
 * reference, at the calibration's temperature (another temperature serves scores on another
 * scale, so the comparison would alarm for nothing); asked for explicitly where it cannot run,
 * an error rather than silently nothing.
 */
function driftMonitor(
  settings: Settings,
  bundle: Bundle,
  temperature: number,
  bundleDir: string,
): DriftMonitor | undefined {
  if (settings.drift === false) return undefined;
  const calibration = bundle.calibration;
  const asked = settings.drift !== undefined;
  const reference = calibration?.drift;
  if (!reference) {
    if (!asked) return undefined;
    throw new InvalidArgumentError(
      `The "drift" option needs a drift reference in ${bundleDir}/calibration.json, which has none: ` +
        're-run bertgate calibrate (it records one)',
    );
  }
  if (temperature !== calibration.temperature) {
    if (!asked) return undefined;
    throw new InvalidArgumentError(
      `The "drift" option compares texts with the calibration's at its temperature ${calibration.temperature}; ` +
        `the "temperature" option is ${temperature}`,
    );
  }
  return new DriftMonitor(reference, (settings.drift ?? DEFAULTS.drift).alpha);
}

/** The CUDA devices to place replicas on: those asked for, checked against what libtorch sees. */
async function cudaDevices(makeHandle: () => NativeEngineHandle, asked: readonly number[] | 'all'): Promise<number[]> {
  const handle = makeHandle();
  try {
    return resolveDevices(asked, (await handle.runtime()).cudaDeviceCount);
  } finally {
    await handle.close();
  }
}

/** Oversubscribed CPU threads: allowed, said once (options.ts owns the rule). */
function warnOversubscribed(settings: Settings): void {
  const note = oversubscription(settings);
  if (note) process.emitWarning(note, { type: 'BertgateWarning', code: 'ERR_THREADS_OVERSUBSCRIBED' });
}

/** What a call wants back of each of its texts: a decision's scores, raw logits, or log-probabilities. */
type Want = 'scores' | 'logits' | 'logProbs' | 'features';
interface Job {
  encoded: Encoded;
  want: Want;
}

/**
 * For calibrate only (index.ts does not export it): a classifier of the bundle as if it had no
 * calibration.json (what an earlier calibration left plays no part in a new one, and an old or
 * broken one must not stop it), serving `gate`, a gate being fitted, where given, so that the
 * gate's threshold is chosen among the scores the engine itself serves. Options as
 * Classifier.load takes them.
 */
export let loadForCalibration: (
  bundleDir: string,
  options: ClassifierOptions<string, string>,
  gate?: Gate,
) => Promise<Classifier<string, string>>;

/**
 * For tests only (index.ts does not export it): closes replica `index`'s native engine under
 * it, so that its next batch fails with a real native fault (ERR_CLOSED from the addon) and
 * its probe does too: how test/replicas.test.ts takes a replica out on purpose.
 */
export let sabotageReplica: (classifier: Classifier<string, string>, index: number) => Promise<void>;

export class Classifier<L extends string = string, O extends string = 'Other'> {
  static {
    sabotageReplica = (classifier, index) => classifier.#replicas.sabotage(index);
    loadForCalibration = async (bundleDir, options, gate) => {
      const stack = callerStack(loadForCalibration);
      try {
        return await Classifier.#load<string, string>(bundleDir, parseOptions(options), { gate });
      } catch (error) {
        throw error instanceof BertgateError ? restack(error, stack) : fromNative(error, stack);
      }
    };
  }

  readonly labels: readonly L[];
  readonly otherLabel: O;
  readonly #replicas: ReplicaSet;
  readonly #tokenizer: TextTokenizer;
  readonly #policy: DecisionPolicy<L, O>;
  readonly #batcher: Batcher<Job, Row>;
  readonly #info: ClassifierInfo;
  // Calls accepted before close(): close() waits for them, including those still tokenizing.
  readonly #inflight = new Set<Promise<unknown>>();
  #closed = false;
  #outOfMemorySplits = 0;
  #cpuCache: NativeCpuCache | null = null;
  #faultSplits = 0;
  readonly #drift: DriftMonitor | undefined;
  /** Whether the model has a token type for a pair's second text. */
  readonly #pairs: boolean;
  readonly #driftListeners = new Set<(stats: DriftStats) => void>();
  #closing: Promise<void> = Promise.resolve();

  private constructor(
    handles: { handle: NativeEngineHandle; device: string }[],
    probe: NativeInferRequest,
    tokenizer: TextTokenizer,
    policy: DecisionPolicy<L, O>,
    info: ClassifierInfo,
    drift: DriftMonitor | undefined,
    pairs: boolean,
  ) {
    this.#drift = drift;
    this.#pairs = pairs;
    this.#tokenizer = tokenizer;
    // Health changes resize the batcher's pipeline: batchesInFlight per replica that takes batches.
    this.#replicas = ReplicaSet.from(handles, probe, () => this.#batcher.setReplicas(this.#replicas.available));
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
      replicas: handles.length,
      lengthAware: batching.lengthAware,
      maxPaddingRatio: batching.maxPaddingRatio,
      paddedLength: (longest) => tokenizer.paddedLength(longest),
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
    forCalibration?: { gate: Gate | undefined },
  ): Promise<Classifier<L, O>> {
    const switches = engineSwitches();
    const runtime = await openRuntime();
    const bundle = await readBundle(
      bundleDir,
      forCalibration
        ? { calibration: false, verify: settings.verify }
        : { gate: settings.gate !== false, verify: settings.verify },
    );
    const resolved = resolveAgainstBundle(settings, bundle);
    const gate = forCalibration ? forCalibration.gate : gateOf(settings, bundle, bundleDir);
    const rule = resolveRule(settings, bundle, gate);
    const deviceName =
      settings.device === 'cpu'
        ? 'cpu'
        : settings.deviceIndices === 'all'
          ? 'cuda:*'
          : settings.deviceIndices.map((i) => `cuda:${i}`).join(', ');
    if (bundle.quantization === 'int8' && settings.device === 'cuda') {
      throw new InvalidArgumentError(
        `The bundle at ${bundleDir} holds int8 weights (bundle.json "quantization"), which run on the CPU only ` +
          `(its int8 Linear layers have no CUDA kernel); load it with device "cpu", or export the model without ` +
          `--quantize for "${deviceName}"`,
      );
    }
    if (settings.device === 'cuda' && !runtime.cuda.loaded) {
      throw new DeviceUnavailableError(
        `device '${deviceName}' was requested but libtorch's CUDA libraries are not loaded: ${runtime.cuda.reason}`,
      );
    }
    const { batching } = resolved;
    const tokenizer = await TextTokenizer.load(bundle.tokenizerPath, {
      maxLength: bundle.maxLength,
      strategy: settings.truncation,
      side: settings.truncationSide,
      padToMultipleOf: batching.padToMultipleOf,
    });
    const warmup = warmupShape(settings.device, batching, bundle.maxLength, (n) => tokenizer.paddedLength(n));
    const makeHandle = (): NativeEngineHandle => new runtime.addon.EngineHandle();
    const devices = settings.device === 'cuda' ? await cudaDevices(makeHandle, settings.deviceIndices) : [0];
    warnOversubscribed(settings);
    const loaded = await ReplicaSet.load(
      { kind: settings.device, devices, perDevice: settings.replicas, threads: settings.threads },
      makeHandle,
      async (handle, deviceIndex) => {
        const model = await handle.load({
          modelPath: bundle.modelPath,
          device: settings.device,
          deviceIndex,
          dtype: settings.dtype,
          threads: settings.threads,
          freeze: settings.freeze,
          cudaMemoryFraction: settings.cudaMemoryFraction,
          ...switches,
          ...warmup,
          ...(gate
            ? { gateDim: gate.dim, gateProjection: gate.projection, gateCentres: gate.centres }
            : { gateDim: 0 }),
        });
        checkAgainstModel(bundle, model, tokenizer.vocabSize);
        return model;
      },
    );
    const { model } = loaded;
    // What a suspended replica is probed with (replicas.ts): one empty text, which any working engine runs.
    const empty = tokenizer.pad(await tokenizer.encode(['']));
    const probe: NativeInferRequest = {
      tokens: empty.tokens,
      rows: empty.rows,
      seqLen: empty.seqLen,
      temperature: 1,
      topK: 1,
      wantLogits: false,
      wantLogProbs: false,
      wantFeatures: false,
    };
    const policy = new DecisionPolicy<L, O>(bundle.labels as L[], settings.otherLabel as O, rule, gate?.threshold);
    const info: ClassifierInfo = {
      bundleDir,
      labels: bundle.labels,
      otherLabel: settings.otherLabel,
      device: model.device,
      replicas: loaded.handles.map(({ device }, replica) => ({ replica, device })),
      dtype: model.dtype,
      threshold: rule.threshold,
      thresholds: Object.fromEntries(bundle.labels.map((l, i) => [l, policy.thresholdFor(i)])),
      confidenceMap: rule.map !== undefined,
      gate: gate ? { alpha: gate.alpha, threshold: gate.threshold, dim: gate.dim } : null,
      temperature: rule.temperature,
      topK: resolved.topK,
      threads: settings.threads,
      maxLength: bundle.maxLength,
      maxTextLength: settings.maxTextLength,
      truncation: settings.truncation,
      truncationSide: settings.truncationSide,
      batching,
      frozen: model.frozen,
      quantization: bundle.quantization,
      randomWeights: bundle.manifest?.random_weights === true,
      guarantee: rule.guarantee,
      model,
    };
    return new Classifier<L, O>(
      loaded.handles,
      probe,
      tokenizer,
      policy,
      info,
      driftMonitor(settings, bundle, rule.temperature, bundleDir),
      // A pair's second text has token type 1: past a one-row table it would fail inside the model.
      (model.typeVocabRows >= 0 ? model.typeVocabRows : bundle.typeVocabSize) >= 2,
    );
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
    const { single, rows } = await this.#run(input, options, callerStack(this.classify), 'scores');
    const decisions = rows.map(({ result, row, truncated }) => this.#policy.decide(result, row, truncated));
    if (this.#drift) this.#observe(decisions);
    return single ? (decisions[0] as Decision<L, O>) : decisions;
  }

  /**
   * Raw logits (fp32, before temperature), one row of `labels.length` per text, in the
   * order of `labels`. The rows are views over memory handed over by the native side.
   */
  logits(text: TextInput, options?: CallOptions): Promise<Float32Array>;
  logits(texts: readonly TextInput[], options?: CallOptions): Promise<Float32Array[]>;
  async logits(input: TextInput | readonly TextInput[], options?: CallOptions): Promise<Float32Array | Float32Array[]> {
    return this.#vectors(input, options, callerStack(this.logits), 'logits', (r) => [r.logits, r.cols]);
  }

  /**
   * The whole distribution: log softmax(logits / temperature) of every label (fp32, from the
   * same fused pass as the decisions), one row of `labels.length` per text, in the order of
   * `labels`. For the best few labels, a decision's `top` (`topK`, up to 64) is cheaper.
   */
  logProbabilities(text: TextInput, options?: CallOptions): Promise<Float32Array>;
  logProbabilities(texts: readonly TextInput[], options?: CallOptions): Promise<Float32Array[]>;
  async logProbabilities(
    input: TextInput | readonly TextInput[],
    options?: CallOptions,
  ): Promise<Float32Array | Float32Array[]> {
    return this.#vectors(input, options, callerStack(this.logProbabilities), 'logProbs', (r) => [r.logProbs, r.cols]);
  }

  /**
   * The features the model returns beside its logits (fp32, `info.model.featureWidth` per
   * text, from the same pass): what the out-of-distribution gate reads, for fitting one or
   * inspecting it. Only bundles exported with --features (format 2) return them: the pooled
   * vector, with --feature-kind pooler+mean that vector beside the last layer's mean, with
   * mean:K the mean of hidden state K.
   * @throws {InvalidArgumentError} the model returns no features
   */
  features(text: TextInput, options?: CallOptions): Promise<Float32Array>;
  features(texts: readonly TextInput[], options?: CallOptions): Promise<Float32Array[]>;
  async features(
    input: TextInput | readonly TextInput[],
    options?: CallOptions,
  ): Promise<Float32Array | Float32Array[]> {
    const width = this.#info.model.featureWidth;
    if (width === 0) {
      throw restack(
        new InvalidArgumentError(
          `The model in ${this.#info.bundleDir} returns no features (export it with --features, bundle format 2)`,
        ),
        callerStack(this.features),
      );
    }
    return this.#vectors(input, options, callerStack(this.features), 'features', (r) => [r.features, width]);
  }

  /** One row of `width` per text from `pick`'s buffer (views, no copies): logits, log-probabilities, features. */
  async #vectors(
    input: unknown,
    options: CallOptions | undefined,
    stack: string,
    want: Want,
    pick: (result: NativeInferResult) => [Float32Array, number],
  ): Promise<Float32Array | Float32Array[]> {
    const { single, rows } = await this.#run(input, options, stack, want);
    const out = rows.map(({ result, row }) => {
      const [buffer, width] = pick(result);
      return buffer.subarray(row * width, (row + 1) * width);
    });
    return single ? (out[0] as Float32Array) : out;
  }

  /**
   * The confidence a decision would carry for this probability of its best label: through the
   * bundle's calibration map when it has one (and the temperature is the calibration's), else
   * the probability itself. The thresholds apply to it.
   *
   * @throws {InvalidArgumentError} not a number in [0, 1]
   */
  confidenceOf(probability: number): number {
    if (typeof probability !== 'number' || !(probability >= 0 && probability <= 1)) {
      throw invalid('the probability given to confidenceOf', 'a number in [0, 1]', probability);
    }
    return this.#policy.confidenceOf(probability);
  }

  /** Queue depth, batch sizes, padding, latency percentiles. */
  stats(): ClassifierStats {
    return {
      ...this.#batcher.stats(),
      outOfMemorySplits: this.#outOfMemorySplits,
      faultSplits: this.#faultSplits,
      drift: this.#drift ? this.#drift.stats() : null,
      replicas: this.#replicas.stats(),
      torchWarnings: this.#info.model.torchWarnings,
      cpuCache: this.#cpuCache,
    };
  }

  /**
   * Calls `listener` once, when the drift alarm goes off (its change-point statistic over the texts
   * classified since load or resetDrift() reaches 1000 / alpha); returns the unsubscribe function.
   */
  onDrift(listener: (stats: DriftStats) => void): () => void {
    if (typeof listener !== 'function') throw invalid('the onDrift listener', 'a function', listener);
    this.#driftListeners.add(listener);
    return () => this.#driftListeners.delete(listener);
  }

  /** Starts the drift alarm afresh against the calibration: after re-calibrating, or once a drift is dealt with. */
  resetDrift(): void {
    this.#drift?.reset();
  }

  /** The drift alarm's state, to carry across a restart with restoreDrift(); null where it is off. */
  driftState(): DriftState | null {
    return this.#drift ? this.#drift.state() : null;
  }

  /**
   * Continues the drift alarm from a saved state.
   * @throws {DriftStateError} the state is from another calibration or alpha, or malformed
   * @throws {InvalidArgumentError} this classifier has no drift alarm
   */
  restoreDrift(state: DriftState): void {
    if (!this.#drift) throw new InvalidArgumentError('This classifier has no drift alarm to restore a state into');
    this.#drift.restore(state);
  }

  // Every classified text goes to the monitor, in order; listeners run after the call, and one
  // that throws fails neither the call nor the process (lib/listeners.ts).
  #observe(decisions: Decision<L, O>[]): void {
    const monitor = this.#drift as DriftMonitor;
    for (const d of decisions) {
      if (monitor.observe(d.probability, d.accepted)) {
        const stats = monitor.stats();
        const listeners = [...this.#driftListeners];
        queueMicrotask(() => callListeners(listeners, stats, 'onDrift'));
      }
    }
  }

  /** Calls `listener` for every batch sent to the model; returns the unsubscribe function. */
  onBatch(listener: (event: BatchEvent) => void): () => void {
    if (typeof listener !== 'function') throw invalid('the onBatch listener', 'a function', listener);
    return this.#batcher.observe(listener);
  }

  /**
   * Refuses new calls and frees the model once the calls already made are settled: with
   * `drain` (the default) they all run; with `drain: false` the ones still queued reject
   * with ClosedError, and only batches already on the device finish. Idempotent, except that
   * `drain: false` during a drain hurries it: what is still queued rejects then.
   */
  close(options: { drain?: boolean } = {}): Promise<void> {
    const drain = options.drain ?? true;
    if (this.#closed) {
      if (!drain) void this.#batcher.close('reject');
    } else {
      this.#closed = true;
      this.#closing = (async () => {
        if (!drain) await this.#batcher.close('reject');
        await Promise.allSettled(this.#inflight);
        await this.#batcher.close('drain');
        await this.#replicas.close();
      })();
    }
    return this.#closing;
  }

  /** Validates, then hands the texts to the batcher, which admits (or refuses) the call before they are tokenized. */
  #run(
    input: unknown,
    options: CallOptions | undefined,
    stack: string,
    want: Want,
  ): Promise<{ single: boolean; rows: Row[] }> {
    if (this.#closed) return Promise.reject(restack(new ClosedError(), stack));
    if (this.#replicas.healthy === 0) return Promise.reject(restack(this.#replicas.noneHealthy(), stack));
    const call = (async () => {
      const { signal, timeoutMs } = parseCallOptions(options);
      const { single, inputs } = normaliseTexts(input, this.#info.maxTextLength);
      const pair = this.#pairs ? -1 : inputs.findIndex((x) => typeof x !== 'string');
      if (pair >= 0) {
        throw new InvalidArgumentError(
          `${single ? 'The text' : `texts[${pair}]`} is a text pair, but this model has one token type ` +
            '(config.json "type_vocab_size" 1): it classifies single texts only',
        );
      }
      const rows = await this.#batcher
        .admit(
          inputs.length,
          async () =>
            (await this.#tokenizer.encode(inputs)).map((e) => ({
              tokens: e.ids.length,
              payload: { encoded: e, want },
            })),
          { signal, timeoutMs },
        )
        .catch((error: unknown) => {
          throw single ? error : atText(error);
        });
      return { single, rows };
    })().catch((error: unknown) => {
      throw error instanceof BertgateError ? restack(error, stack) : fromNative(error, stack, 'inference');
    });
    this.#inflight.add(call);
    void call.finally(() => this.#inflight.delete(call)).catch(() => {});
    return call;
  }

  /**
   * A batch the device has no memory for is split in halves and retried on its replica, down
   * to single texts; a text that does not fit alone fails with OutOfMemoryError. A batch that
   * fails on a replica its probe then finds healthy (a text the model cannot run: the replica
   * is fine) is split the same way, each half free to run on any replica, down to the text that
   * fails. Either way only the calls holding a text that failed alone fail: their batch-mates
   * are answered. The halves run one after the other, so their peaks do not add up.
   */
  async #infer(jobs: Job[]): Promise<Array<Row | EntryFailure>> {
    try {
      return await this.#replicas.run(jobs.length, (handle) => this.#split(handle, jobs));
    } catch (error) {
      if (!isBatchFault(error)) throw error;
      if (jobs.length === 1) return [new EntryFailure(textAtFault(error as Error))];
      this.#faultSplits++;
      const half = Math.ceil(jobs.length / 2);
      const first = await this.#infer(jobs.slice(0, half));
      return [...first, ...(await this.#infer(jobs.slice(half)))];
    }
  }

  /** The out-of-memory split, on the replica that ran out: its halves run one after the other there. */
  async #split(handle: NativeEngineHandle, jobs: Job[]): Promise<Array<Row | EntryFailure>> {
    try {
      return await this.#forward(handle, jobs);
    } catch (error) {
      if ((error as { code?: unknown } | null)?.code !== 'ERR_OUT_OF_MEMORY') throw error;
      if (jobs.length === 1) return [new EntryFailure(error as Error)];
      this.#outOfMemorySplits++;
      const half = Math.ceil(jobs.length / 2);
      const first = await this.#split(handle, jobs.slice(0, half));
      return [...first, ...(await this.#split(handle, jobs.slice(half)))];
    }
  }

  async #forward(handle: NativeEngineHandle, jobs: Job[]): Promise<Row[]> {
    const batch = this.#tokenizer.pad(jobs.map((j) => j.encoded));
    const result = await handle.infer({
      tokens: batch.tokens,
      rows: batch.rows,
      seqLen: batch.seqLen,
      temperature: this.#info.temperature,
      topK: this.#info.topK,
      wantLogits: jobs.some((j) => j.want === 'logits'),
      wantLogProbs: jobs.some((j) => j.want === 'logProbs'),
      wantFeatures: jobs.some((j) => j.want === 'features'),
    });
    this.#cpuCache = result.cpuCache;
    return jobs.map((j, row) => ({ result, row, truncated: j.encoded.truncated }));
  }
}

/** A text of a call of several that failed alone (the batcher gave its error the text's index): the error names it. */
function atText(error: unknown): unknown {
  const index = (error as { index?: unknown } | null)?.index;
  if (typeof index !== 'number') return error;
  return Object.assign(new Error(`texts[${index}]: ${(error as Error).message}`), {
    code: (error as { code?: unknown }).code,
  });
}
