/**
 * Prometheus metrics of a served classifier: requests by route and status, errors by code,
 * request latency, batch sizes and padding, queue depth. One registry per server, so two
 * servers in one process (tests) do not share counters.
 */

import { Counter, Gauge, Histogram, Registry } from 'prom-client';

import type { Classifier } from './classifier.js';
import type { ReplicaStats } from './replicas.js';

export interface ServerMetrics {
  registry: Registry;
  requests: Counter<'route' | 'status'>;
  errors: Counter<'code'>;
  latency: Histogram<'route'>;
  texts: Counter;
  stop: () => void;
}

export function createMetrics(classifier: Classifier<string, string>): ServerMetrics {
  const registry = new Registry();
  const requests = new Counter({
    name: 'bertgate_requests_total',
    help: 'HTTP requests, by route and status code',
    labelNames: ['route', 'status'] as const,
    registers: [registry],
  });
  const errors = new Counter({
    name: 'bertgate_request_errors_total',
    help: 'Failed requests, by error code',
    labelNames: ['code'] as const,
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'bertgate_request_duration_seconds',
    help: 'Time from receiving a request to sending its response',
    labelNames: ['route'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const texts = new Counter({ name: 'bertgate_texts_total', help: 'Texts classified', registers: [registry] });
  const batchSize = new Histogram({
    name: 'bertgate_batch_size',
    help: 'Texts per batch sent to the model',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    registers: [registry],
  });
  const padded = new Counter({
    name: 'bertgate_padded_tokens_total',
    help: 'Token positions sent to the model, padding included',
    registers: [registry],
  });
  const real = new Counter({
    name: 'bertgate_real_tokens_total',
    help: 'Token positions sent to the model that hold text',
    registers: [registry],
  });
  new Gauge({
    name: 'bertgate_queue_depth',
    help: 'Texts waiting for a batch',
    registers: [registry],
    collect() {
      this.set(classifier.stats().queueDepth);
    },
  });
  new Gauge({
    name: 'bertgate_batches_in_flight',
    help: 'Batches handed to the model and not yet back',
    registers: [registry],
    collect() {
      this.set(classifier.stats().inFlight);
    },
  });
  new Gauge({
    name: 'bertgate_out_of_memory_splits',
    help: 'Batches split in half since start because the device ran out of memory for them',
    registers: [registry],
    collect() {
      this.set(classifier.stats().outOfMemorySplits);
    },
  });
  new Counter({
    name: 'bertgate_fault_splits_total',
    help: 'Batches split in half because they failed on a replica its probe then found healthy (a text at fault)',
    registers: [registry],
    // Mirrors the classifier's own running count: reset, then set to it.
    collect() {
      this.reset();
      this.inc(classifier.stats().faultSplits);
    },
  });
  // Per replica: label values are bounded by the replicas loaded (at most 64 per device).
  const replicaLabels = ['replica', 'device'] as const;
  const perReplica = (
    name: string,
    help: string,
    value: (r: ReplicaStats) => number,
    Metric: typeof Gauge | typeof Counter = Gauge,
  ): void => {
    new Metric({
      name,
      help,
      labelNames: replicaLabels,
      registers: [registry],
      // A counter mirrors the classifier's own running count: reset, then set to it.
      collect(this: Gauge<'replica' | 'device'> | Counter<'replica' | 'device'>) {
        if (this instanceof Counter) this.reset();
        for (const r of classifier.stats().replicas) {
          const labels = { replica: String(r.replica), device: r.device };
          if (this instanceof Gauge) this.set(labels, value(r));
          else this.inc(labels, value(r));
        }
      },
    });
  };
  perReplica(
    'bertgate_replica_healthy',
    '1 while the replica takes batches, 0 once an engine fault took it out',
    (r) => (r.healthy ? 1 : 0),
  );
  perReplica('bertgate_replica_batches_total', 'Batches the replica answered', (r) => r.batches, Counter);
  perReplica(
    'bertgate_replica_texts_total',
    'Texts the replica ran (a text whose caller gave up still counts: bertgate_texts_total counts answers)',
    (r) => r.texts,
    Counter,
  );
  perReplica(
    'bertgate_replica_busy_seconds_total',
    'Time the replica had a batch in flight',
    (r) => r.busyMs / 1000,
    Counter,
  );
  perReplica(
    'bertgate_replica_faults_total',
    'Engine faults the replica raised (each suspended it until a probe answered)',
    (r) => r.faults,
    Counter,
  );
  if (classifier.stats().drift) {
    // The drift alarm (lib/drift.ts): whether the traffic still looks like the calibration set.
    const drift = (): NonNullable<ReturnType<Classifier<string, string>['stats']>['drift']> =>
      classifier.stats().drift as NonNullable<ReturnType<Classifier<string, string>['stats']>['drift']>;
    new Gauge({
      name: 'bertgate_drift_statistic',
      help: 'The drift change-point statistic (Shiryaev-Roberts) over the texts since start or reset; alarm at bertgate_drift_threshold',
      registers: [registry],
      collect() {
        this.set(drift().statistic);
      },
    });
    new Gauge({
      name: 'bertgate_drift_threshold',
      help: 'The alarm level of the drift statistic, 1000/alpha: at least this many texts between false alarms on average',
      registers: [registry],
      collect() {
        this.set(drift().threshold);
      },
    });
    new Gauge({
      name: 'bertgate_drift_martingale',
      help: 'The drift test martingale since start or reset (not the alarm; it reaches 1/x with probability at most x)',
      registers: [registry],
      collect() {
        this.set(drift().martingale);
      },
    });
    new Gauge({
      name: 'bertgate_drift_alarm',
      help: '1 once the drift statistic reached its threshold (false-alarm probability at most alpha per 1,000 texts), else 0',
      registers: [registry],
      collect() {
        this.set(drift().alarm ? 1 : 0);
      },
    });
    new Gauge({
      name: 'bertgate_drift_alpha',
      help: 'The false-alarm probability per 1,000 texts the drift alarm was set to',
      registers: [registry],
      collect() {
        this.set(drift().alpha);
      },
    });
    new Gauge({
      name: 'bertgate_acceptance_rate',
      help: 'Share of texts accepted (not "Other"): over the recent window, and as calibrated',
      labelNames: ['over'] as const,
      registers: [registry],
      collect() {
        const { acceptance } = drift();
        if (acceptance.window > 0) this.set({ over: 'recent' }, acceptance.recent);
        this.set({ over: 'calibration' }, acceptance.calibrated);
      },
    });
  }
  const stop = classifier.onBatch((event) => {
    batchSize.observe(event.size);
    padded.inc(event.paddedTokens);
    real.inc(event.realTokens);
  });
  return { registry, requests, errors, latency, texts, stop };
}
