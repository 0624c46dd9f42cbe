// Faults: damaged bundles, files removed under a loaded model, process exit with work in
// flight (close() itself is in close.test.ts), memory running out mid-batch, and HTTP clients
// that misbehave. None may crash the process; every call gets an answer or a typed error.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { BundleError, Classifier } from '../lib/index.js';
import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { bundle, copyBundle, serveFixture } from './helpers.js';

const exec = promisify(execFile);
const INDEX = join(PACKAGE_ROOT, 'dist', 'lib', 'index.js');
const SANITIZED = (process.env['LD_PRELOAD'] ?? '').includes('asan');

/** Runs an ES module in a fresh node; resolves with its exit code, signal and output. */
async function child(
  source: string,
  timeout = 120_000,
): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, ['--input-type=module', '-e', source], {
      timeout,
      maxBuffer: 16 << 20,
    });
    return { code: 0, signal: null, stdout, stderr };
  } catch (error) {
    const e = error as { code: number | null; signal: string | null; stdout: string; stderr: string };
    return { code: e.code, signal: e.signal, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('faults: damaged bundles', () => {
  it('a model.pt with bytes flipped inside a tensor is refused, not loaded as another model', async () => {
    const copy = await copyBundle('labels7');
    try {
      const path = join(copy.dir, 'model.pt');
      const file = await open(path, 'r+');
      await file.write(Buffer.alloc(64, 0xff), 0, 64, 10_000); // inside the weights, not the zip directory
      await file.close();
      await assert.rejects(Classifier.load(copy.dir), (e: unknown) => {
        assert.ok(e instanceof BundleError, String(e));
        assert.match(
          e.message,
          new RegExp(
            `^${path} has SHA-256 [0-9a-f]{64}, but bundle\\.json says [0-9a-f]{64}: the file is corrupt or was replaced; re-export the bundle, or restore the file$`,
          ),
        );
        assert.equal(e.file, 'model.pt');
        return true;
      });
      // verify: false is the explicit way to load it anyway (and it does load: nothing else notices).
      const clf = await Classifier.load(copy.dir, { verify: false });
      await clf.close();
    } finally {
      await copy.cleanup();
    }
  });

  it('a tokenizer.json cut short is refused by size before anything is parsed', async () => {
    const copy = await copyBundle('labels2');
    try {
      const path = join(copy.dir, 'tokenizer.json');
      const text = await readFile(path);
      await writeFile(path, text.subarray(0, 100));
      await assert.rejects(
        Classifier.load(copy.dir),
        (e: unknown) =>
          e instanceof BundleError &&
          e.message ===
            `${path} has 100 bytes, but bundle.json says ${text.length}: the file is corrupt or was replaced; re-export the bundle, or restore the file`,
      );
    } finally {
      await copy.cleanup();
    }
  });

  it('bundle.json pointing outside the bundle is refused', async () => {
    const copy = await copyBundle('labels2');
    try {
      const manifestPath = join(copy.dir, 'bundle.json');
      const manifest = JSON.parse(await readFile(manifestPath, 'utf8'));
      manifest.files['../../etc/passwd'] = { bytes: 1, sha256: '0'.repeat(64) };
      await writeFile(manifestPath, JSON.stringify(manifest));
      await assert.rejects(
        Classifier.load(copy.dir),
        (e: unknown) =>
          e instanceof BundleError && e.message === 'bundle.json "files" names "../../etc/passwd", not a bundle file',
      );
    } finally {
      await copy.cleanup();
    }
  });
});

describe('faults: the model under way', () => {
  it('keeps classifying after its bundle directory is deleted, with the same answers', async () => {
    const copy = await copyBundle('labels7');
    const clf = await Classifier.load(copy.dir);
    try {
      const texts = ['install the package', 'a game with sound', 'text editor for files'];
      const before = await clf.logits(texts);
      await copy.cleanup();
      assert.equal(existsSync(copy.dir), false);
      const afterRemoval = await clf.logits(texts);
      assert.deepEqual(afterRemoval, before);
    } finally {
      await clf.close();
    }
  });

  it('process.exit() with work in flight exits cleanly (no crash in the native thread)', async () => {
    const r = await child(`
      import { Classifier } from ${JSON.stringify(INDEX)};
      const clf = await Classifier.load(${JSON.stringify(bundle('long'))}, { threads: 1 });
      const text = 'word '.repeat(400);
      for (let i = 0; i < 50; i++) clf.classify(Array(8).fill(text)).catch(() => {});
      setTimeout(() => process.exit(7), 20);
    `);
    assert.deepEqual({ code: r.code, signal: r.signal, stderr: r.stderr }, { code: 7, signal: null, stderr: '' });
  });

  it('a script that never calls close() still gets its answers, then exits by itself', async () => {
    const r = await child(`
      import { Classifier } from ${JSON.stringify(INDEX)};
      const clf = await Classifier.load(${JSON.stringify(bundle('labels2'))});
      clf.classify(Array(500).fill('hello there')).then((d) => console.log('answered', d.length));
    `);
    assert.deepEqual(
      { code: r.code, signal: r.signal, stdout: r.stdout, stderr: r.stderr },
      { code: 0, signal: null, stdout: 'answered 500\n', stderr: '' },
    );
  });

  it(
    'memory running out mid-batch: the batch is split and retried, answers unchanged',
    { skip: SANITIZED ? 'ASan reserves terabytes of address space: an address-space limit cannot apply' : false },
    async () => {
      // A real allocation failure: once warm, the process's address space is capped at its
      // current size plus 120 MiB (prlimit), less than one 64 x 512-token batch needs.
      const r = await child(`
        import { execFileSync } from 'node:child_process';
        import { readFileSync } from 'node:fs';
        import { Classifier } from ${JSON.stringify(INDEX)};
        const vm = () => Number(/VmSize:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
        const clf = await Classifier.load(${JSON.stringify(bundle('long'))}, { maxBatchSize: 64, maxBatchTokens: 64 * 512, threads: 1 });
        const texts = Array.from({ length: 64 }, (_, i) => Array.from({ length: 600 }, (_, j) => 'w' + ((i * 7 + j) % 50)).join(' '));
        const free = await clf.logits(texts);
        // Warm on a few texts only: the CPU allocator keeps a pass's buffers for the next, so after
        // the whole batch the same batch would need no new memory at all.
        await clf.close();
        const clf2 = await Classifier.load(${JSON.stringify(bundle('long'))}, { maxBatchSize: 64, maxBatchTokens: 64 * 512, threads: 1 });
        await clf2.logits(texts.slice(0, 4));
        execFileSync('prlimit', ['--pid', String(process.pid), '--as=' + (vm() + 120 * 2 ** 20)]);
        const capped = await clf2.logits(texts);
        let worst = 0;
        capped.forEach((row, i) => row.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - free[i][j])))));
        console.log(JSON.stringify({ splits: clf2.stats().outOfMemorySplits, worst, rows: capped.length, cache: clf2.stats().cpuCache }));
      `);
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout) as { splits: number; worst: number; rows: number };
      assert.ok(out.splits >= 1, `no split happened: ${r.stdout}`);
      assert.equal(out.rows, 64);
      assert.ok(out.worst <= 1e-5, `answers changed by ${out.worst}`);
    },
  );

  it(
    'memory running out while the addon copies a request: a typed OutOfMemoryError, and the handle serves on',
    { skip: SANITIZED ? 'ASan reserves terabytes of address space: an address-space limit cannot apply' : false },
    async () => {
      // The copy is made on the JS thread, where node-addon-api passes on only its own errors: a
      // std::bad_alloc there ended the process ("terminate called after throwing ...").
      const r = await child(`
        import { execFileSync } from 'node:child_process';
        import { readFileSync } from 'node:fs';
        import { fullRows, loadHandle, randomIds } from ${JSON.stringify(join(PACKAGE_ROOT, 'dist', 'test', 'native-handle.js'))};
        const vm = () => Number(/VmSize:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
        const { handle, vocab } = await loadHandle(${JSON.stringify(join(bundle('labels2'), 'model.pt'))});
        const small = fullRows(randomIds(16, vocab), 2, 8);
        const before = await handle.infer(small);
        const huge = fullRows(new Int32Array(0), 40_000, 512); // 245 MiB of tokens to copy
        execFileSync('prlimit', ['--pid', String(process.pid), '--as=' + (vm() + 96 * 2 ** 20)]);
        let code = 'none';
        try {
          await handle.infer(huge);
        } catch (e) {
          code = e.code;
        }
        const after = await handle.infer(small);
        const same = before.topLogProb.every((p, i) => p === after.topLogProb[i]);
        await handle.close();
        console.log(JSON.stringify({ code, same }));
      `);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), { code: 'ERR_OUT_OF_MEMORY', same: true });
    },
  );
});

describe('faults: HTTP clients', () => {
  let server: Awaited<ReturnType<typeof serveFixture>>;
  let port: number;
  before(async () => {
    server = await serveFixture('labels2', { maxQueue: 16 }, { requestTimeoutMs: 300 });
    port = server.port;
  });
  after(() => server.close());

  /** Writes `parts` with `gapMs` between them; resolves with everything the server sent. */
  function slowClient(parts: string[], gapMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      let received = '';
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => (received += d));
      socket.on('error', reject);
      socket.on('close', () => resolve(received));
      let i = 0;
      const next = (): void => {
        if (socket.destroyed) return; // the server hung up: stop writing
        socket.write(parts[i++] as string);
        if (i < parts.length) setTimeout(next, gapMs);
      };
      socket.once('connect', next);
    });
  }

  it('a client that stalls mid-headers gets 408 and is disconnected, while others are served', async () => {
    const stalled = slowClient(
      ['POST /classify HTTP/1.1\r\nHost: x\r\nConnection: close\r\n', 'Content-Type: app'],
      50,
    );
    const served = await fetch(`http://127.0.0.1:${port}/classify`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ text: 'meanwhile' }),
    });
    assert.equal(served.status, 200);
    await served.json(); // an unread body would keep the connection, and app.close(), waiting
    assert.match(await stalled, /^HTTP\/1\.1 408 Request Timeout\r\n/);
  });

  it('a client that sends its body a byte at a time past the deadline gets 408', async () => {
    const body = JSON.stringify({ text: 'slow' });
    const head = `POST /classify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
    const answer = await slowClient([head, ...body.split('')], 40);
    assert.match(answer, /^HTTP\/1\.1 408 Request Timeout\r\n/);
  });

  it('a request beyond the queue gets 429 with Retry-After while a burst beside it is answered', async () => {
    const post = (texts: string[]): Promise<Response> =>
      fetch(`http://127.0.0.1:${port}/classify`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ texts }),
      });
    const responses = await Promise.all([
      post(Array(17).fill('too many')),
      ...Array.from({ length: 11 }, () => post(['burst'])),
    ]);
    const [refused, ...served] = responses as [Response, ...Response[]];
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get('retry-after'), '1');
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, 'ERR_OVERLOADED');
    for (const r of served) {
      assert.equal(r.status, 200);
      assert.equal(((await r.json()) as { decisions: unknown[] }).decisions.length, 1);
    }
  });
});
