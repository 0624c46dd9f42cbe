// libtorch's CPU allocator, replaced by the engine's bounded cache of large buffers
// (native/engine/cpu_allocator.h): under batches of changing size the cache serves most
// requests, stays within its bound, and changes no logit; BERTGATE_CPU_ALLOCATOR=system keeps
// libtorch's own; and the choice, process-wide, is fixed by the first load. One process per
// setting, since the first load decides.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';

import type { NativeCpuCache } from '../lib/binding.js';
import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { wordTexts } from './helpers.js';

const exec = promisify(execFile);
const INDEX = pathToFileURL(join(PACKAGE_ROOT, 'dist', 'lib', 'index.js')).href;
const INT8 = join(PACKAGE_ROOT, 'models', 'default-int8');
const MIB = 2 ** 20;
// The shapes a busy server sends: a batch of another size on nearly every call.
const SIZES = [1, 250, 3, 64, 7, 100, 16, 33, 2, 180, 32, 5, 120, 9, 77, 250, 1, 40];

interface Run {
  probe: number[][];
  mixed: number[][];
  first: NativeCpuCache | null;
  after: NativeCpuCache | null;
  flipped: { code: string; message: string } | null;
}

async function child(allocator: string | undefined): Promise<Run> {
  const texts = wordTexts(
    SIZES.reduce((a, b) => a + b, 0),
    23,
  );
  const probe = wordTexts(40, 5);
  const code = `
    const { Classifier } = await import(${JSON.stringify(INDEX)});
    const clf = await Classifier.load(${JSON.stringify(INT8)});
    const texts = ${JSON.stringify(texts)};
    const sizes = ${JSON.stringify(SIZES)};
    const probe = (await clf.logits(${JSON.stringify(probe)})).map((row) => Array.from(row));
    const first = clf.stats().cpuCache;
    // One call at a time, so each is batched alike in every run: int8 logits move with their
    // batch-mates, and the comparison is of allocators, not of batchings.
    const mixed = [];
    let at = 0;
    for (const n of sizes) mixed.push(...(await clf.logits(texts.slice(at, (at += n)))).map((row) => Array.from(row)));
    const after = clf.stats().cpuCache;
    await clf.close();
    process.env.BERTGATE_CPU_ALLOCATOR = process.env.BERTGATE_CPU_ALLOCATOR === 'system' ? '' : 'system';
    const flipped = await Classifier.load(${JSON.stringify(INT8)}).then(
      async (c) => (await c.close(), null),
      (e) => ({ code: e.code, message: e.message }),
    );
    console.log(JSON.stringify({ probe, mixed, first, after, flipped }));
  `;
  const env = { ...process.env };
  delete env['BERTGATE_CPU_ALLOCATOR'];
  if (allocator !== undefined) env['BERTGATE_CPU_ALLOCATOR'] = allocator;
  const { stdout } = await exec(process.execPath, ['--input-type=module', '-e', code], {
    env,
    maxBuffer: 64 * MIB,
  });
  return JSON.parse(stdout.trim().split('\n').pop() as string) as Run;
}

describe('the CPU allocator', () => {
  it('by default: large buffers come back from the cache, it stays within max(128 MiB, 2x peak live), the choice is fixed', async () => {
    const run = await child(undefined);
    assert.ok(run.first, 'no cpuCache in stats after the first batch');
    assert.ok(run.after);
    assert.equal(run.after.installed, true);
    // The model's weights, loaded after the choice, are live large buffers themselves.
    assert.ok(run.after.liveBytes > 0 && run.after.liveBytes <= run.after.peakLiveBytes, JSON.stringify(run.after));
    assert.ok(run.after.cachedBytes <= run.after.cacheLimitBytes, JSON.stringify(run.after));
    assert.equal(run.after.cacheLimitBytes, Math.max(128 * MIB, 2 * run.after.peakLiveBytes));
    // Reuse, not fresh mappings, once the shapes have been seen: most requests are served.
    const reused = run.after.reused - run.first.reused;
    const mapped = run.after.mapped - run.first.mapped;
    assert.ok(reused > 10 * mapped, `reused ${reused}, mapped ${mapped} over ${SIZES.length} batches`);
    assert.equal(run.flipped?.code, 'ERR_LIBTORCH_CONFLICT', JSON.stringify(run.flipped));
    assert.match(
      run.flipped?.message ?? '',
      /BERTGATE_CPU_ALLOCATOR=system for this load, but the process's first load chose the caching one/,
    );
  });

  it("with BERTGATE_CPU_ALLOCATOR=system: libtorch's own allocator, the same logits, and the choice is fixed", async () => {
    const [cached, system] = await Promise.all([child(undefined), child('system')]);
    assert.equal(system.after?.installed, false, JSON.stringify(system.after));
    // Where buffers live changes no arithmetic: the same logits, bit for bit, alone and in the
    // mixed batches where the cache reuses buffers.
    assert.deepEqual(system.probe, cached.probe);
    assert.equal(
      cached.mixed.length,
      SIZES.reduce((a, b) => a + b, 0),
    );
    assert.deepEqual(system.mixed, cached.mixed);
    assert.equal(system.flipped?.code, 'ERR_LIBTORCH_CONFLICT', JSON.stringify(system.flipped));
    assert.match(
      system.flipped?.message ?? '',
      /BERTGATE_CPU_ALLOCATOR is unset for this load, but the process's first load chose libtorch's own/,
    );
  });

  it('a value it does not know is refused at load, naming the variable', async () => {
    await assert.rejects(child('jemalloc'), (e: Error & { stderr?: string }) => {
      assert.match(e.stderr ?? '', /InvalidArgumentError: BERTGATE_CPU_ALLOCATOR is "jemalloc"; expected "system"/);
      return true;
    });
  });
});
