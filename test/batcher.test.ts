// The batcher's scheduling, against a fake device whose batches finish when the test says.
// No model, no timing assertions: each test checks what was dispatched, and when relative
// to other events.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Batcher, type BatcherOptions } from '../lib/batcher.js';
import { AbortedError, ClosedError, OverloadedError, TimeoutError } from '../lib/errors.js';
import { callListeners } from '../lib/listeners.js';

interface Call {
  payloads: number[];
  finish: () => void;
  fail: (error: Error) => void;
}

/** A device that records each batch and completes it only on request. Payloads are ids. */
function fakeDevice() {
  const calls: Call[] = [];
  const waiters: Array<() => void> = [];
  const run = (payloads: number[]): Promise<number[]> =>
    new Promise((resolve, reject) => {
      calls.push({ payloads, finish: () => resolve(payloads.map((p) => p * 10)), fail: reject });
      waiters.splice(0).forEach((w) => w());
    });
  /** Resolves once at least `n` batches have been dispatched. */
  const dispatched = async (n: number): Promise<void> => {
    while (calls.length < n) await new Promise<void>((r) => waiters.push(r));
  };
  return { calls, run, dispatched };
}

const OPTIONS: BatcherOptions = {
  maxBatchSize: 4,
  maxBatchTokens: 1000,
  maxDelayMs: 5,
  maxQueue: 100,
  inFlight: 2,
  lengthAware: true,
  maxPaddingRatio: 1,
};

function items(ids: number[], tokens: (id: number) => number = () => 10) {
  return ids.map((id) => ({ tokens: tokens(id), payload: id }));
}

describe('batcher', () => {
  it('never waits when the device is idle', () => {
    const device = fakeDevice();
    const batcher = new Batcher(device.run, { ...OPTIONS, maxDelayMs: 60_000 });
    void batcher.submit(items([1]));
    assert.deepEqual(
      device.calls.map((c) => c.payloads),
      [[1]],
      'dispatched synchronously, without waiting for company',
    );
  });

  it('holds a partial batch while the device is busy, until the oldest text has waited maxDelayMs', async () => {
    const device = fakeDevice();
    const batcher = new Batcher(device.run, { ...OPTIONS, maxDelayMs: 20 });
    void batcher.submit(items([1]));
    void batcher.submit(items([2, 3]));
    assert.equal(device.calls.length, 1, 'the partial batch waits while batch 1 runs');
    await device.dispatched(2); // the first batch is still running: only maxDelayMs could release this one
    assert.deepEqual(device.calls[1]?.payloads, [2, 3]);
  });

  it('sends a full batch at once into a free slot, even while busy', () => {
    const device = fakeDevice();
    const batcher = new Batcher(device.run, { ...OPTIONS, maxDelayMs: 60_000 });
    void batcher.submit(items([1]));
    void batcher.submit(items([2, 3, 4, 5]));
    assert.deepEqual(
      device.calls.map((c) => c.payloads),
      [[1], [2, 3, 4, 5]],
    );
    void batcher.submit(items([6, 7, 8, 9]));
    assert.equal(device.calls.length, 2, 'both slots are taken: the next batch waits for one');
  });

  it('dispatches the waiting batch when the device goes idle', async () => {
    const device = fakeDevice();
    const batcher = new Batcher(device.run, { ...OPTIONS, maxDelayMs: 60_000 });
    const first = batcher.submit(items([1]));
    const second = batcher.submit(items([2]));
    device.calls[0]?.finish();
    assert.deepEqual(await first, [10]);
    await device.dispatched(2);
    device.calls[1]?.finish();
    assert.deepEqual(await second, [20]);
  });

  it('keeps padded tokens within maxBatchTokens', async () => {
    const device = fakeDevice();
    const tokens = (id: number) => [50, 60, 70, 200, 10, 90, 40][id] as number;
    const batcher = new Batcher(device.run, { ...OPTIONS, maxBatchTokens: 240, inFlight: 1, maxDelayMs: 0 });
    let done = false;
    const all = batcher.submit(items([0, 1, 2, 3, 4, 5, 6], tokens)).then(() => (done = true));
    for (let i = 0; !done; i++) {
      await Promise.race([device.dispatched(i + 1), all]);
      device.calls[i]?.finish();
      await new Promise((r) => setImmediate(r));
    }
    for (const call of device.calls) {
      const longest = Math.max(...call.payloads.map(tokens));
      assert.ok(
        longest * call.payloads.length <= 240,
        `batch ${call.payloads} pads to ${longest * call.payloads.length}`,
      );
    }
  });

  it('budgets tokens at the padded length it is given (buckets), but judges padding on real lengths', async () => {
    const device = fakeDevice();
    const tokens = (id: number) => [20, 21, 22, 23, 24, 25][id] as number;
    const toBucket = (longest: number) => Math.ceil(longest / 32) * 32;
    // Six rows of 20-25 tokens: 150 real, but 6 x 32 = 192 padded, over a budget of 160.
    const batcher = new Batcher(device.run, {
      ...OPTIONS,
      maxBatchSize: 8,
      maxBatchTokens: 160,
      maxPaddingRatio: 0.25,
      inFlight: 1,
      maxDelayMs: 0,
      paddedLength: toBucket,
    });
    const events: number[] = [];
    batcher.observe((e) => events.push(e.paddedTokens));
    const all = batcher.submit(items([0, 1, 2, 3, 4, 5], tokens));
    await device.dispatched(1);
    device.calls[0]?.finish();
    await device.dispatched(2);
    device.calls[1]?.finish();
    await all;
    // 5 rows fit (5 x 32 = 160) although 20-token rows pad 37% to 32: the padding rule saw 20-24.
    assert.deepEqual(
      device.calls.map((c) => c.payloads.length),
      [5, 1],
    );
    assert.deepEqual(events, [160, 32]);
  });

  it('an observer that throws is reported as a warning; the batch runs and close() settles', async () => {
    const device = fakeDevice();
    const batcher = new Batcher(device.run, { ...OPTIONS, maxBatchSize: 1, maxDelayMs: 0 });
    const warnings: string[] = [];
    const onWarning = (w: Error): void => {
      if (w.name === 'BertgateListenerWarning') warnings.push(w.message);
    };
    process.on('warning', onWarning);
    try {
      batcher.observe(() => {
        throw new Error('observer bug');
      });
      const heard: number[] = [];
      batcher.observe((e) => heard.push(e.size));
      const calls = [0, 1, 2].map((i) => batcher.submit(items([i])));
      for (let n = 1; n <= 3; n++) {
        await device.dispatched(n);
        device.calls[n - 1]?.finish();
      }
      assert.deepEqual(await Promise.all(calls), [[0], [10], [20]]);
      assert.deepEqual(heard, [1, 1, 1], 'the next observer still hears every batch');
      await batcher.close('drain');
      await new Promise((r) => setImmediate(r));
      assert.equal(warnings.length, 3);
      assert.match(warnings[0] as string, /a bertgate onBatch listener threw; bertgate went on: Error: observer bug/);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('listeners: whatever one throws or rejects with is a warning, and one that re-subscribes does not loop', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error): void => {
      if (w.name === 'BertgateListenerWarning') warnings.push(w.message);
    };
    process.on('warning', onWarning);
    try {
      const listeners = new Set<(n: number) => void>();
      const badToString = {
        toString() {
          throw new Error('no');
        },
      };
      const thrown: unknown[] = [Object.create(null), badToString, null, Symbol('s'), new Error('plain')];
      for (const value of thrown) {
        listeners.add(() => {
          throw value;
        });
      }
      listeners.add(async () => {
        throw new Error('async bug');
      });
      let calls = 0;
      const again = (): void => {
        calls++;
        listeners.delete(again);
        listeners.add(again); // re-arm: must wait for the next event
      };
      listeners.add(again);
      callListeners(listeners, 1, 'test');
      assert.equal(calls, 1);
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      assert.equal(warnings.length, thrown.length + 1, warnings.join('\n'));
      assert.ok(warnings.some((w) => w.includes('Error: async bug')));
      assert.ok(
        warnings.some((w) => w.includes('[object Object]')),
        'a value whose toString throws is still named',
      );
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('groups similar lengths behind the oldest text, where FIFO takes arrival order', async () => {
    const lengths = [100, 10, 95, 12, 98, 11, 97];
    const tokens = (id: number) => lengths[id] as number;
    for (const lengthAware of [true, false]) {
      const device = fakeDevice();
      const batcher = new Batcher(device.run, { ...OPTIONS, maxBatchSize: 3, inFlight: 1, lengthAware });
      void batcher.submit(items([99])); // occupies the device, so the rest queue up
      void batcher.submit(items([0, 1, 2, 3, 4, 5, 6], tokens));
      device.calls[0]?.finish(); // the next batch forms when this one settles
      await device.dispatched(2);
      assert.deepEqual(device.calls[1]?.payloads, lengthAware ? [0, 4, 6] : [0, 1, 2], `lengthAware ${lengthAware}`);
    }
  });

  it('keeps a batch within maxPaddingRatio, leaving poor matches for later', async () => {
    const lengths = [100, 10, 90, 12, 95, 11];
    const tokens = (id: number) => lengths[id] as number;
    const device = fakeDevice();
    const batcher = new Batcher(device.run, {
      ...OPTIONS,
      maxBatchSize: 6,
      inFlight: 1,
      maxPaddingRatio: 0.2,
      maxDelayMs: 0,
    });
    void batcher.submit(items([99])); // occupies the device
    void batcher.submit(items([0, 1, 2, 3, 4, 5], tokens));
    device.calls[0]?.finish();
    await device.dispatched(2);
    assert.deepEqual(device.calls[1]?.payloads, [0, 4, 2], 'the short texts would pad the batch past 20%');
    device.calls[1]?.finish();
    await device.dispatched(3);
    assert.deepEqual(device.calls[2]?.payloads, [1, 5, 3], 'and go together next, closest length first');
  });

  it('does not starve an old long text behind a stream of short ones', async () => {
    const device = fakeDevice();
    const batcher = new Batcher(device.run, { ...OPTIONS, maxBatchSize: 4, inFlight: 1, maxDelayMs: 0 });
    let long: Promise<number[]> | undefined;
    let nextId = 1000;
    let longDoneAt = -1;
    void batcher.submit(items([nextId++]));
    for (let batch = 0; batch < 40 && longDoneAt < 0; batch++) {
      // Every round brings more short texts than a batch takes.
      void batcher.submit(items([nextId++, nextId++, nextId++, nextId++, nextId++], () => 8));
      if (batch === 2) long = batcher.submit(items([7], () => 500));
      void long?.then(() => (longDoneAt = batch));
      await device.dispatched(batch + 1);
      device.calls[batch]?.finish();
      await new Promise((r) => setImmediate(r));
    }
    assert.ok(longDoneAt >= 0, 'the long text never ran');
    assert.ok(longDoneAt <= 6, `the long text waited ${longDoneAt} batches`);
  });

  it('returns each request its results in its own order, across batches', async () => {
    const device = fakeDevice();
    const batcher = new Batcher(device.run, { ...OPTIONS, maxBatchSize: 3, inFlight: 1, maxDelayMs: 0 });
    const ids = [0, 1, 2, 3, 4, 5, 6, 7];
    const result = batcher.submit(items(ids, (id) => (id * 37) % 11));
    for (let i = 0; i < 3; i++) {
      await device.dispatched(i + 1);
      device.calls[i]?.finish();
    }
    assert.deepEqual(
      await result,
      ids.map((id) => id * 10),
    );
  });

  it('refuses texts beyond maxQueue at once', async () => {
    const device = fakeDevice();
    const batcher = new Batcher(device.run, { ...OPTIONS, maxQueue: 5, inFlight: 1 });
    void batcher.submit(items([1])); // on the device, not queued
    void batcher.submit(items([2, 3, 4]));
    await assert.rejects(batcher.submit(items([5, 6, 7])), (e: unknown) => {
      assert.ok(e instanceof OverloadedError);
      assert.equal(e.message, 'overloaded: 3 texts are waiting and 3 more would exceed maxQueue (5)');
      return true;
    });
    assert.equal(batcher.stats().requests.overloaded, 1);
  });

  it('drops aborted texts before the device, and discards results already on their way', async () => {
    const device = fakeDevice();
    const batcher = new Batcher(device.run, { ...OPTIONS, inFlight: 1, maxDelayMs: 60_000 });
    const running = new AbortController();
    const queued = new AbortController();
    const onDevice = batcher.submit(items([1, 2]), { signal: running.signal });
    const waiting = batcher.submit(items([3]), { signal: queued.signal });
    const other = batcher.submit(items([4]));
    queued.abort();
    running.abort();
    await assert.rejects(onDevice, AbortedError);
    await assert.rejects(waiting, AbortedError);
    device.calls[0]?.finish();
    await device.dispatched(2);
    assert.deepEqual(device.calls[1]?.payloads, [4], 'the aborted text 3 never reached the device');
    device.calls[1]?.finish();
    assert.deepEqual(await other, [40]);
    await assert.rejects(batcher.submit(items([5]), { signal: AbortSignal.abort() }), AbortedError);
    assert.equal(batcher.stats().requests.aborted, 3);
  });

  it('times a request out and drops its texts', async () => {
    const device = fakeDevice();
    const batcher = new Batcher(device.run, { ...OPTIONS, inFlight: 1, maxDelayMs: 60_000 });
    void batcher.submit(items([1]));
    await assert.rejects(
      batcher.submit(items([2]), { timeoutMs: 5 }),
      (e: unknown) => e instanceof TimeoutError && e.timeoutMs === 5,
    );
    assert.equal(batcher.queueDepth, 0);
    assert.equal(batcher.stats().requests.timedOut, 1);
  });

  it('fails the requests of a failed batch and carries on with the rest', async () => {
    const device = fakeDevice();
    const batcher = new Batcher(device.run, { ...OPTIONS, maxBatchSize: 1, inFlight: 1, maxDelayMs: 0 });
    const a = batcher.submit(items([1]));
    const b = batcher.submit(items([2]));
    device.calls[0]?.fail(new Error('device on fire'));
    await assert.rejects(a, /device on fire/);
    await device.dispatched(2);
    device.calls[1]?.finish();
    assert.deepEqual(await b, [20]);
  });

  for (const mode of ['drain', 'reject'] as const) {
    it(`close('${mode}') with 10,000 pending requests settles every promise`, async () => {
      const calls: number[][] = [];
      const run = async (payloads: number[]) => {
        calls.push(payloads);
        await new Promise((r) => setImmediate(r));
        return payloads;
      };
      const batcher = new Batcher(run, { ...OPTIONS, maxBatchSize: 32, maxQueue: 20_000 });
      const pending = Promise.allSettled(Array.from({ length: 10_000 }, (_, i) => batcher.submit(items([i]))));
      await batcher.close(mode);
      const settled = await pending;
      const fulfilled = settled.filter((s) => s.status === 'fulfilled').length;
      const rejected = settled.filter((s) => s.status === 'rejected');
      assert.equal(fulfilled + rejected.length, 10_000);
      if (mode === 'drain') assert.equal(fulfilled, 10_000);
      else {
        assert.ok(rejected.length > 9_000, `${rejected.length} rejected`);
        assert.ok(rejected.every((r) => (r as PromiseRejectedResult).reason instanceof ClosedError));
      }
      await assert.rejects(batcher.submit(items([1])), ClosedError);
    });
  }

  it('counts batch sizes, padding and latency', async () => {
    const device = fakeDevice();
    const batcher = new Batcher(device.run, { ...OPTIONS, inFlight: 1, maxDelayMs: 0 });
    const a = batcher.submit(items([1], () => 10));
    const b = batcher.submit(items([2, 3], (id) => (id === 2 ? 30 : 10)));
    device.calls[0]?.finish();
    await a;
    await device.dispatched(2);
    device.calls[1]?.finish();
    await b;
    const stats = batcher.stats();
    assert.deepEqual(stats.batchSizes, { 1: 1, 2: 1 });
    assert.equal(stats.realTokens, 50);
    assert.equal(stats.paddedTokens, 70);
    assert.ok(Math.abs(stats.paddingRatio - 20 / 70) < 1e-12);
    assert.equal(stats.latencyMs.count, 2);
    assert.deepEqual(stats.requests, { submitted: 2, completed: 2, failed: 0, overloaded: 0, aborted: 0, timedOut: 0 });
  });
});
