// `bertgate/queue`: bulk classification on BullMQ (Redis); see lib/worker.ts.
export { createWorker } from './worker.js';
export type { ClassifyJobData, ClassifyJobResult, JobClassifier, WorkerOptions } from './worker.js';
export { serveWorkerMetrics } from './worker-metrics.js';
