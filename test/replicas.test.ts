// Replicas: one batcher feeding several engines. Two CPU replicas answer exactly as one does and
// both take batches; they share one copy of the weights; a replica taken out on purpose (its
// native engine closed under it: sabotageReplica, a real native fault) leaves the others
// answering every call, nothing lost or answered twice; with none left, a typed error; a text the
// model cannot run (the poison fixture) fails alone, its batch-mates answered and no replica
// taken out. And every bad `device` / `replicas` is refused by name.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { execFile } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

import {
  Classifier,
  ClosedError,
  DEFAULT_MODEL,
  DeviceUnavailableError,
  InvalidArgumentError,
  NoHealthyReplicaError,
  UnprocessableTextError,
} from '../lib/index.js';
import { sabotageReplica } from '../lib/classifier.js';
import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { bundle, expectRejects, rejectsWith, wordTexts } from './helpers.js';

const TEXTS = wordTexts(400, 7);

/** In a fresh process: how much the default model's load with `replicas` grows the RSS, and how many replicas then take a batch. */
async function loadGrowth(replicas: number): Promise<{ mb: number; busy: number }> {
  const script = `
    import { Classifier } from ${JSON.stringify(join(PACKAGE_ROOT, 'dist', 'lib', 'index.js'))};
    const warm = await Classifier.load(${JSON.stringify(bundle('labels2'))}, { threads: 1, verify: false });
    await warm.classify('libtorch loaded');
    await warm.close();
    const before = process.memoryUsage().rss;
    const c = await Classifier.load(undefined, { threads: 1, replicas: ${replicas}, verify: false });
    const mb = (process.memoryUsage().rss - before) / 2 ** 20;
    const texts = Array.from({ length: 64 }, (_, i) => 'a library for parsing XML, number ' + i);
    await Promise.all(Array.from({ length: 8 }, () => c.classify(texts)));
    const busy = c.stats().replicas.filter((r) => r.batches > 0).length;
    await c.close();
    console.log(JSON.stringify({ mb, busy }));`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, NODE_NO_WARNINGS: '1' },
  });
  return JSON.parse(stdout.trim().split('\n').at(-1) as string) as { mb: number; busy: number };
}

describe('replicas', () => {
  it('two CPU replicas answer exactly as one does, and both take batches', async () => {
    const one = await Classifier.load(bundle('labels50'), { threads: 1, maxBatchSize: 8 });
    const two = await Classifier.load(bundle('labels50'), { threads: 1, replicas: 2, maxBatchSize: 8 });
    try {
      assert.deepEqual(two.info.replicas, [
        { replica: 0, device: 'cpu' },
        { replica: 1, device: 'cpu' },
      ]);
      const [a, b] = await Promise.all([one.logits(TEXTS), two.logits(TEXTS)]);
      // Same weights, same batches' shapes aside: each row as one replica computes it.
      for (let i = 0; i < TEXTS.length; i++) {
        const x = a[i] as Float32Array;
        const y = b[i] as Float32Array;
        for (let j = 0; j < x.length; j++) assert.ok(Math.abs((x[j] as number) - (y[j] as number)) < 1e-5, `text ${i}`);
      }
      const [da, db] = await Promise.all([one.classify(TEXTS), two.classify(TEXTS)]);
      assert.deepEqual(
        db.map((d) => d.label),
        da.map((d) => d.label),
      );
      const stats = two.stats().replicas;
      assert.equal(stats.length, 2);
      for (const r of stats) {
        assert.ok(r.batches > 0, `replica ${r.replica} took no batch: ${JSON.stringify(stats)}`);
        assert.ok(r.busyMs > 0 && r.healthy && r.failure === null);
      }
      assert.equal(
        stats.reduce((s, r) => s + r.texts, 0),
        2 * TEXTS.length,
        'every text answered by exactly one replica',
      );
    } finally {
      await Promise.all([one.close(), two.close()]);
    }
  });

  it('CPU replicas share the weights: each one past the first adds far less than a copy of the model', async () => {
    // The default model: 14.5 MB of fp16 weights on disk, about 29 MB as the fp32 a CPU runs.
    // Each count in a fresh process (libtorch already loaded by a tiny model first), right after
    // the load: what a replica adds for the weights. Running batches adds working memory per
    // pass in flight, which is not the weights (docs/benchmarks.md, "Replicas").
    const weightsMb = (2 * statSync(join(DEFAULT_MODEL, 'model.pt')).size) / 2 ** 20;
    const one = await loadGrowth(1);
    const four = await loadGrowth(4);
    const perReplica = (four.mb - one.mb) / 3;
    assert.ok(one.mb > weightsMb / 2, `one replica grew the RSS by ${one.mb.toFixed(1)} MB: the weights should show`);
    assert.ok(
      perReplica < weightsMb / 4,
      `each replica past the first added ${perReplica.toFixed(1)} MB at load (one: ${one.mb.toFixed(1)} MB, ` +
        `four: ${four.mb.toFixed(1)} MB); a copy of the weights is ${weightsMb.toFixed(1)} MB`,
    );
    assert.equal(four.busy, 4, 'every replica took a batch');
  });

  it('a replica that fails is taken out; the other answers every call, nothing lost or answered twice', async () => {
    const c = await Classifier.load(bundle('labels50'), { threads: 1, replicas: 2, maxBatchSize: 4 });
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    try {
      const reference = await c.classify(TEXTS);
      await sabotageReplica(c, 1);
      // Many concurrent calls: replica 1 is picked for some batches, fails them, and each is
      // retried on replica 0.
      const calls = Array.from({ length: 40 }, (_, i) => c.classify(TEXTS.slice(i * 10, i * 10 + 10)));
      const answered = (await Promise.all(calls)).flat();
      assert.equal(answered.length, TEXTS.length);
      assert.deepEqual(
        answered.map((d) => d.label),
        reference.map((d) => d.label),
      );
      await new Promise((r) => setTimeout(r, 50)); // the probe's verdict
      const [r0, r1] = c.stats().replicas;
      assert.equal(r0?.healthy, true);
      assert.equal(r1?.healthy, false);
      assert.match(r1?.failure ?? '', /ERR_CLOSED/);
      assert.ok((r1?.faults ?? 0) >= 1);
      const warned = warnings.find((w) => w.name === 'BertgateReplicaWarning');
      assert.match(String(warned?.message), /replica 1 \(cpu\) was taken out.*1 of 2 replicas remain/);
      const s = c.stats();
      assert.equal(s.requests.failed, 0);
      assert.equal(s.requests.completed, 41);
      // Texts counted by the replica that answered them: replica 1's count stopped at the fault.
      assert.equal((r0?.texts ?? 0) + (r1?.texts ?? 0), 2 * TEXTS.length);
      assert.equal((await c.classify('still here')).label.length > 0, true);
    } finally {
      process.off('warning', onWarning);
      await c.close();
    }
  });

  it('batches formed together go to different replicas (each picked and started in the same tick)', async () => {
    const c = await Classifier.load(bundle('labels50'), { threads: 1, replicas: 2, maxBatchSize: 4 });
    try {
      // One call of 8 texts: two batches of 4, formed at once.
      assert.equal((await c.classify(TEXTS.slice(0, 8))).length, 8);
      assert.deepEqual(
        c.stats().replicas.map((r) => r.batches),
        [1, 1],
      );
    } finally {
      await c.close();
    }
  });

  it('two replicas broken at once fail no call while a third is healthy', async () => {
    const c = await Classifier.load(bundle('labels50'), { threads: 1, replicas: 3, maxBatchSize: 4 });
    const onWarning = (): void => {};
    process.on('warning', onWarning);
    try {
      const reference = await c.classify(TEXTS);
      await Promise.all([sabotageReplica(c, 1), sabotageReplica(c, 2)]);
      // Bursts: a batch that meets replica 1 may move to replica 2, broken too but not yet
      // suspended; it must then go on to replica 0.
      for (let round = 0; round < 3; round++) {
        const calls = Array.from({ length: 40 }, (_, i) => c.classify(TEXTS.slice(i * 10, i * 10 + 10)));
        assert.deepEqual(
          (await Promise.all(calls)).flat().map((d) => d.label),
          reference.map((d) => d.label),
        );
      }
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(
        c.stats().replicas.map((r) => r.healthy),
        [true, false, false],
      );
      assert.equal(c.stats().requests.failed, 0);
    } finally {
      process.off('warning', onWarning);
      await c.close();
    }
  });

  it('with no healthy replica left, calls fail with NoHealthyReplicaError, and the process carries on', async () => {
    const c = await Classifier.load(bundle('labels2'), { threads: 1 });
    const onWarning = (): void => {};
    process.on('warning', onWarning);
    try {
      await sabotageReplica(c, 0);
      // The batch that meets the fault fails as every later call does: the replica's probe took
      // it out, and a client told "no healthy replica" (serve: 503) retries elsewhere.
      await rejectsWith(c.classify('first'), NoHealthyReplicaError, /no healthy replica.*0 \(cpu\): ERR_CLOSED/);
      assert.equal(c.stats().replicas[0]?.healthy, false);
      // ... and every call after the probe's verdict is refused at once, by name.
      await rejectsWith(c.classify('second'), NoHealthyReplicaError, /no healthy replica.*0 \(cpu\): ERR_CLOSED/);
    } finally {
      process.off('warning', onWarning);
      await c.close();
    }
  });

  it('a text the model cannot run fails alone: its batch-mates are answered and no replica is taken out', async () => {
    // The poison fixture's model raises for a batch holding [UNK]: the batch fails on a replica
    // whose one-text probe then answers, so the batch is split down to the text at fault.
    const c = await Classifier.load(bundle('poison'), { threads: 1, replicas: 2, maxBatchSize: 16, maxDelayMs: 20 });
    try {
      const good = TEXTS.slice(0, 15);
      const reference = await c.classify(good);
      const poisoned = c.classify('hieroglyph 𓀀 here');
      const mates = good.map((t) => c.classify(t));
      const pair = c.classify(['install the package', 'another 𓀀 one']);
      const [p, m, pr] = await Promise.all([
        poisoned.then(
          () => undefined,
          (e: unknown) => e,
        ),
        Promise.allSettled(mates),
        pair.then(
          () => undefined,
          (e: unknown) => e,
        ),
      ]);
      assert.ok(p instanceof UnprocessableTextError, String(p));
      assert.match(p.message, /^the model cannot run this text \(replica \d \(cpu\) runs others.*holding \[UNK\]/);
      assert.ok(pr instanceof UnprocessableTextError, `a call holding a text at fault fails: ${String(pr)}`);
      assert.match(pr.message, /^texts\[1\]: the model cannot run this text/, 'the call of two names its text');
      assert.deepEqual(
        m.map((r) => (r.status === 'fulfilled' ? r.value.label : `rejected: ${String(r.reason)}`)),
        reference.map((d) => d.label),
      );
      const s = c.stats();
      assert.ok(s.faultSplits >= 1, JSON.stringify(s.batchSizes));
      // Not the replicas' fault: none counted, none taken out.
      assert.ok(
        s.replicas.every((r) => r.healthy && r.faults === 0),
        JSON.stringify(s.replicas),
      );
      assert.equal(s.requests.failed, 2);
      const [still] = await c.classify(['still answering']);
      assert.ok(still?.label);
    } finally {
      await c.close();
    }
  });

  it('each call a failed batch fails gets an error of its own, with its own stack', async () => {
    const c = await Classifier.load(bundle('labels2'), { threads: 1, batchesInFlight: 1 });
    const onWarning = (): void => {};
    process.on('warning', onWarning);
    try {
      await sabotageReplica(c, 0);
      // The first batch meets the fault; the next two texts queue behind it as one batch, which
      // fails as a whole once the replica is out.
      const first = c.classify('zero').catch((e: unknown) => e);
      async function firstCaller(): Promise<unknown> {
        return c.classify('one').catch((e: unknown) => e);
      }
      async function secondCaller(): Promise<unknown> {
        return c.classify('two').catch((e: unknown) => e);
      }
      const [a, b] = (await Promise.all([firstCaller(), secondCaller()])) as [Error, Error];
      assert.ok((await first) instanceof NoHealthyReplicaError);
      assert.ok(a instanceof NoHealthyReplicaError && b instanceof NoHealthyReplicaError, `${String(a)}, ${String(b)}`);
      assert.deepEqual(c.stats().batchSizes, { 1: 1, 2: 1 }, 'one batch failed both');
      assert.notEqual(a, b);
      assert.match(a.stack ?? '', /firstCaller/);
      assert.doesNotMatch(a.stack ?? '', /secondCaller/);
      assert.match(b.stack ?? '', /secondCaller/);
    } finally {
      process.off('warning', onWarning);
      await c.close();
    }
  });

  it('close({ drain: false }) during a drain hurries it: what is still queued rejects', async () => {
    const c = await Classifier.load(bundle('labels50'), { threads: 1, maxBatchSize: 1, batchesInFlight: 1 });
    const calls = Promise.allSettled(Array.from({ length: 200 }, (_, i) => c.classify(TEXTS[i] as string)));
    await new Promise((r) => setImmediate(r));
    const draining = c.close();
    assert.equal(c.close({ drain: false }), draining, 'the same close');
    await draining;
    const settled = await calls;
    const closed = settled.filter((r) => r.status === 'rejected' && r.reason instanceof ClosedError).length;
    assert.ok(closed > 100, `${closed} of 200 queued calls were rejected`);
    assert.equal(
      settled.filter((r) => r.status === 'fulfilled').length + closed,
      200,
      'each call answered or closed, once',
    );
  });

  it('refuses a bad device list or replica count by name', async () => {
    const cases: [unknown, RegExp][] = [
      [{ device: [] }, /"device".*non-empty list/],
      [{ device: null }, /"device".*got null/],
      [{ device: ['cuda:0', 'cuda:0'] }, /names cuda:0 twice/],
      [{ device: ['cuda:0', 'cpu'] }, /CUDA devices only.*"cpu"/],
      [{ device: ['cuda:*'] }, /CUDA devices only.*"cuda:\*"/],
      [{ device: 'cuda:x' }, /"device"/],
      [{ device: 'cuda:01' }, /"device".*got "cuda:01"/],
      [{ device: ['cuda:0', ' cuda:1'] }, /"device".*got " cuda:1"/],
      [{ replicas: 0 }, /"replicas"/],
      [{ replicas: 1e9 }, /"replicas"/],
      [{ replicas: 1.5 }, /"replicas"/],
      [{ replicas: '2' }, /"replicas"/],
    ];
    for (const [options, message] of cases) {
      await expectRejects(Classifier.load(bundle('labels2'), options as never), InvalidArgumentError, message);
    }
  });

  it("'cuda:*' or a cuda:N this process cannot see is a DeviceUnavailableError naming the device", async () => {
    // On a machine with a GPU the first loads; the second names a device past any host's count.
    await expectRejects(
      Classifier.load(bundle('labels2'), { device: ['cuda:0', 'cuda:999'] }),
      DeviceUnavailableError,
      /cuda:(0|999)/,
    );
    // Any index is a device to look for (a syntax error only for leading zeros or a sign).
    await expectRejects(
      Classifier.load(bundle('labels2'), { device: 'cuda:1000' }),
      DeviceUnavailableError,
      /cuda:1000/,
    );
    const cudaStar = Classifier.load(bundle('labels2'), { device: 'cuda:*' });
    const result = await cudaStar.then(
      async (c) => {
        const n = c.info.replicas.length;
        await c.close();
        return n;
      },
      (e: unknown) => e,
    );
    if (typeof result === 'number') assert.ok(result >= 1);
    else assert.ok(result instanceof DeviceUnavailableError, String(result));
  });

  it('more threads than cores is a warning, not a refusal', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    try {
      const c = await Classifier.load(bundle('labels2'), { threads: 64, replicas: 64 });
      assert.equal(c.info.replicas.length, 64);
      assert.equal((await c.classify(['a', 'b', 'c'])).length, 3);
      await c.close();
      await new Promise((r) => setImmediate(r));
      assert.ok(
        warnings.some((w) => /64 replicas x 64 threads each = 4096 threads on \d+ cores/.test(w.message)),
        warnings.map((w) => w.message).join('\n'),
      );
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('close() with batches on every replica drains all of them', async () => {
    const c = await Classifier.load(bundle('labels50'), { threads: 1, replicas: 3, maxBatchSize: 2 });
    const calls = Array.from({ length: 30 }, (_, i) => c.classify(TEXTS.slice(i * 5, i * 5 + 5)));
    await new Promise((r) => setImmediate(r));
    await c.close();
    const answered = await Promise.all(calls);
    assert.equal(answered.flat().length, 150);
    const busy = c.stats().replicas.filter((r) => r.batches > 0).length;
    assert.equal(busy, 3, JSON.stringify(c.stats().replicas));
    assert.ok(c.stats().replicas.every((r) => r.inFlight === 0));
  });
});
