// Classifier.close(): submitted work finishes or is refused as closed, every promise settles,
// the native thread is joined, and later calls are a ClosedError while the process carries on.
// (The Batcher's own close() is tested as a unit in batcher.test.ts; a process that exits
// without close() in faults.test.ts and worker-teardown.test.ts.)

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { Classifier, ClosedError } from '../lib/index.js';
import { bundle, rejectsWith } from './helpers.js';

function threadsNamed(name: string): number {
  return readdirSync('/proc/self/task').filter((tid) => {
    try {
      return readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() === name;
    } catch {
      return false; // the thread ended while we looked
    }
  }).length;
}

describe('close', () => {
  it('lets submitted work finish, then frees the model; closing twice is harmless', async () => {
    const c = await Classifier.load(bundle('labels2'));
    // Both calls are still tokenizing when close() is called: they finish all the same.
    const first = c.classify('first');
    const rest = c.classify(['second', 'third']);
    const closed = c.close();
    assert.equal((await first).accepted, true);
    assert.equal((await rest).length, 2);
    await closed;
    await c.close();
  });

  for (const drain of [true, false]) {
    it(`close({ drain: ${drain} }) with 10,000 pending calls settles every promise`, async () => {
      const clf = await Classifier.load(bundle('labels2'), { maxQueue: 20_000, maxBatchSize: 64 });
      const calls = Promise.allSettled(Array.from({ length: 10_000 }, (_, i) => clf.classify(`text number ${i}`)));
      await clf.close({ drain });
      const settled = await calls;
      const fulfilled = settled.filter((s) => s.status === 'fulfilled').length;
      const closed = settled.filter((s) => s.status === 'rejected' && s.reason instanceof ClosedError).length;
      assert.equal(fulfilled + closed, 10_000, 'every call either ran or was refused as closed');
      if (drain) assert.equal(fulfilled, 10_000);
      else assert.ok(closed > 0, 'closing without draining refused the waiting calls');
      await assert.rejects(clf.classify('after'), ClosedError);
    });
  }

  it('close() while batches are in the engine: every call settles, with a result or ClosedError', async () => {
    const clf = await Classifier.load(bundle('long'), { threads: 1 });
    const long = Array.from({ length: 400 }, (_, i) => `word${i % 37}`).join(' ');
    const calls = Array.from({ length: 40 }, () => clf.classify(Array.from({ length: 8 }, () => long)));
    await new Promise((resolve) => setTimeout(resolve, 5)); // let the first batch reach the engine
    const closing = clf.close({ drain: false });
    const settled = await Promise.allSettled(calls);
    await closing;
    let answered = 0;
    for (const s of settled) {
      if (s.status === 'fulfilled') answered++;
      else assert.ok(s.reason instanceof ClosedError, String(s.reason));
    }
    assert.ok(answered < calls.length, 'close() came after everything had finished: the test proved nothing');
    // The process and the runtime carry on.
    const again = await Classifier.load(bundle('labels2'));
    assert.equal((await again.classify('fine')).accepted !== undefined, true);
    await again.close();
  });

  it('runs each model on one named native thread, joined on close()', async () => {
    // A close({ drain: false }) above returns while the engine finishes the batch it is in; that
    // model's thread ends with it. Every earlier thread must end (none leaks), then the count starts.
    for (let waited = 0; threadsNamed('bertgate-infer') > 0; waited += 50) {
      assert.ok(waited < 60_000, `${threadsNamed('bertgate-infer')} inference threads of closed models still run`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const before = threadsNamed('bertgate-infer');
    const a = await Classifier.load(bundle('labels2'));
    const b = await Classifier.load(bundle('labels2'));
    assert.equal(threadsNamed('bertgate-infer'), before + 2);
    await a.close();
    await b.close();
    assert.equal(threadsNamed('bertgate-infer'), before);
  });
});

describe('use after close', () => {
  let clf: Classifier;
  before(async () => {
    clf = await Classifier.load(bundle('labels2'));
  });
  after(() => clf.close());

  it('use after close() is a ClosedError, and the process carries on', async () => {
    const c = await Classifier.load(bundle('labels2'));
    await c.close();
    await rejectsWith(c.classify('hello'), ClosedError, 'the classifier is closed');
    await rejectsWith(c.logits(['hello']), ClosedError, 'the classifier is closed');
    const d = await clf.classify('still alive');
    assert.equal(d.accepted, true);
  });
});
