// bertgate worker: classifies the jobs of a BullMQ queue (lib/worker.ts) until SIGTERM, SIGINT or
// SIGHUP, then stops taking jobs, finishes the active ones and exits 0. Like serve, the stop
// survives a second signal; a third, or the deadline (--drain-timeout-ms), exits 1 at once, and
// the jobs still active then come back as stalled to another worker (nothing is lost).

import type { Server } from 'node:http';
import { parseArgs } from 'node:util';

import { Classifier } from '../classifier.js';
import { InvalidArgumentError, ListenError } from '../errors.js';
import { DEFAULTS } from '../options.js';
import { serveWorkerMetrics } from '../worker-metrics.js';
import { createWorker } from '../worker.js';
import { MODEL_FLAGS, classifierOptions, integer } from './options.js';

function redisUrl(value: string | undefined): string {
  if (value === undefined) throw new InvalidArgumentError('Expected --redis redis://HOST:PORT (where the queue lives)');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    url = new URL('invalid:');
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:')
    throw new InvalidArgumentError(`Expected --redis to be a redis:// or rediss:// URL, got ${JSON.stringify(value)}`);
  return value;
}

export async function workerCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...MODEL_FLAGS,
      redis: { type: 'string' },
      queue: { type: 'string' },
      concurrency: { type: 'string' },
      'metrics-port': { type: 'string' },
      host: { type: 'string' },
      'lock-duration-ms': { type: 'string' },
      'stalled-interval-ms': { type: 'string' },
      'drain-timeout-ms': { type: 'string' },
    },
    strict: true,
  });
  // Every flag is checked before the model loads: a typo fails in milliseconds, not after it.
  const url = redisUrl(values.redis);
  const queue = values.queue;
  if (queue === undefined || queue === '' || queue.includes(':'))
    throw new InvalidArgumentError(`Expected --queue NAME, a name without ":", got ${JSON.stringify(queue ?? null)}`);
  const concurrency = integer('concurrency', values.concurrency, 2, 1, 10_000);
  const metricsPort =
    values['metrics-port'] === undefined ? undefined : integer('metrics-port', values['metrics-port'], 0, 0, 65535);
  const host = values.host ?? DEFAULTS.server.host;
  const timer = (flag: 'lock-duration-ms' | 'stalled-interval-ms'): number | undefined =>
    values[flag] === undefined ? undefined : integer(flag, values[flag], 0, 1, 2 ** 31 - 1);
  const lockDurationMs = timer('lock-duration-ms');
  const stalledIntervalMs = timer('stalled-interval-ms');
  const drainTimeoutMs = integer(
    'drain-timeout-ms',
    values['drain-timeout-ms'],
    DEFAULTS.server.drainTimeoutMs,
    1,
    3_600_000,
  );
  const { bundle, options } = classifierOptions(values);
  const classifier = await Classifier.load(bundle, options);

  const worker = createWorker(classifier, {
    queue,
    connection: { url },
    concurrency,
    ...(lockDurationMs === undefined ? {} : { lockDurationMs }),
    ...(stalledIntervalMs === undefined ? {} : { stalledIntervalMs }),
  });
  // Redis going away is reported once per distinct message a minute (ioredis repeats it on
  // every retry; a later outage is reported again); BullMQ reconnects by itself. A Redis that
  // refuses the URL's database is no outage: nothing would come of waiting (and without this
  // check the connection fell back to database 0's queue).
  let lastError = '';
  let lastAt = 0;
  let ready = false;
  let fatal: ((error: Error) => void) | undefined;
  const refused = new Promise<never>((_, reject) => (fatal = reject));
  refused.catch(() => {});
  worker.on('error', (error) => {
    if (/\bDB index is out of range\b/.test(error.message)) {
      fatal?.(new InvalidArgumentError(`--redis ${url}: the Redis server refuses its database (${error.message})`));
      return;
    }
    if (error.message === lastError && Date.now() - lastAt < 60_000) return;
    lastError = error.message;
    lastAt = Date.now();
    process.stderr.write(`bertgate: redis: ${error.message}\n`);
  });
  worker.on('ready', () => {
    ready = true;
    lastError = '';
  });
  // A worker that never reached Redis has no job to finish; waiting on its close would wait for
  // Redis (forever, or until the drain deadline), so it is closed at once.
  const closeWorker = (): Promise<void> => worker.close(!ready);
  let metrics: Server | undefined;
  if (metricsPort !== undefined) {
    try {
      metrics = await serveWorkerMetrics(worker, classifier, { port: metricsPort, host });
    } catch (error) {
      await closeWorker();
      await classifier.close();
      const code = (error as NodeJS.ErrnoException).code ?? '';
      throw new ListenError(
        `cannot listen on ${host}:${metricsPort} (--metrics-port): ${code} ${(error as Error).message}`,
      );
    }
    const address = metrics.address();
    if (address !== null && typeof address === 'object')
      process.stdout.write(`metrics on http://${host}:${address.port}\n`);
  }

  let signals = 0;
  const stop = new Promise<NodeJS.Signals>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      signals++;
      if (signals === 1) {
        process.stdout.write(`${signal}: finishing active jobs\n`);
        // The deadline must not hold the process open once the drain is done.
        setTimeout(
          () => forceExit(`the active jobs took longer than ${drainTimeoutMs} ms (--drain-timeout-ms)`),
          drainTimeoutMs,
        ).unref();
        resolve(signal);
      } else if (signals === 2) {
        process.stdout.write(`${signal}: still finishing active jobs; a third signal exits at once\n`);
      } else {
        forceExit(`${signal} a third time`);
      }
    };
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, onSignal);
  });
  // Without Redis yet, the worker keeps connecting (Redis may start after it); a signal still stops it.
  void worker.waitUntilReady().then(
    () => process.stdout.write(`worker on queue ${queue} (concurrency ${concurrency})\n`),
    () => {},
  );
  try {
    await Promise.race([stop, refused]);
  } catch (error) {
    await worker.close(true);
    await classifier.close();
    throw error;
  }
  await closeWorker();
  if (metrics) {
    const closed = new Promise((resolve) => metrics.close(resolve));
    metrics.closeAllConnections();
    await closed;
  }
  await classifier.close();
  process.stdout.write('stopped\n');
  return 0;
}

/** Ends the process now: the jobs still active come back as stalled once their locks expire. */
function forceExit(why: string): never {
  process.stderr.write(`bertgate: exiting before the active jobs finished (they will come back as stalled): ${why}\n`);
  process.exit(1);
}
