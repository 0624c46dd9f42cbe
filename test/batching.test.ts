// The batcher with the real addon and model: concurrent calls share batches and still get
// their own results; cancellation and overload under load; the event loop under full load.
// (close() under load is in close.test.ts.)

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { AbortedError, Classifier, OverloadedError, TimeoutError } from '../lib/index.js';
import { MAX_EVENT_LOOP_GAP_UNDER_LOAD_MS, bundle, expected, maxAbsDiff, watchTimer } from './helpers.js';

describe('batching with the real model', () => {
  it('gives 200 concurrent calls their own rows, equal to running each alone', async () => {
    const ref = await expected('labels50');
    const clf = await Classifier.load(bundle('labels50'), { maxBatchSize: 16 });
    try {
      const texts = Array.from({ length: 200 }, (_, i) => ref.texts[i % ref.texts.length] as string);
      const concurrent = await Promise.all(texts.map((t) => clf.logits(t)));
      concurrent.forEach((row, i) => {
        const want = ref.logits[i % ref.texts.length] as number[];
        assert.ok(maxAbsDiff(row, want) <= 1e-5, `call ${i}`);
      });
      const stats = clf.stats();
      assert.equal(stats.requests.completed, 200);
      assert.ok(stats.batches < 200, `${stats.batches} batches for 200 calls`);
      assert.ok(stats.paddingRatio >= 0 && stats.paddingRatio < 1);
    } finally {
      await clf.close();
    }
  });

  it('pads batches to buckets (padToMultipleOf) with the same logits as unpadded ones', async () => {
    const ref = await expected('labels50');
    const clf = await Classifier.load(bundle('labels50'), { padToMultipleOf: 16 });
    const lengths: number[] = [];
    clf.onBatch((e) => lengths.push(e.paddedTokens / e.size));
    try {
      const rows = await Promise.all(ref.texts.map((t) => clf.logits(t)));
      rows.forEach((row, i) => assert.ok(maxAbsDiff(row, ref.logits[i] as number[]) <= 1e-5, `text ${i}`));
      assert.ok(lengths.length > 0);
      // 16, 32, 48, or the model's maximum (64, itself a multiple here).
      for (const length of lengths) assert.equal(length % 16, 0, `a batch padded to ${length} tokens`);
      assert.equal(clf.info.batching.padToMultipleOf, 16);
    } finally {
      await clf.close();
    }
  });

  it('rejects aborted and timed-out calls with typed errors, and keeps serving', async () => {
    const clf = await Classifier.load(bundle('labels2'));
    try {
      await assert.rejects(clf.classify('x', { signal: AbortSignal.abort('caller left') }), (e: unknown) => {
        return e instanceof AbortedError && e.code === 'ERR_ABORTED' && e.cause === 'caller left';
      });
      const controller = new AbortController();
      const pending = clf.classify(['a', 'b', 'c'], { signal: controller.signal });
      controller.abort();
      await assert.rejects(pending, AbortedError);
      await assert.rejects(
        clf.classify('x', { timeoutMs: 1e-6 }),
        (e: unknown) => e instanceof TimeoutError && e.code === 'ERR_TIMEOUT',
      );
      await assert.rejects(
        clf.classify('x', { timeoutMs: -1 }),
        /Expected the "timeoutMs" option to be a finite number greater than 0, got -1/,
      );
      await assert.rejects(
        clf.classify('x', { signal: 'stop' as never }),
        /Expected the "signal" option to be an AbortSignal/,
      );
      assert.equal((await clf.classify('still here')).accepted, true);
    } finally {
      await clf.close();
    }
  });

  it('refuses calls beyond maxQueue at once with OverloadedError', async () => {
    const clf = await Classifier.load(bundle('labels2'), { maxQueue: 10 });
    try {
      await assert.rejects(clf.classify(Array.from({ length: 11 }, () => 'x')), (e: unknown) => {
        return (
          e instanceof OverloadedError &&
          e.message === 'overloaded: 0 texts are waiting and 11 more would exceed maxQueue (10)'
        );
      });
      assert.equal((await clf.classify(Array.from({ length: 10 }, () => 'x'))).length, 10);
    } finally {
      await clf.close();
    }
  });

  it('counts the calls refused before any work (aborted, overloaded) in stats().requests', async () => {
    const clf = await Classifier.load(bundle('labels2'), { maxQueue: 10 });
    try {
      await assert.rejects(clf.classify('x', { signal: AbortSignal.abort() }), AbortedError);
      await assert.rejects(clf.classify(Array.from({ length: 11 }, () => 'x')), OverloadedError);
      // Aborted while its texts are still being tokenized: refused, counted once.
      const controller = new AbortController();
      const pending = clf.classify(['a', 'b'], { signal: controller.signal });
      controller.abort();
      await assert.rejects(pending, AbortedError);
      await clf.classify('ran');
      const r = clf.stats().requests;
      assert.deepEqual(
        { submitted: r.submitted, completed: r.completed, overloaded: r.overloaded, aborted: r.aborted },
        { submitted: 4, completed: 1, overloaded: 1, aborted: 2 },
      );
    } finally {
      await clf.close();
    }
  });

  it('under load, every submitted call ends in exactly one counted outcome, as its caller saw it', async () => {
    const clf = await Classifier.load(bundle('labels7'), { maxQueue: 400, maxBatchSize: 16 });
    const seen = { completed: 0, overloaded: 0, aborted: 0, timedOut: 0, other: 0 };
    try {
      await Promise.all(
        Array.from({ length: 1500 }, async (_, i) => {
          const controller = new AbortController();
          // A third are aborted at some point (before the call, while it waits, or never in time).
          if (i % 3 === 0) setTimeout(() => controller.abort(), i % 7);
          if (i % 9 === 0) controller.abort();
          try {
            await clf.classify(
              Array.from({ length: 1 + (i % 5) }, (__, j) => `text ${i} part ${j}`),
              { signal: controller.signal, ...(i % 5 === 1 ? { timeoutMs: 1 + (i % 4) } : {}) },
            );
            seen.completed++;
          } catch (error) {
            if (error instanceof OverloadedError) seen.overloaded++;
            else if (error instanceof AbortedError) seen.aborted++;
            else if (error instanceof TimeoutError) seen.timedOut++;
            else seen.other++;
          }
        }),
      );
      const r = clf.stats().requests;
      assert.equal(seen.other, 0);
      assert.deepEqual(
        {
          completed: r.completed,
          overloaded: r.overloaded,
          aborted: r.aborted,
          timedOut: r.timedOut,
          failed: r.failed,
        },
        {
          completed: seen.completed,
          overloaded: seen.overloaded,
          aborted: seen.aborted,
          timedOut: seen.timedOut,
          failed: 0,
        },
      );
      assert.equal(r.submitted, 1500);
      assert.ok(seen.overloaded > 0 && seen.aborted > 0 && seen.completed > 0, JSON.stringify(seen));
    } finally {
      await clf.close();
    }
  });

  it('keeps the event loop turning under full load, and reports the worst delay', async (t) => {
    const clf = await Classifier.load(bundle('labels7'), { maxQueue: 100_000 });
    const words = 'install the package and run the server with network support for graphics and sound'.split(' ');
    const stop = watchTimer();
    let watched = { ticks: 0, worstGapMs: 0 };
    const start = performance.now();
    try {
      // 256 concurrent clients, each sending texts one after another.
      await Promise.all(
        Array.from({ length: 256 }, async (_, client) => {
          for (let i = 0; i < 8; i++) {
            const text = Array.from(
              { length: 5 + ((client + i) % 40) },
              (__, j) => words[(client + j) % words.length],
            ).join(' ');
            await clf.classify(text);
          }
        }),
      );
    } finally {
      watched = stop();
    }
    const { ticks, worstGapMs: worst } = watched;
    const elapsed = performance.now() - start;
    const stats = clf.stats();
    await clf.close();
    t.diagnostic(
      `2,048 calls from 256 clients in ${elapsed.toFixed(0)} ms, ${stats.batches} batches ` +
        `(padding ${(stats.paddingRatio * 100).toFixed(1)}%, p50 ${stats.latencyMs.p50.toFixed(1)} ms, ` +
        `p99 ${stats.latencyMs.p99.toFixed(1)} ms); 1 ms timer fired ${ticks} times, worst gap ${worst.toFixed(1)} ms`,
    );
    assert.equal(stats.requests.completed, 2048);
    assert.ok(ticks > 0, 'the timer never fired under load');
    assert.ok(worst < MAX_EVENT_LOOP_GAP_UNDER_LOAD_MS, `the event loop stalled for ${worst.toFixed(1)} ms under load`);
  });
});
