// Inference is really asynchronous: it runs on a native thread the addon owns, so the event
// loop keeps turning during a long forward pass and a saturated libuv pool does not stall it.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { open, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import type { NativeInferRequest } from '../lib/binding.js';
import { MAX_EVENT_LOOP_GAP_MS, bundle, watchTimer } from './helpers.js';
import { fullRows, loadHandle, randomIds } from './native-handle.js';

/** A batch of random ids (full rows, no padding), built without the tokenizer (which uses the libuv pool). */
function randomBatch(rows: number, seqLen: number, vocab: number): NativeInferRequest {
  return { ...fullRows(randomIds(rows * seqLen, vocab), rows, seqLen), wantLogits: true };
}

describe('asynchronous inference', () => {
  it('keeps a 1 ms timer firing during a long inference, and reports the worst delay', async (t) => {
    const { handle, vocab } = await loadHandle(join(bundle('long'), 'model.pt'));
    try {
      const request = randomBatch(48, 512, vocab);
      await handle.infer(randomBatch(1, 8, vocab)); // warm-up
      const stop = watchTimer();
      const start = performance.now();
      const result = await handle.infer(request);
      const elapsed = performance.now() - start;
      const { ticks, worstGapMs: worst } = stop();
      t.diagnostic(
        `48 x 512 tokens: ${elapsed.toFixed(0)} ms (forward ${result.forwardMs.toFixed(0)} ms); ` +
          `the 1 ms timer fired ${ticks} times, worst gap ${worst.toFixed(1)} ms`,
      );
      assert.equal(result.rows, 48);
      // A call that blocked the JS thread would resolve before any timer could run.
      assert.ok(ticks > 0, 'the timer never fired while inference ran');
      assert.ok(worst < MAX_EVENT_LOOP_GAP_MS, `the event loop stalled for ${worst.toFixed(1)} ms during inference`);
    } finally {
      await handle.close();
    }
  });

  // Were inference on the pool, it would wait behind the blocked threads: fail, not hang.
  it('completes while every libuv pool thread is blocked', { timeout: 60_000 }, async () => {
    const { handle, vocab } = await loadHandle(join(bundle('labels2'), 'model.pt'));
    const dir = await mkdtemp(join(tmpdir(), 'bertgate-pool-'));
    const poolSize = Number(process.env['UV_THREADPOOL_SIZE'] ?? 4);
    const fifos = Array.from({ length: poolSize }, (_, i) => join(dir, `fifo${i}`));
    try {
      for (const fifo of fifos) execFileSync('mkfifo', [fifo]);
      // Opening a FIFO for reading blocks its pool thread until a writer appears.
      const blocked = fifos.map((fifo) => open(fifo, 'r'));
      let poolFree = false;
      const probe = open(__filename(), 'r').then((f) => {
        poolFree = true;
        return f.close();
      });
      const result = await handle.infer(randomBatch(2, 16, vocab));
      assert.equal(result.rows, 2);
      assert.equal(poolFree, false, 'the pool was not saturated, so this proves nothing');
      for (const fifo of fifos) closeSync(openSync(fifo, 'w'));
      for (const f of await Promise.all(blocked)) await f.close();
      await probe;
    } finally {
      await handle.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('copies the inputs before returning, so the caller may reuse its arrays at once', async () => {
    const { handle, vocab } = await loadHandle(join(bundle('labels2'), 'model.pt'));
    try {
      const request = randomBatch(4, 24, vocab);
      const reference = await handle.infer({ ...request, tokens: request.tokens.slice() });
      const pending = handle.infer(request);
      request.tokens.fill(1, 0, request.tokens.length / 3); // the ids
      request.tokens.fill(0, request.tokens.length / 3); // the mask and type ids
      const result = await pending;
      assert.deepEqual(result.logits, reference.logits);
    } finally {
      await handle.close();
    }
  });
});

function __filename(): string {
  return new URL(import.meta.url).pathname;
}
