/**
 * The worker's own HTTP port: GET /healthz (200 while the worker runs, 503 once it stops taking
 * jobs) and GET /metrics (Prometheus: jobs completed and failed, by error code, job duration,
 * texts classified, and the classifier's batch, queue and drift metrics as `serve` exports them;
 * serve's HTTP request counters stay at zero here).
 */

import { createServer, type Server } from 'node:http';

import type { Worker } from 'bullmq';
import { Counter, Histogram } from 'prom-client';

import type { Classifier } from './classifier.js';
import { createMetrics } from './metrics.js';
import type { ClassifyJobData, ClassifyJobResult } from './worker.js';

type AnyWorker = Worker<ClassifyJobData, ClassifyJobResult<string, string>>;

/** The code a job failed with: the `ERR_…` its reason starts with, else "other". */
function failureCode(error: Error): string {
  return /^(ERR_[A-Z0-9_]+):/.exec(error.message)?.[1] ?? 'other';
}

/** Starts the health and metrics server on `port` (0: any free port); resolves once it listens. */
export async function serveWorkerMetrics(
  worker: AnyWorker,
  classifier: Classifier<string, string>,
  listen: { port: number; host: string },
): Promise<Server> {
  const metrics = createMetrics(classifier);
  const jobs = new Counter({
    name: 'bertgate_jobs_total',
    help: 'Job attempts finished, by status (completed, failed) and, for failures, the error code',
    labelNames: ['status', 'code'] as const,
    registers: [metrics.registry],
  });
  const duration = new Histogram({
    name: 'bertgate_job_duration_seconds',
    help: 'Time from a worker taking a job to its completion',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [metrics.registry],
  });
  worker.on('completed', (job, result) => {
    jobs.inc({ status: 'completed', code: '' });
    metrics.texts.inc(result.decisions.length);
    if (job.processedOn !== undefined) duration.observe((Date.now() - job.processedOn) / 1000);
  });
  worker.on('failed', (_job, error) => jobs.inc({ status: 'failed', code: failureCode(error) }));

  const server = createServer((request, response) => {
    const send = (status: number, type: string, body: string): void => {
      response.writeHead(status, { 'content-type': type }).end(body);
    };
    if (request.method !== 'GET') return send(405, 'application/json', '{"error":"method not allowed"}');
    if (request.url === '/healthz') {
      const running = worker.isRunning() && !worker.closing;
      return send(running ? 200 : 503, 'application/json', JSON.stringify({ status: running ? 'ok' : 'stopping' }));
    }
    if (request.url === '/metrics') {
      metrics.registry.metrics().then(
        (text) => send(200, metrics.registry.contentType, text),
        (error: Error) => send(500, 'text/plain', error.message),
      );
      return;
    }
    send(404, 'application/json', '{"error":"not found"}');
  });
  server.once('close', () => metrics.stop());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}
