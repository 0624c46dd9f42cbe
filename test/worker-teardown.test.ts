// A worker thread's environment torn down at any moment of its classifier's life: terminated
// while Classifier.load() opens libtorch (the first load in the process) or loads the model,
// while classify() calls are in the engine, while close() runs; the worker calling
// process.exit() during its load; the main thread exiting while a worker loads. Every N-API
// call the addon makes then may fail, and none may throw a C++ exception through N-API: the
// process must end the way it was asked to, never with an abort.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';

import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';

const INDEX = pathToFileURL(join(PACKAGE_ROOT, 'dist', 'lib', 'index.js')).href;
const MODEL = join(PACKAGE_ROOT, 'models', 'default');
// Opening libtorch and loading the default model takes a few hundred ms here: these delays
// land before, during and after each step.
const DELAYS = [0, 30, 60, 100, 150, 200, 300, 450, 700];

/** Runs `main` as a module in a fresh node; how it ended and what it printed. */
function run(main: string): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', main], { env: process.env }, (error, stdout, stderr) => {
      const e = error as (Error & { code?: number; signal?: string }) | null;
      resolve({ code: e ? (e.code ?? null) : 0, signal: e?.signal ?? null, out: stdout + stderr });
    });
  });
}

/** The worker's source: `body` runs after the import, with `clf` for a loaded classifier. */
const worker = (body: string): string => `
  const { Classifier } = await import(${JSON.stringify(INDEX)});
  ${body}
`;

function expectClean(r: { code: number | null; signal: string | null; out: string }, code = 0): void {
  assert.doesNotMatch(r.out, /terminate called|Aborted|Segmentation|FATAL ERROR/, r.out);
  assert.equal(r.signal, null, r.out);
  assert.equal(r.code, code, r.out);
}

describe('worker teardown', () => {
  it('terminated while its load opens libtorch and loads the model, at every moment', async () => {
    for (const delay of DELAYS) {
      const r = await run(`
        import { Worker } from 'node:worker_threads';
        const w = new Worker(${JSON.stringify(worker(`const clf = await Classifier.load(${JSON.stringify(MODEL)}); await clf.classify('x');`))}, { eval: true });
        w.on('error', (e) => console.log('worker error', e.message));
        setTimeout(async () => { await w.terminate(); console.log('terminated'); }, ${delay});
      `);
      expectClean(r);
      assert.match(r.out, /terminated/, `delay ${delay}: ${r.out}`);
    }
  });

  it('terminated while classify() calls are in the engine, and while close() runs', async () => {
    for (const delay of DELAYS) {
      const r = await run(`
        import { Worker } from 'node:worker_threads';
        const w = new Worker(${JSON.stringify(
          worker(`
            const { parentPort } = await import('node:worker_threads');
            const clf = await Classifier.load(${JSON.stringify(MODEL)});
            parentPort.postMessage('loaded');
            const texts = Array.from({ length: 64 }, (_, i) => 'text number ' + i + ' about python bindings');
            for (let i = 0; i < 4; i++) await Promise.all([clf.classify(texts), clf.logits(texts)]);
            const closing = clf.close();
            void clf.classify('after close').catch(() => {});
            await closing;
            parentPort.postMessage('closed');
          `),
        )}, { eval: true });
        w.on('error', (e) => console.log('worker error', e.message));
        w.once('message', () => setTimeout(async () => { await w.terminate(); console.log('terminated'); }, ${delay}));
      `);
      expectClean(r);
      assert.match(r.out, /terminated/, `delay ${delay}: ${r.out}`);
    }
  });

  it('the worker calls process.exit() during its load', async () => {
    for (const delay of DELAYS) {
      const r = await run(`
        import { Worker } from 'node:worker_threads';
        const w = new Worker(${JSON.stringify(
          worker(`
            setTimeout(() => process.exit(3), ${delay});
            await Classifier.load(${JSON.stringify(MODEL)});
          `),
        )}, { eval: true });
        w.on('exit', (code) => console.log('worker exited', code));
      `);
      expectClean(r);
      assert.match(r.out, /worker exited (3|0)/, `delay ${delay}: ${r.out}`);
    }
  });

  it('the main thread exits while a worker loads', async () => {
    for (const delay of DELAYS) {
      const r = await run(`
        import { Worker } from 'node:worker_threads';
        new Worker(${JSON.stringify(worker(`await Classifier.load(${JSON.stringify(MODEL)});`))}, { eval: true });
        setTimeout(() => process.exit(5), ${delay});
      `);
      expectClean(r, 5);
    }
  });
});
