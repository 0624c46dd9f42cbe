/**
 * Bulk classification on BullMQ (Redis): `createWorker(classifier, { queue, connection })`
 * takes jobs of `{ texts: [...], options?: { timeoutMs } }` from the queue and returns
 * `{ decisions: [...] }`, the decisions `serve` answers, one per text, in order.
 *
 * A job is one chunk of texts. Jobs in flight (`concurrency`) all feed the classifier's one
 * batcher, which merges them into device batches. Bad input fails a job at once with BullMQ's
 * UnrecoverableError (never retried), its reason naming the text; every other failure
 * (overloaded, out of memory, a replica fault, a closing classifier) is a plain Error, which the
 * job's `attempts` and `backoff` retry. Delivery is at-least-once: the jobs of a worker that dies
 * come back as stalled once its locks expire, and another worker classifies them again.
 */

import { setMaxListeners } from 'node:events';

import { UnrecoverableError, Worker, type ConnectionOptions, type Job } from 'bullmq';

import type { Classifier } from './classifier.js';
import type { Decision } from './decision.js';
import { BertgateError, InvalidArgumentError } from './errors.js';
import type { TextInput } from './inputs.js';
import type { CallOptions } from './options.js';
import { integerIn, invalid, isPlainObject, option } from './validate.js';

/** A job's data: one chunk of texts (strings or `{ text, pair }`), JSON as BullMQ stores it. */
export interface ClassifyJobData {
  texts: TextInput[];
  options?: { timeoutMs?: number };
}

/** A job's return value: one decision per text, in order. */
export interface ClassifyJobResult<L extends string = string, O extends string = 'Other'> {
  decisions: Decision<L, O>[];
}

export interface WorkerOptions {
  /** The queue's name (BullMQ's). */
  queue: string;
  /** Where Redis is: BullMQ's connection options (`{ url: 'redis://host:6379' }`, `{ host, port }`) or a client. */
  connection: ConnectionOptions;
  /** Jobs classified at once; default 2, so the batcher can fill a batch from the next job. */
  concurrency?: number;
  /**
   * How long a job's lock holds without renewal (BullMQ's lockDuration, default 30 s): the
   * jobs of a worker that died come back this long after its last renewal.
   */
  lockDurationMs?: number;
  /** How often the worker looks for stalled jobs (BullMQ's stalledInterval, default 30 s). */
  stalledIntervalMs?: number;
}

/** What the worker uses of a classifier (a narrower type, so tests can stand in for one). */
export type JobClassifier<L extends string, O extends string> = Pick<Classifier<L, O>, 'classify' | 'info'>;

const MAX_CONCURRENCY = 10_000;
const MAX_TIMER_MS = 2 ** 31 - 1;

function checkOptions(options: unknown): Required<Pick<WorkerOptions, 'queue' | 'concurrency'>> {
  if (!isPlainObject(options)) throw invalid('the worker options', 'an object', options);
  const known = ['queue', 'connection', 'concurrency', 'lockDurationMs', 'stalledIntervalMs'];
  const unknown = Object.keys(options).find((k) => !known.includes(k));
  if (unknown !== undefined)
    throw new InvalidArgumentError(
      `Unknown worker option ${JSON.stringify(unknown)}; expected one of ${known.join(', ')}`,
    );
  const { queue, connection, concurrency = 2, lockDurationMs, stalledIntervalMs } = options;
  // BullMQ builds its Redis keys from the name with ':' as the separator.
  if (typeof queue !== 'string' || queue === '' || queue.includes(':'))
    throw invalid(option('queue'), 'a non-empty string without ":"', queue);
  if (typeof connection !== 'object' || connection === null)
    throw invalid(option('connection'), "BullMQ's connection options or a Redis client", connection);
  if (lockDurationMs !== undefined) integerIn(option('lockDurationMs'), lockDurationMs, 1, MAX_TIMER_MS);
  if (stalledIntervalMs !== undefined) integerIn(option('stalledIntervalMs'), stalledIntervalMs, 1, MAX_TIMER_MS);
  return { queue, concurrency: integerIn(option('concurrency'), concurrency, 1, MAX_CONCURRENCY) };
}

/**
 * A BullMQ Worker classifying the jobs of `options.queue`; it starts at once. `worker.close()`
 * stops taking jobs and waits for the active ones; close the classifier after it.
 *
 * @example
 * const classifier = await Classifier.load('./model');
 * const worker = createWorker(classifier, { queue: 'tickets', connection: { url: 'redis://localhost:6379' } });
 * process.once('SIGTERM', async () => { await worker.close(); await classifier.close(); });
 * @throws {InvalidArgumentError} an option of the wrong type or out of range
 */
export function createWorker<L extends string, O extends string>(
  classifier: JobClassifier<L, O>,
  options: WorkerOptions,
): Worker<ClassifyJobData, ClassifyJobResult<L, O>> {
  const { queue, concurrency } = checkOptions(options);
  const budget = new TextBudget(classifier.info.batching.maxQueue);
  return new Worker<ClassifyJobData, ClassifyJobResult<L, O>>(queue, (job) => classifyJob(classifier, job, budget), {
    connection: options.connection,
    concurrency,
    ...(options.lockDurationMs === undefined ? {} : { lockDuration: options.lockDurationMs }),
    ...(options.stalledIntervalMs === undefined ? {} : { stalledInterval: options.stalledIntervalMs }),
  });
}

/**
 * The texts a worker has in its classifier at once, across all its jobs, kept within the
 * classifier's queue (maxQueue): jobs the worker took on itself must not overload it (they
 * would fail with ERR_OVERLOADED, for good where a producer gave one attempt), and a job
 * larger than the queue goes through in waves instead of never fitting.
 */
class TextBudget {
  #free: number;
  readonly #waiting: Array<{ texts: number; go: () => void }> = [];

  constructor(texts: number) {
    this.#free = texts;
  }

  async take(texts: number): Promise<void> {
    if (this.#waiting.length === 0 && texts <= this.#free) {
      this.#free -= texts;
      return;
    }
    // First come, first served: a large piece is not starved by small ones behind it.
    await new Promise<void>((go) => this.#waiting.push({ texts, go }));
  }

  give(texts: number): void {
    this.#free += texts;
    for (let next = this.#waiting[0]; next !== undefined && next.texts <= this.#free; next = this.#waiting[0]) {
      this.#waiting.shift();
      this.#free -= next.texts;
      next.go();
    }
  }
}

/** The job's texts and call options, or InvalidArgumentError saying what is wrong with its data. */
function readJob(data: unknown): { texts: unknown[]; options: CallOptions } {
  if (!isPlainObject(data)) throw invalid("the job's data", 'an object with "texts" (an array)', data);
  const unknown = Object.keys(data).find((k) => k !== 'texts' && k !== 'options');
  if (unknown !== undefined)
    throw new InvalidArgumentError(
      `Unknown field ${JSON.stringify(unknown)} in the job's data; expected "texts" and optionally "options"`,
    );
  const { texts, options } = data;
  if (!Array.isArray(texts) || texts.length === 0) throw invalid('"texts"', 'a non-empty array', texts);
  if (options === undefined) return { texts, options: {} };
  if (!isPlainObject(options)) throw invalid('"options"', 'an object', options);
  const extra = Object.keys(options).find((k) => k !== 'timeoutMs');
  if (extra !== undefined)
    throw new InvalidArgumentError(`Unknown field ${JSON.stringify(extra)} in "options"; expected "timeoutMs"`);
  return { texts, options: options as CallOptions };
}

/** `texts[i]` in a message about a piece starting at `offset`, as the index in the whole job. */
function renumber(error: InvalidArgumentError, offset: number): string {
  return error.message.replace(/\btexts\[(\d+)\]/g, (_, i: string) => `texts[${Number(i) + offset}]`);
}

/**
 * Classifies a job in pieces of one batch each, queued at once as far as the worker's budget
 * allows (the batcher still merges them with other jobs' texts), so progress moves as pieces
 * finish; the first failure cancels the rest.
 */
async function classifyJob<L extends string, O extends string>(
  classifier: JobClassifier<L, O>,
  job: Job<ClassifyJobData, ClassifyJobResult<L, O>>,
  budget: TextBudget,
): Promise<ClassifyJobResult<L, O>> {
  let texts: unknown[];
  let options: CallOptions;
  try {
    ({ texts, options } = readJob(job.data));
  } catch (error) {
    throw new UnrecoverableError(`ERR_INVALID_ARGUMENT: ${(error as Error).message}`);
  }
  const { maxBatchSize, maxQueue } = classifier.info.batching;
  const piece = Math.min(maxBatchSize, maxQueue);
  const controller = new AbortController();
  // One abort listener per piece: a long job has more than Node's default ten, by design.
  setMaxListeners(0, controller.signal);
  let failure: Error | undefined;
  let done = 0;
  const pieces: Promise<Decision<L, O>[]>[] = [];
  for (let offset = 0; offset < texts.length; offset += piece) {
    const part = texts.slice(offset, offset + piece) as TextInput[];
    pieces.push(
      (async () => {
        await budget.take(part.length);
        try {
          // A piece that waited past the job's failure is not sent at all.
          if (failure !== undefined) return [];
          const decisions = await classifier.classify(part, { ...options, signal: controller.signal });
          done += decisions.length;
          // Progress is advisory: a lost update must not fail the job.
          if (texts.length > piece) job.updateProgress(Math.floor((100 * done) / texts.length)).catch(() => {});
          return decisions;
        } catch (error) {
          // The first failure is the job's; the pieces it cancels fail with AbortedError after it.
          if (failure === undefined) {
            failure = jobError(error, offset);
            controller.abort(error);
          }
          return [];
        } finally {
          budget.give(part.length);
        }
      })(),
    );
  }
  const decisions = (await Promise.all(pieces)).flat();
  if (failure) throw failure;
  return { decisions };
}

/** Bad input is final (UnrecoverableError); any other failure is retried by the job's attempts. */
function jobError(error: unknown, offset: number): Error {
  if (error instanceof InvalidArgumentError) return new UnrecoverableError(`${error.code}: ${renumber(error, offset)}`);
  if (error instanceof BertgateError) return new Error(`${error.code}: ${error.message}`, { cause: error });
  return error instanceof Error ? error : new Error(String(error));
}
