// What a load balancer sees of replicas through `serve`: /readyz means "send this process traffic"
// (503 only while shutting down or with no healthy replica; a full queue is a 429 per request and
// leaves it ready), the replica metrics carry a bounded replica/device label, and a classifier with
// every replica taken out answers 503 ERR_NO_HEALTHY_REPLICA, from the request that met the fault
// on, and fails its liveness probe (/healthz 503): only a restart brings a replica back.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { sabotageReplica } from '../lib/classifier.js';
import { Classifier } from '../lib/index.js';
import { createServer } from '../lib/server.js';
import { bundle, wordTexts } from './helpers.js';

const SERVER = { bodyLimit: 1 << 20, maxTexts: 1000, requestTimeoutMs: 10_000 };

async function served(options: Parameters<typeof Classifier.load>[1]) {
  const clf = await Classifier.load<string, string>(bundle('labels50'), options);
  const app = createServer(clf, SERVER);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return {
    clf,
    url,
    close: async () => {
      await app.close();
      await clf.close();
    },
  };
}

describe('serve with replicas', () => {
  it('stays ready while its queue is full: the overflow is a 429 on the request', async () => {
    // The default model, one long text per batch: the 64 queued texts take a while to run.
    const clf = await Classifier.load<string, string>(undefined, {
      threads: 1,
      maxBatchSize: 1,
      batchesInFlight: 1,
      maxQueue: 64,
      verify: false,
    });
    const app = createServer(clf, SERVER);
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const long = wordTexts(64, 3).map((t) => `${t} ${t} ${t} ${t} ${t} ${t} ${t} ${t}`);
      const queued = clf.classify(long);
      const over = await fetch(`${url}/classify`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ texts: ['one more', 'and another'] }),
      });
      assert.equal(over.status, 429);
      const ready = await fetch(`${url}/readyz`);
      const depth = clf.stats().queueDepth;
      assert.equal(ready.status, 200);
      const body = (await ready.json()) as { status: string; queueDepth: number; replicas: unknown };
      assert.equal(body.status, 'ready');
      assert.ok(body.queueDepth > 0 && body.queueDepth >= depth, `queue depth ${body.queueDepth}`);
      assert.deepEqual(body.replicas, { healthy: 1, total: 1 });
      await queued;
    } finally {
      await app.close();
      await clf.close();
    }
  });

  it('labels the replica metrics by replica and device, and says when a replica is out', async () => {
    const s = await served({ threads: 1, replicas: 2, maxBatchSize: 4 });
    const onWarning = (): void => {};
    process.on('warning', onWarning);
    try {
      await s.clf.classify(wordTexts(64, 5));
      let metrics = await (await fetch(`${s.url}/metrics`)).text();
      assert.match(metrics, /^bertgate_replica_healthy\{replica="0",device="cpu"\} 1$/m);
      assert.match(metrics, /^bertgate_replica_healthy\{replica="1",device="cpu"\} 1$/m);
      assert.match(metrics, /^# TYPE bertgate_fault_splits_total counter\nbertgate_fault_splits_total 0$/m);
      const texts = [...metrics.matchAll(/^bertgate_replica_texts_total\{replica="\d",device="cpu"\} (\d+)$/gm)];
      assert.equal(
        texts.reduce((sum, m) => sum + Number(m[1]), 0),
        64,
      );
      await sabotageReplica(s.clf, 1);
      await Promise.all(Array.from({ length: 8 }, () => s.clf.classify(wordTexts(16, 9))));
      await new Promise((r) => setTimeout(r, 50));
      metrics = await (await fetch(`${s.url}/metrics`)).text();
      assert.match(metrics, /^bertgate_replica_healthy\{replica="1",device="cpu"\} 0$/m);
      assert.match(metrics, /^bertgate_replica_faults_total\{replica="1",device="cpu"\} [1-9]\d*$/m);
      const ready = await fetch(`${s.url}/readyz`);
      assert.equal(ready.status, 200);
      assert.deepEqual(((await ready.json()) as { replicas: unknown }).replicas, { healthy: 1, total: 2 });
    } finally {
      process.off('warning', onWarning);
      await s.close();
    }
  });

  it('with no healthy replica: /readyz and /healthz 503, and /classify 503 ERR_NO_HEALTHY_REPLICA', async () => {
    const s = await served({ threads: 1 });
    const onWarning = (): void => {};
    process.on('warning', onWarning);
    try {
      assert.equal((await fetch(`${s.url}/healthz`)).status, 200);
      await sabotageReplica(s.clf, 0);
      // The request that meets the fault is answered as the ones after it: 503, not a 500.
      const first = await fetch(`${s.url}/classify`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ text: 'meets the fault' }),
      });
      assert.equal(first.status, 503);
      const ready = await fetch(`${s.url}/readyz`);
      assert.equal(ready.status, 503);
      assert.deepEqual(await ready.json(), { status: 'no healthy replica', replicas: { healthy: 0, total: 1 } });
      const r = await fetch(`${s.url}/classify`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ text: 'anyone?' }),
      });
      assert.equal(r.status, 503);
      const body = (await r.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'ERR_NO_HEALTHY_REPLICA');
      assert.match(body.error.message, /replica.*0 \(cpu\): ERR_CLOSED/);
      // Liveness too: a replica taken out stays out until the model loads again, so the process
      // should be restarted (deploy/kubernetes points its livenessProbe here).
      const live = await fetch(`${s.url}/healthz`);
      assert.equal(live.status, 503);
      assert.deepEqual(await live.json(), { status: 'no healthy replica', replicas: { healthy: 0, total: 1 } });
    } finally {
      process.off('warning', onWarning);
      await s.close();
    }
  });

  it('a text the model cannot run is a 422 naming it; its batch-mates are answered', async () => {
    const clf = await Classifier.load<string, string>(bundle('poison'), { threads: 1, maxDelayMs: 20 });
    const app = createServer(clf, SERVER);
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    const post = (body: unknown): Promise<Response> =>
      fetch(`${url}/classify`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    try {
      const [bad, mixed, good] = await Promise.all([
        post({ text: 'hieroglyph 𓀀 here' }),
        post({ texts: ['install the package', 'another 𓀀 one'] }),
        post({ texts: ['install the package', 'a library for XML'] }),
      ]);
      assert.equal(bad.status, 422);
      const b = (await bad.json()) as { error: { code: string; message: string } };
      assert.equal(b.error.code, 'ERR_UNPROCESSABLE_TEXT');
      assert.match(b.error.message, /^the model cannot run this text/);
      assert.equal(mixed.status, 422);
      assert.match(((await mixed.json()) as { error: { message: string } }).error.message, /^texts\[1\]: /);
      assert.equal(good.status, 200);
      assert.equal(((await good.json()) as { decisions: unknown[] }).decisions.length, 2);
      assert.equal((await fetch(`${url}/healthz`)).status, 200, 'the replica is not at fault');
    } finally {
      await app.close();
      await clf.close();
    }
  });
});
