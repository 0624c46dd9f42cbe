// bertgate worker and bertgate/queue against a real redis-server (Debian's package, which
// scripts/setup.mjs installs), started here on a free loopback port with persistence off.

import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Queue, type Job } from 'bullmq';

import { Classifier, OverloadedError, type Decision, type TopEntry } from '../lib/index.js';
import {
  createWorker,
  serveWorkerMetrics,
  type ClassifyJobData,
  type ClassifyJobResult,
  type JobClassifier,
} from '../lib/queue.js';
import { CLI, bertgate, bundle, wordTexts } from './helpers.js';

const MODEL = bundle('labels7');

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** A redis-server of its own: loopback only, no snapshots or AOF, in a temporary directory. */
class Redis {
  #child: ChildProcess | undefined;
  constructor(
    readonly port: number,
    readonly dir: string,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const child = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.#child = child;
    let output = '';
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('Ready to accept connections')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`redis-server exited with ${code}:\n${output}`)));
    });
  }

  /** SHUTDOWN SAVE: the one snapshot, so that a restart finds the queue as it was. */
  async stopSaving(): Promise<void> {
    const exited = once(this.#child!, 'exit');
    spawnSync('redis-cli', ['-p', String(this.port), 'shutdown', 'save']);
    await exited;
  }

  async stop(): Promise<void> {
    const child = this.#child;
    if (child === undefined || child.exitCode !== null) return;
    child.kill('SIGTERM');
    await once(child, 'exit');
  }
}

/** `bertgate worker` in a child process, with its output kept. */
function startWorker(
  redis: Redis,
  queue: string,
  flags: string[] = [],
): { child: ChildProcess; output: () => string; ready: Promise<void> } {
  const child = spawn(
    process.execPath,
    [CLI, 'worker', '--model', MODEL, '--redis', redis.url, '--queue', queue, ...flags],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes(`worker on queue ${queue}`)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`the worker exited with ${code}:\n${output}`)));
  });
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return { child, output: () => output, ready };
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * A job's decisions against in-process classify() of its texts: the same fields and labels, the
 * numbers within 1e-5 (jobs are batched with other jobs' texts: other padding, other rounding),
 * `top` compared by label (labels whose probabilities differ by less than that may swap places).
 */
function assertSameDecisions(actual: unknown, expected: Decision<string, string>[], what: string): void {
  const near = (a: unknown, b: unknown, path: string): void => {
    if (typeof b === 'number') {
      assert.equal(typeof a, 'number', path);
      assert.ok(Math.abs((a as number) - b) <= 1e-5, `${path}: ${String(a)} vs ${b}`);
    } else if (Array.isArray(b)) {
      assert.ok(Array.isArray(a) && a.length === b.length, path);
      const byLabel = (list: unknown[]): unknown[] =>
        path.endsWith('.top')
          ? [...list].sort((x, y) => String((x as TopEntry<string>).label).localeCompare((y as TopEntry<string>).label))
          : list;
      const [as, bs] = [byLabel(a), byLabel(b)];
      bs.forEach((item, i) => near(as[i], item, `${path}[${i}]`));
    } else if (typeof b === 'object' && b !== null) {
      assert.ok(typeof a === 'object' && a !== null, path);
      assert.deepEqual(Object.keys(a).sort(), Object.keys(b).sort(), path);
      for (const [key, value] of Object.entries(b)) near((a as Record<string, unknown>)[key], value, `${path}.${key}`);
    } else {
      assert.equal(a, b, path);
    }
  };
  // Through JSON, as the job's return value went.
  near(actual, JSON.parse(JSON.stringify(expected)), what);
}

describe('bertgate worker (BullMQ on a real redis-server)', () => {
  let redis: Redis;
  let dir: string;
  let classifier: Classifier<string, string>;
  const queues: Queue[] = [];
  let names = 0;

  const newQueue = (): Queue<ClassifyJobData, ClassifyJobResult<string, string>> => {
    const queue = new Queue<ClassifyJobData, ClassifyJobResult<string, string>>(`q${++names}`, {
      connection: { url: redis.url },
    });
    // The producer's connection errors while Redis is down (the reconnect test) are expected.
    queue.on('error', () => {});
    queues.push(queue);
    return queue;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bertgate-redis-'));
    redis = new Redis(await freePort(), dir);
    await redis.start();
    classifier = await Classifier.load<string, string>(MODEL);
  });

  after(async () => {
    for (const queue of queues) await queue.close();
    await classifier?.close();
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('60 jobs of 40 texts through two workers, the first killed with SIGKILL mid-run: every job completes, decisions equal classify()', async () => {
    const queue = newQueue();
    const chunks = Array.from({ length: 60 }, (_, i) => wordTexts(40, 1000 + i));
    await queue.addBulk(chunks.map((texts, i) => ({ name: `chunk-${i}`, data: { texts } })));
    // Short locks, so that the killed worker's jobs come back within seconds, not 30 s.
    const flags = ['--concurrency', '2', '--lock-duration-ms', '3000', '--stalled-interval-ms', '1000'];
    const first = startWorker(redis, queue.name, flags);
    await first.ready;
    await until('the first worker is mid-run', async () => {
      const counts = await queue.getJobCounts('completed', 'active');
      return (counts.completed ?? 0) >= 5 && (counts.active ?? 0) >= 1;
    });
    first.child.kill('SIGKILL');
    await once(first.child, 'exit');
    const second = startWorker(redis, queue.name, flags);
    try {
      await until('every job completed', async () => (await queue.getCompletedCount()) === 60);
    } finally {
      second.child.kill('SIGTERM');
      await once(second.child, 'exit');
    }
    const jobs = (await queue.getJobs(['completed'])) as Job<ClassifyJobData, ClassifyJobResult<string, string>>[];
    assert.equal(jobs.length, 60);
    // The killed worker's active jobs were recovered as stalled, not lost.
    assert.ok(
      jobs.some((job) => job.stalledCounter > 0),
      'no job came back as stalled',
    );
    for (const job of jobs) {
      const i = Number(job.name.slice('chunk-'.length));
      assertSameDecisions(job.returnvalue.decisions, await classifier.classify(chunks[i]!), job.name);
    }
    assert.equal(await queue.getFailedCount(), 0);
  });

  it('fails a bad job once, naming the text, and the worker goes on', async () => {
    const queue = newQueue();
    const worker = createWorker(classifier, { queue: queue.name, connection: { url: redis.url } });
    try {
      const texts = wordTexts(40, 7) as unknown[];
      texts[35] = 5; // past the first piece of 32: its index is the job's, not the piece's
      const retry = { attempts: 3, backoff: { type: 'fixed', delay: 10 } };
      const bad = await queue.add('bad', { texts } as ClassifyJobData, retry);
      const shape = await queue.add('shape', { text: 'one' } as unknown as ClassifyJobData, retry);
      const good = await queue.add('good', { texts: ['install the package'] }, retry);
      await until('the jobs finished', async () => (await queue.getFailedCount()) === 2 && (await good.isCompleted()));
      const failed = (await queue.getJob(bad.id!))!;
      assert.equal(
        failed.failedReason,
        'ERR_INVALID_ARGUMENT: Expected texts[35] to be a string, a Uint8Array of UTF-8, or { text, pair }, got 5',
      );
      assert.equal(failed.attemptsMade, 1);
      const malformed = (await queue.getJob(shape.id!))!;
      assert.equal(
        malformed.failedReason,
        'ERR_INVALID_ARGUMENT: Unknown field "text" in the job\'s data; expected "texts" and optionally "options"',
      );
      assert.equal(malformed.attemptsMade, 1);
      const done = (await queue.getJob(good.id!))!;
      assertSameDecisions(done.returnvalue.decisions, await classifier.classify(['install the package']), 'good');
    } finally {
      await worker.close();
    }
  });

  it('retries the job of an overloaded classifier, which then completes', async () => {
    const queue = newQueue();
    let calls = 0;
    const overloadedOnce: JobClassifier<string, string> = {
      info: classifier.info,
      classify: ((texts: string[]) => {
        calls++;
        if (calls === 1) return Promise.reject(new OverloadedError('more than 10000 texts are waiting (maxQueue)'));
        return classifier.classify(texts);
      }) as Classifier<string, string>['classify'],
    };
    const worker = createWorker(overloadedOnce, { queue: queue.name, connection: { url: redis.url } });
    try {
      const texts = wordTexts(10, 11);
      const job = await queue.add('busy', { texts }, { attempts: 3, backoff: { type: 'fixed', delay: 10 } });
      await until('the job completed', () => job.isCompleted());
      const done = (await queue.getJob(job.id!))!;
      assert.equal(done.attemptsMade, 2);
      assertSameDecisions(done.returnvalue.decisions, await classifier.classify(texts), 'busy');
    } finally {
      await worker.close();
    }
  });

  it('on SIGTERM finishes its active jobs, takes no more, and exits 0', async () => {
    const queue = newQueue();
    const chunks = Array.from({ length: 12 }, (_, i) => wordTexts(600, 2000 + i));
    await queue.addBulk(chunks.map((texts, i) => ({ name: `chunk-${i}`, data: { texts } })));
    const worker = startWorker(redis, queue.name, ['--concurrency', '2']);
    await worker.ready;
    let active: Job[] = [];
    await until('a job is active', async () => (active = await queue.getActive()).length > 0);
    worker.child.kill('SIGTERM');
    const [code] = await once(worker.child, 'exit');
    assert.equal(code, 0, worker.output());
    assert.match(worker.output(), /SIGTERM: finishing active jobs\nstopped\n/);
    for (const { id, name } of active) {
      const job = (await queue.getJob(id!))!;
      assert.ok(await job.isCompleted(), `job ${name}`);
      // 600 texts are 19 pieces of 32: progress went up as they finished.
      assert.equal(job.progress, 100, `job ${name}`);
    }
    const counts = await queue.getJobCounts('active', 'failed', 'waiting', 'completed');
    assert.deepEqual({ active: counts.active, failed: counts.failed }, { active: 0, failed: 0 });
    assert.equal((counts.waiting ?? 0) + (counts.completed ?? 0), 12);
  });

  it('reconnects when Redis goes away mid-run and comes back, and the queue completes', async () => {
    const queue = newQueue();
    const chunks = Array.from({ length: 30 }, (_, i) => wordTexts(40, 3000 + i));
    await queue.addBulk(chunks.map((texts, i) => ({ name: `chunk-${i}`, data: { texts } })));
    const worker = startWorker(redis, queue.name, ['--lock-duration-ms', '3000', '--stalled-interval-ms', '1000']);
    try {
      await worker.ready;
      await until('the worker is mid-run', async () => (await queue.getCompletedCount()) >= 3);
      await redis.stopSaving();
      await new Promise((resolve) => setTimeout(resolve, 1000));
      await redis.start();
      await until('every job completed', async () => (await queue.getCompletedCount()) === 30);
    } finally {
      worker.child.kill('SIGTERM');
      await once(worker.child, 'exit');
    }
    for (const job of await queue.getJobs(['completed'])) {
      const i = Number(job.name.slice('chunk-'.length));
      assertSameDecisions(job.returnvalue.decisions, await classifier.classify(chunks[i]!), job.name);
    }
    assert.match(worker.output(), /bertgate: redis: /);
  });

  it("serves /healthz and /metrics: jobs by status and error code, texts, the classifier's batches", async () => {
    const queue = newQueue();
    const worker = createWorker(classifier, { queue: queue.name, connection: { url: redis.url } });
    const server = await serveWorkerMetrics(worker, classifier, { port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    try {
      await queue.add('good', { texts: ['install the package', 'a sound card'] });
      await queue.add('bad', { texts: [] });
      await until('both jobs finished', async () => {
        const counts = await queue.getJobCounts('completed', 'failed');
        return counts.completed === 1 && counts.failed === 1;
      });
      const health = await fetch(`${base}/healthz`);
      assert.deepEqual([health.status, await health.json()], [200, { status: 'ok' }]);
      const metrics = await (await fetch(`${base}/metrics`)).text();
      assert.match(metrics, /^bertgate_jobs_total\{status="completed",code=""\} 1$/m);
      assert.match(metrics, /^bertgate_jobs_total\{status="failed",code="ERR_INVALID_ARGUMENT"\} 1$/m);
      assert.match(metrics, /^bertgate_texts_total 2$/m);
      assert.match(metrics, /^bertgate_job_duration_seconds_count 1$/m);
      assert.match(metrics, /^bertgate_batch_size_count [1-9]/m);
      await worker.close();
      const stopping = await fetch(`${base}/healthz`);
      assert.deepEqual([stopping.status, await stopping.json()], [503, { status: 'stopping' }]);
    } finally {
      await worker.close();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('checks its flags before loading the model', async () => {
    const missing = await bertgate(['worker', '--queue', 'q']);
    assert.equal(missing.code, 1);
    assert.equal(
      missing.stderr,
      'bertgate: ERR_INVALID_ARGUMENT: Expected --redis redis://HOST:PORT (where the queue lives)\n',
    );
    const url = await bertgate(['worker', '--redis', 'localhost:6379', '--queue', 'q']);
    assert.equal(
      url.stderr,
      'bertgate: ERR_INVALID_ARGUMENT: Expected --redis to be a redis:// or rediss:// URL, got "localhost:6379"\n',
    );
    const queue = await bertgate(['worker', '--redis', redis.url, '--queue', 'a:b']);
    assert.equal(
      queue.stderr,
      'bertgate: ERR_INVALID_ARGUMENT: Expected --queue NAME, a name without ":", got "a:b"\n',
    );
    for (const value of ['0', '0x10', '1e3', ' 3']) {
      const concurrency = await bertgate(['worker', '--redis', redis.url, '--queue', 'q', '--concurrency', value]);
      assert.equal(
        concurrency.stderr,
        `bertgate: ERR_INVALID_ARGUMENT: Expected --concurrency to be a whole number in [1, 10000], got ${JSON.stringify(value)}\n`,
      );
    }
  });

  it('never overloads its own classifier: jobs beyond its queue, and one job larger than it, go through in waves', async () => {
    const queue = newQueue();
    // A queue of 64 texts, four jobs of 100 at once: each job alone is larger than the queue.
    const chunks = Array.from({ length: 8 }, (_, i) => wordTexts(100, 7000 + i));
    await queue.addBulk(chunks.map((texts, i) => ({ name: `big-${i}`, data: { texts } })));
    const worker = startWorker(redis, queue.name, ['--concurrency', '4', '--max-queue', '64']);
    try {
      await worker.ready;
      await until('every job finished', async () => {
        const counts = await queue.getJobCounts('completed', 'failed');
        return (counts.completed ?? 0) + (counts.failed ?? 0) === chunks.length;
      });
    } finally {
      worker.child.kill('SIGTERM');
      await once(worker.child, 'exit');
    }
    const failed = await queue.getJobs(['failed']);
    assert.deepEqual(
      failed.map((j) => j.failedReason),
      [],
    );
    for (const job of await queue.getJobs(['completed'])) {
      const i = Number(job.name.slice('big-'.length));
      assertSameDecisions(job.returnvalue.decisions, await classifier.classify(chunks[i]!), job.name);
    }
  });

  it(
    'stops at once on SIGTERM when Redis was never reached, and refuses a database Redis does not have',
    { timeout: 120_000 },
    async () => {
      // Nothing listens on this port: no job can be active, so nothing to wait for.
      const nowhere = { url: `redis://127.0.0.1:${await freePort()}` } as Redis;
      const worker = startWorker(nowhere, 'q', ['--drain-timeout-ms', '600000']);
      worker.ready.catch(() => {}); // never ready: there is no Redis
      await until('the worker loaded its model', async () => worker.output().includes('bertgate: redis: '));
      worker.child.kill('SIGTERM');
      const [code] = (await once(worker.child, 'exit')) as [number | null];
      assert.equal(code, 0, worker.output());
      assert.match(worker.output(), /SIGTERM: finishing active jobs\nstopped\n/);
      const r = await bertgate(['worker', '--model', MODEL, '--redis', `${redis.url}/99`, '--queue', 'q']);
      assert.equal(r.code, 1, r.stdout);
      assert.match(
        r.stderr,
        new RegExp(
          `bertgate: ERR_INVALID_ARGUMENT: --redis ${redis.url}/99: the Redis server refuses its database \\(.*DB index is out of range`,
        ),
      );
    },
  );

  it('refuses worker options of the wrong type, by name', () => {
    const connection = { url: 'redis://127.0.0.1:1' };
    assert.throws(() => createWorker(classifier, { queue: '', connection }), {
      code: 'ERR_INVALID_ARGUMENT',
      message: 'Expected the "queue" option to be a non-empty string without ":", got ""',
    });
    assert.throws(() => createWorker(classifier, { queue: 'q', connection, concurrency: 1.5 }), {
      code: 'ERR_INVALID_ARGUMENT',
      message: 'Expected the "concurrency" option to be an integer in [1, 10000], got 1.5',
    });
    assert.throws(() => createWorker(classifier, { queue: 'q', connection, batch: 2 } as never), {
      code: 'ERR_INVALID_ARGUMENT',
      message:
        'Unknown worker option "batch"; expected one of queue, connection, concurrency, lockDurationMs, stalledIntervalMs',
    });
  });
});
