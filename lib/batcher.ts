/**
 * The dynamic batcher: the one scheduler of a model. Many concurrent requests (each a list of
 * tokenized texts) become few well-shaped batches; results go back to each request in its
 * own order. Semantics (DESIGN.md, "Batching semantics"):
 *
 * - a batch holds at most `maxBatchSize` texts and `maxBatchTokens` padded tokens (its
 *   longest row times its rows);
 * - the oldest waiting text is always in the next batch, so nothing starves; with
 *   `lengthAware`, the rest are the texts closest to its length, and a text joins only if
 *   the batch's padding share stays within `maxPaddingRatio` (the rest wait for a better
 *   match: on a CPU a forward pass costs about the same per padded token whatever the batch,
 *   so padding is pure waste);
 * - an idle device never waits: a partial batch is held only while every replica has a batch
 *   on its device, and at most until the oldest text has waited `maxDelayMs`;
 * - up to `inFlight` batches per replica are handed over at once, so preparing batch N+1 on
 *   the host overlaps the device computing batch N (the runner picks the replica; see
 *   replicas.ts);
 * - beyond `maxQueue` waiting texts a submission is refused at once (OverloadedError);
 * - a request's AbortSignal or timeout drops its texts before they reach the device, and
 *   discards results already on their way.
 *
 * It is the one place those refusals are decided and counted: a request is admitted (and
 * counted) before its texts are prepared, so one refused or cancelled while its caller still
 * tokenizes is refused here too. Every request counted in `submitted` ends in exactly one of
 * completed, failed, overloaded, aborted or timedOut.
 *
 * The batcher knows nothing of models: it is given a function that runs one batch.
 */

import { AbortedError, ClosedError, OverloadedError, TimeoutError, type BertgateError } from './errors.js';
import { LatencyWindow } from './latency-window.js';
import { callListeners } from './listeners.js';

export interface BatcherOptions {
  maxBatchSize: number;
  maxBatchTokens: number;
  maxDelayMs: number;
  maxQueue: number;
  /** Batches in flight per replica. */
  inFlight: number;
  /** Replicas taking batches now (default 1); setReplicas() changes it as their health does. */
  replicas?: number;
  lengthAware: boolean;
  /** With lengthAware: the most padding a batch may carry, as a share of its padded tokens. */
  maxPaddingRatio: number;
  /**
   * The length a batch whose longest row is `longest` is padded to (the tokenizer's buckets);
   * the token budget and the padded-token counts use it. Default: `longest`. The padding
   * rule above judges the grouping, so it compares real lengths.
   */
  paddedLength?: (longest: number) => number;
}

export interface BatchItem<T> {
  /** Length in tokens: the row's share of a padded batch. */
  tokens: number;
  payload: T;
}

export interface SubmitOptions {
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
}

/** What an observer hears of each batch handed to the device. */
export interface BatchEvent {
  size: number;
  realTokens: number;
  paddedTokens: number;
}

/** Runs one batch; resolves with one result per payload, in order. */
/**
 * In place of one payload's result: that payload failed alone (its batch was split down to it).
 * Its request fails with the error, given the payload's `index` within its request (an error
 * of its own, so setting it touches no other request); the rest of the batch is delivered.
 */
export class EntryFailure {
  constructor(readonly error: Error) {}
}

export type RunBatch<T, R> = (payloads: T[]) => Promise<Array<R | EntryFailure>>;

export interface BatcherStats {
  /** Texts waiting for the device. */
  queueDepth: number;
  /** Texts admitted whose caller is still preparing them (tokenizing); they count against maxQueue. */
  preparing: number;
  inFlight: number;
  /** Every request that reached the scheduler, and how each ended (the rest are under way). */
  requests: {
    submitted: number;
    completed: number;
    failed: number;
    overloaded: number;
    aborted: number;
    timedOut: number;
  };
  texts: { submitted: number; completed: number };
  batches: number;
  /** batch size -> how many batches had it */
  batchSizes: Record<number, number>;
  realTokens: number;
  paddedTokens: number;
  /** Share of the padded tokens that were padding: 1 - real / padded. */
  paddingRatio: number;
  /** Submission to settlement of a request, over the last 10,000 requests. */
  latencyMs: { p50: number; p90: number; p99: number; max: number; count: number };
}

// Length-aware forming looks this many batches deep into the queue: bounded work per batch,
// and texts far behind the oldest are not reordered ahead of everything.
const WINDOW_BATCHES = 8;

class Request<R> {
  readonly results: R[];
  readonly startedAt = performance.now();
  remaining: number;
  done = false;
  #resolve: (results: R[]) => void;
  #reject: (error: Error) => void;
  #cleanup: (() => void)[] = [];

  constructor(size: number, resolve: (results: R[]) => void, reject: (error: Error) => void) {
    this.results = new Array(size);
    this.remaining = size;
    this.#resolve = resolve;
    this.#reject = reject;
  }

  onSettle(cleanup: () => void): void {
    this.#cleanup.push(cleanup);
  }

  deliver(index: number, result: R): boolean {
    if (this.done) return false;
    this.results[index] = result;
    if (--this.remaining > 0) return false;
    this.#settle();
    this.#resolve(this.results);
    return true;
  }

  fail(error: Error): boolean {
    if (this.done) return false;
    this.#settle();
    this.#reject(error);
    return true;
  }

  #settle(): void {
    this.done = true;
    for (const cleanup of this.#cleanup) cleanup();
  }
}

interface Entry<T, R> {
  request: Request<R>;
  index: number;
  tokens: number;
  payload: T;
  enqueuedAt: number;
  seq: number;
}

export class Batcher<T, R> {
  readonly options: Readonly<BatcherOptions>;
  readonly #run: RunBatch<T, R>;
  readonly #paddedLength: (longest: number) => number;
  #queue: Entry<T, R>[] = [];
  #preparing = 0;
  #inFlight = 0;
  #replicas: number;
  #seq = 0;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #draining = false;
  #rejecting = false;
  #idle: Array<() => void> = [];
  readonly #latency = new LatencyWindow();
  readonly #counts = {
    submitted: 0,
    completed: 0,
    failed: 0,
    overloaded: 0,
    aborted: 0,
    timedOut: 0,
    textsSubmitted: 0,
    textsCompleted: 0,
    batches: 0,
    realTokens: 0,
    paddedTokens: 0,
  };
  readonly #batchSizes: Record<number, number> = {};
  readonly #observers = new Set<(event: BatchEvent) => void>();

  constructor(run: RunBatch<T, R>, options: BatcherOptions) {
    this.#run = run;
    this.options = options;
    this.#paddedLength = options.paddedLength ?? ((longest) => longest);
    this.#replicas = options.replicas ?? 1;
  }

  /**
   * How many replicas take batches now. With none, batches still go out one at a time, so
   * that the runner fails them at once rather than leaving them queued for nobody.
   */
  setReplicas(n: number): void {
    this.#replicas = n;
    this.#pump();
  }

  get queueDepth(): number {
    return this.#queue.length;
  }

  /** Calls `listener` for every batch dispatched; returns the unsubscribe function. */
  observe(listener: (event: BatchEvent) => void): () => void {
    this.#observers.add(listener);
    return () => this.#observers.delete(listener);
  }

  /** Whether `n` more texts would be refused now. */
  wouldOverflow(n: number): boolean {
    return this.#queue.length + this.#preparing + n > this.options.maxQueue;
  }

  submit(items: readonly BatchItem<T>[], options: SubmitOptions = {}): Promise<R[]> {
    return this.admit(items.length, () => items, options);
  }

  /**
   * Admits a request of `count` texts whose items `prepare` makes (tokenizing, say): the
   * refusals (closed, overloaded, already aborted) happen first, before anything is spent on
   * it; its signal and timeout run from here, so they cover the preparing too, and a request
   * cancelled meanwhile never reaches the queue. A failure of `prepare` fails the request.
   */
  admit(
    count: number,
    prepare: () => readonly BatchItem<T>[] | Promise<readonly BatchItem<T>[]>,
    options: SubmitOptions = {},
  ): Promise<R[]> {
    if (this.#closed) return Promise.reject(new ClosedError());
    if (count === 0) return Promise.resolve([]);
    this.#counts.submitted++;
    if (this.wouldOverflow(count)) {
      this.#counts.overloaded++;
      return Promise.reject(
        new OverloadedError(
          `overloaded: ${this.#queue.length + this.#preparing} texts are waiting and ${count} more would exceed maxQueue (${this.options.maxQueue})`,
        ),
      );
    }
    const { signal, timeoutMs } = options;
    if (signal?.aborted) {
      this.#counts.aborted++;
      return Promise.reject(new AbortedError(signal.reason));
    }
    return new Promise<R[]>((resolve, reject) => {
      const request = new Request<R>(count, resolve, reject);
      this.#counts.textsSubmitted += count;
      request.onSettle(() => this.#latency.add(performance.now() - request.startedAt));
      if (signal) {
        const onAbort = (): void => this.#cancel(request, new AbortedError(signal.reason), 'aborted');
        signal.addEventListener('abort', onAbort, { once: true });
        request.onSettle(() => signal.removeEventListener('abort', onAbort));
      }
      if (timeoutMs !== undefined) {
        const timer = setTimeout(() => this.#cancel(request, new TimeoutError(timeoutMs), 'timedOut'), timeoutMs);
        request.onSettle(() => clearTimeout(timer));
      }
      let prepared: readonly BatchItem<T>[] | Promise<readonly BatchItem<T>[]>;
      try {
        prepared = prepare();
      } catch (error) {
        if (request.fail(error as Error)) this.#counts.failed++;
        return;
      }
      // Items at hand are queued now; items still being prepared count against maxQueue
      // meanwhile, and are queued only if the request is still wanted.
      if (!(prepared instanceof Promise)) return this.#enqueue(request, prepared);
      this.#preparing += count;
      prepared
        .finally(() => (this.#preparing -= count))
        .then(
          (items) => {
            if (request.done) return; // cancelled while it was being prepared
            if (this.#rejecting) {
              if (request.fail(new ClosedError('the classifier was closed before this request ran')))
                this.#counts.failed++;
              return;
            }
            this.#enqueue(request, items);
          },
          (error: Error) => {
            if (request.fail(error)) this.#counts.failed++;
          },
        )
        .finally(() => this.#checkIdle());
    });
  }

  #enqueue(request: Request<R>, items: readonly BatchItem<T>[]): void {
    const now = performance.now();
    items.forEach((item, index) =>
      this.#queue.push({
        request,
        index,
        tokens: item.tokens,
        payload: item.payload,
        enqueuedAt: now,
        seq: this.#seq++,
      }),
    );
    this.#pump();
  }

  /**
   * Stops taking requests. 'drain' runs everything already queued (without waiting for
   * fuller batches); 'reject' fails every queued request with ClosedError. Either way,
   * batches already on the device finish. Resolves when nothing is queued or running.
   */
  close(mode: 'drain' | 'reject' = 'drain'): Promise<void> {
    this.#closed = true;
    if (mode === 'reject') {
      this.#rejecting = true;
      const requests = new Set(this.#queue.map((e) => e.request));
      this.#queue = [];
      for (const request of requests) {
        if (request.fail(new ClosedError('the classifier was closed before this request ran'))) this.#counts.failed++;
      }
    } else {
      this.#draining = true;
      this.#pump();
    }
    if (this.#queue.length === 0 && this.#inFlight === 0 && this.#preparing === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  stats(): BatcherStats {
    const c = this.#counts;
    return {
      queueDepth: this.#queue.length,
      preparing: this.#preparing,
      inFlight: this.#inFlight,
      requests: {
        submitted: c.submitted,
        completed: c.completed,
        failed: c.failed,
        overloaded: c.overloaded,
        aborted: c.aborted,
        timedOut: c.timedOut,
      },
      texts: { submitted: c.textsSubmitted, completed: c.textsCompleted },
      batches: c.batches,
      batchSizes: { ...this.#batchSizes },
      realTokens: c.realTokens,
      paddedTokens: c.paddedTokens,
      paddingRatio: c.paddedTokens === 0 ? 0 : 1 - c.realTokens / c.paddedTokens,
      latencyMs: this.#latency.summary(),
    };
  }

  #cancel(request: Request<R>, error: BertgateError, counter: 'aborted' | 'timedOut'): void {
    if (!request.fail(error)) return;
    this.#counts[counter]++;
    this.#queue = this.#queue.filter((e) => e.request !== request);
    this.#checkIdle();
  }

  #pump(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const capacity = Math.max(1, this.#replicas * this.options.inFlight);
    while (this.#inFlight < capacity && this.#queue.length > 0) {
      const { entries, full } = this.#form();
      const waited = performance.now() - (this.#queue[0] as Entry<T, R>).enqueuedAt;
      if (
        this.#inFlight >= Math.max(1, this.#replicas) &&
        !full &&
        !this.#draining &&
        waited < this.options.maxDelayMs
      ) {
        // Every replica is busy: let the batch fill until the oldest text's deadline.
        this.#timer = setTimeout(() => this.#pump(), Math.ceil(this.options.maxDelayMs - waited));
        return;
      }
      this.#dispatch(entries);
    }
  }

  #form(): { entries: Entry<T, R>[]; full: boolean } {
    const { maxBatchSize, maxBatchTokens, lengthAware, maxPaddingRatio } = this.options;
    const oldest = this.#queue[0] as Entry<T, R>;
    const entries = [oldest];
    let longest = oldest.tokens;
    let real = oldest.tokens;
    let full = false;
    const window = this.#queue.slice(1, maxBatchSize * WINDOW_BATCHES);
    if (lengthAware) {
      window.sort((a, b) => Math.abs(a.tokens - oldest.tokens) - Math.abs(b.tokens - oldest.tokens) || a.seq - b.seq);
    }
    for (const candidate of window) {
      if (entries.length === maxBatchSize) break;
      const next = Math.max(longest, candidate.tokens);
      if (this.#paddedLength(next) * (entries.length + 1) > maxBatchTokens) {
        full = true; // the token budget binds: this batch is as good as it gets
        if (lengthAware) continue;
        break; // FIFO keeps arrival order
      }
      if (lengthAware && 1 - (real + candidate.tokens) / (next * (entries.length + 1)) > maxPaddingRatio) continue;
      entries.push(candidate);
      longest = next;
      real += candidate.tokens;
    }
    return { entries, full: full || entries.length === maxBatchSize };
  }

  #dispatch(entries: Entry<T, R>[]): void {
    const taken = new Set(entries);
    this.#queue = this.#queue.filter((e) => !taken.has(e));
    this.#inFlight++;
    const event: BatchEvent = {
      size: entries.length,
      realTokens: entries.reduce((s, e) => s + e.tokens, 0),
      paddedTokens: this.#paddedLength(entries.reduce((m, e) => Math.max(m, e.tokens), 0)) * entries.length,
    };
    this.#counts.batches++;
    this.#counts.realTokens += event.realTokens;
    this.#counts.paddedTokens += event.paddedTokens;
    this.#batchSizes[event.size] = (this.#batchSizes[event.size] ?? 0) + 1;
    callListeners(this.#observers, event, 'onBatch');

    let running: Promise<Array<R | EntryFailure>>;
    try {
      running = this.#run(entries.map((e) => e.payload));
    } catch (error) {
      running = Promise.reject(error);
    }
    const fail = (e: Entry<T, R>, error: Error): void => {
      if (e.request.fail(error)) {
        this.#counts.failed++;
        // The rest of a failed request is dropped rather than run for nobody.
        this.#queue = this.#queue.filter((q) => q.request !== e.request);
      }
    };
    running
      .then(
        (results) =>
          entries.forEach((e, i) => {
            if (e.request.done) return;
            const result = results[i];
            if (result instanceof EntryFailure) return fail(e, Object.assign(result.error, { index: e.index }));
            this.#counts.textsCompleted++;
            if (e.request.deliver(e.index, result as R)) this.#counts.completed++;
          }),
        (error: Error) => entries.forEach((e) => fail(e, error)),
      )
      .finally(() => {
        this.#inFlight--;
        this.#pump();
        this.#checkIdle();
      });
  }

  #checkIdle(): void {
    if (this.#queue.length > 0 || this.#inFlight > 0 || this.#preparing > 0) return;
    for (const resolve of this.#idle.splice(0)) resolve();
  }
}
