// `bertgate serve` as a real HTTP server in a child process, driven over loopback.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { Classifier } from '../lib/index.js';
import { CLI, bertgate, bundle } from './helpers.js';

interface Server {
  url: string;
  child: ChildProcess;
  output: () => string;
  /** SIGTERM, then the exit code. */
  stop: () => Promise<number | null>;
}

async function serve(args: string[]): Promise<Server> {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const check = (): void => {
      const match = /listening on (http:\/\/\S+)/.exec(output);
      if (match) resolve(match[1] as string);
    };
    child.stdout?.on('data', check);
    child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${output}`)));
  });
  return {
    url,
    child,
    output: () => output,
    stop: async () => {
      if (child.exitCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const [code] = (await once(child, 'exit')) as [number | null];
      return code;
    },
  };
}

function post(url: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(`${url}/classify`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...init,
  });
}

async function waitFor(condition: () => Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((r) => setTimeout(r, 10));
}

describe('bertgate serve', () => {
  it('classifies {text} and {texts} like the library does', async () => {
    const server = await serve(['--model', bundle('labels7'), '--threshold', '0.15']);
    const clf = await Classifier.load(bundle('labels7'), { threshold: 0.15 });
    try {
      const texts = ['install a package', 'a game with sound', { text: 'first', pair: 'second' }];
      const many = await post(server.url, { texts });
      assert.equal(many.status, 200);
      const { decisions } = (await many.json()) as { decisions: Array<{ label: string; probability: number }> };
      const local = await clf.classify(texts);
      decisions.forEach((d, i) => {
        assert.equal(d.label, local[i]?.label);
        assert.ok(Math.abs(d.probability - (local[i]?.probability as number)) < 1e-5);
      });
      const one = await post(server.url, { text: 'install a package' });
      assert.equal(one.status, 200);
      assert.equal(((await one.json()) as { decision: { label: string } }).decision.label, local[0]?.label);
    } finally {
      await clf.close();
      assert.equal(await server.stop(), 0);
    }
  });

  it('answers bad requests with 400, 404, 413 and 415, naming the problem', async () => {
    const server = await serve(['--model', bundle('labels2'), '--body-limit', '300']);
    try {
      const cases: Array<[Promise<Response>, number, string, string]> = [
        [post(server.url, '{"text": '), 400, 'ERR_BAD_REQUEST', 'Body is not valid JSON: Unexpected end of JSON input'],
        [
          post(server.url, { text: 42 }),
          400,
          'ERR_INVALID_ARGUMENT',
          'Expected text to be a string, a Uint8Array of UTF-8, or { text, pair }, got 42',
        ],
        [
          post(server.url, { texts: [] }),
          400,
          'ERR_INVALID_ARGUMENT',
          'Expected texts to be a non-empty array, got an empty array',
        ],
        [
          post(server.url, {}),
          400,
          'ERR_INVALID_ARGUMENT',
          'Expected exactly one of "text" (a string) or "texts" (an array)',
        ],
        [
          post(server.url, { text: 'a', texts: ['b'] }),
          400,
          'ERR_INVALID_ARGUMENT',
          'Expected exactly one of "text" (a string) or "texts" (an array)',
        ],
        [
          post(server.url, { text: 'a', lang: 'en' }),
          400,
          'ERR_INVALID_ARGUMENT',
          'Unknown field "lang"; expected "text" or "texts", and optionally "timeoutMs"',
        ],
        [
          post(server.url, [1, 2]),
          400,
          'ERR_INVALID_ARGUMENT',
          'Expected a JSON object with "text" (a string) or "texts" (an array)',
        ],
        [
          post(server.url, { text: 'x'.repeat(400) }),
          413,
          'ERR_BODY_TOO_LARGE',
          'Expected a body of at most 300 bytes (--body-limit)',
        ],
        [
          fetch(`${server.url}/classify`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' }),
          415,
          'ERR_UNSUPPORTED_MEDIA_TYPE',
          'Expected content-type application/json, got text/plain',
        ],
        [fetch(`${server.url}/nope`), 404, 'ERR_NOT_FOUND', 'no route GET /nope'],
      ];
      for (const [response, status, code, message] of cases) {
        const r = await response;
        assert.deepEqual({ status: r.status, body: await r.json() }, { status, body: { error: { code, message } } });
      }
      assert.equal((await post(server.url, { text: 'still serving' })).status, 200);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  it('refuses with 429 and Retry-After when the queue is full', async () => {
    const server = await serve(['--model', bundle('labels2'), '--max-queue', '2']);
    try {
      const r = await post(server.url, { texts: ['a', 'b', 'c'] });
      assert.equal(r.status, 429);
      assert.equal(r.headers.get('retry-after'), '1');
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'ERR_OVERLOADED');
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  it('--device cpu --replicas 2 serves from two replicas of one model', async () => {
    const server = await serve(['--model', bundle('labels50'), '--device', 'cpu', '--replicas', '2', '--threads', '1']);
    try {
      await Promise.all(
        Array.from({ length: 12 }, (_, i) => post(server.url, { texts: [`text ${i}`, `another ${i}`, 'and more'] })),
      );
      const stats = (await (await fetch(`${server.url}/stats`)).json()) as {
        replicas: { replica: number; device: string; texts: number; healthy: boolean }[];
      };
      assert.deepEqual(
        stats.replicas.map((r) => [r.replica, r.device, r.healthy]),
        [
          [0, 'cpu', true],
          [1, 'cpu', true],
        ],
      );
      assert.equal(
        stats.replicas.reduce((n, r) => n + r.texts, 0),
        36,
      );
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  it('reports health, readiness and Prometheus metrics', async () => {
    const server = await serve(['--model', bundle('labels2')]);
    try {
      assert.deepEqual(await (await fetch(`${server.url}/healthz`)).json(), {
        status: 'ok',
        replicas: { healthy: 1, total: 1 },
      });
      assert.deepEqual(await (await fetch(`${server.url}/readyz`)).json(), {
        status: 'ready',
        queueDepth: 0,
        replicas: { healthy: 1, total: 1 },
      });
      await post(server.url, { texts: ['one', 'two'] });
      await post(server.url, { text: 42 });
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      for (const line of [
        'bertgate_requests_total{route="/classify",status="200"} 1',
        'bertgate_requests_total{route="/classify",status="400"} 1',
        'bertgate_request_errors_total{code="ERR_INVALID_ARGUMENT"} 1',
        'bertgate_texts_total 2',
        'bertgate_batch_size_count 1',
        'bertgate_queue_depth 0',
        'bertgate_out_of_memory_splits 0',
      ]) {
        assert.ok(metrics.includes(line), `missing ${line}`);
      }
      assert.match(metrics, /bertgate_request_duration_seconds_bucket\{le="0.1",route="\/classify"\} \d+/);
      assert.match(metrics, /bertgate_padded_tokens_total \d+/);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  it('drops the texts of a client that disconnects', async () => {
    const server = await serve(['--model', bundle('long'), '--threads', '1']);
    try {
      const long = 'word '.repeat(600);
      const busy = post(server.url, { texts: Array.from({ length: 64 }, () => long) });
      const controller = new AbortController();
      const leaving = post(
        server.url,
        { texts: Array.from({ length: 64 }, () => long) },
        { signal: controller.signal },
      );
      await waitFor(
        async () =>
          ((await (await fetch(`${server.url}/stats`)).json()) as { texts: { submitted: number } }).texts.submitted ===
          128,
      );
      controller.abort();
      await assert.rejects(leaving);
      assert.equal((await busy).status, 200);
      const stats = (await (await fetch(`${server.url}/stats`)).json()) as {
        requests: { aborted: number };
        texts: { completed: number };
      };
      assert.equal(stats.requests.aborted, 1);
      assert.ok(
        stats.texts.completed < 128,
        `${stats.texts.completed} texts ran; the disconnected client's should not all have`,
      );
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  it('on SIGTERM answers every request already received, refuses new ones, and exits 0', async () => {
    const server = await serve(['--model', bundle('long'), '--threads', '1']);
    const long = 'word '.repeat(600);
    const requests = Array.from({ length: 4 }, () =>
      post(server.url, { texts: Array.from({ length: 64 }, () => long) }),
    );
    await waitFor(
      async () =>
        ((await (await fetch(`${server.url}/stats`)).json()) as { texts: { submitted: number } }).texts.submitted ===
        256,
    );
    const exited = once(server.child, 'exit');
    server.child.kill('SIGTERM');
    for (const r of await Promise.all(requests)) {
      assert.equal(r.status, 200);
      assert.equal(((await r.json()) as { decisions: unknown[] }).decisions.length, 64);
    }
    const [code] = (await exited) as [number | null];
    assert.equal(code, 0);
    assert.match(server.output(), /SIGTERM: finishing in-flight requests\nstopped\n/);
    await assert.rejects(fetch(`${server.url}/healthz`), 'the port is closed');
  });
});

describe('bertgate serve: stopping', () => {
  /** A server busy with 4 requests of 64 long texts, every one of them received. */
  async function busy(args: string[] = []): Promise<{ server: Server; requests: Promise<Response>[] }> {
    const server = await serve(['--model', bundle('long'), '--threads', '1', ...args]);
    const long = 'word '.repeat(600);
    const requests = Array.from({ length: 4 }, () =>
      post(server.url, { texts: Array.from({ length: 64 }, () => long) }),
    );
    // A forced exit resets these: handled here, so that is no unhandled rejection.
    void Promise.allSettled(requests);
    await waitFor(
      async () =>
        ((await (await fetch(`${server.url}/stats`)).json()) as { texts: { submitted: number } }).texts.submitted ===
        256,
    );
    return { server, requests };
  }
  const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

  it('keeps draining through a second signal, answers every request, and exits 0', async () => {
    const { server, requests } = await busy();
    const exited = once(server.child, 'exit');
    server.child.kill('SIGTERM');
    await pause(100);
    server.child.kill('SIGINT');
    for (const r of await Promise.all(requests)) assert.equal(r.status, 200);
    const [code] = (await exited) as [number | null];
    assert.equal(code, 0);
    assert.match(
      server.output(),
      /SIGTERM: finishing in-flight requests\nSIGINT: still finishing in-flight requests; a third signal exits at once\nstopped\n/,
    );
  });

  it('treats SIGHUP as a graceful stop: every request answered, exit 0', async () => {
    const { server, requests } = await busy();
    const exited = once(server.child, 'exit');
    server.child.kill('SIGHUP');
    for (const r of await Promise.all(requests)) assert.equal(r.status, 200);
    const [code, signal] = (await exited) as [number | null, string | null];
    assert.deepEqual({ code, signal }, { code: 0, signal: null });
    assert.match(server.output(), /SIGHUP: finishing in-flight requests\nstopped\n/);
  });

  it('keeps enforcing --request-timeout-ms while draining: a stalled body gets 408, the rest 200, exit 0', async () => {
    const { server, requests } = await busy(['--request-timeout-ms', '3000', '--drain-timeout-ms', '120000']);
    const { port } = new URL(server.url);
    const socket = connect(Number(port), '127.0.0.1');
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    const closed = once(socket, 'close');
    // "100 Continue" says the server has read the headers: the request is in flight.
    socket.write(
      'POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n' +
        'Expect: 100-continue\r\n\r\n',
    );
    await waitFor(async () => text.includes('\r\n\r\n'));
    assert.equal(text, 'HTTP/1.1 100 Continue\r\n\r\n');
    socket.write('{"text":');
    const exited = once(server.child, 'exit');
    server.child.kill('SIGTERM');
    for (const r of await Promise.all(requests)) assert.equal(r.status, 200);
    await closed;
    const answer = text.slice('HTTP/1.1 100 Continue\r\n\r\n'.length);
    const [head = '', body = ''] = answer.split('\r\n\r\n');
    assert.deepEqual(
      { status: head.split('\r\n')[0], body },
      {
        status: 'HTTP/1.1 408 Request Timeout',
        body: JSON.stringify({
          error: { code: 'ERR_REQUEST_TIMEOUT', message: 'the request did not arrive in time (--request-timeout-ms)' },
        }),
      },
    );
    const [code] = (await exited) as [number | null];
    assert.equal(code, 0, server.output());
    assert.match(server.output(), /SIGTERM: finishing in-flight requests\nstopped\n/);
  });

  it('exits at once with status 1 on a third signal', async () => {
    const { server, requests } = await busy();
    const exited = once(server.child, 'exit');
    for (const signal of ['SIGTERM', 'SIGTERM', 'SIGTERM'] as const) {
      server.child.kill(signal);
      await pause(100);
    }
    const [code] = (await exited) as [number | null];
    assert.equal(code, 1);
    assert.match(server.output(), /bertgate: exiting before the drain finished: SIGTERM a third time\n/);
    const settled = await Promise.allSettled(requests);
    assert.ok(
      settled.some((s) => s.status === 'rejected'),
      'the forced exit left requests unanswered',
    );
  });

  it('exits with status 1 when the drain passes --drain-timeout-ms', async () => {
    const { server, requests } = await busy(['--drain-timeout-ms', '200']);
    const exited = once(server.child, 'exit');
    server.child.kill('SIGTERM');
    const [code] = (await exited) as [number | null];
    assert.equal(code, 1);
    assert.match(
      server.output(),
      /bertgate: exiting before the drain finished: the drain took longer than 200 ms \(--drain-timeout-ms\)\n/,
    );
    await Promise.allSettled(requests);
  });

  it('a port already in use is a one-line typed error, exit 1', async () => {
    const holder = await serve(['--model', bundle('labels2')]);
    try {
      const port = new URL(holder.url).port;
      const r = await bertgate(['serve', '--model', bundle('labels2'), '--port', port]);
      assert.deepEqual(r, {
        code: 1,
        stdout: '',
        stderr: `bertgate: ERR_LISTEN: cannot listen on 127.0.0.1:${port}: the address is in use; choose another --port\n`,
      });
    } finally {
      await holder.stop();
    }
  });
});

describe('scripts/dev-env.mjs', () => {
  it('passes SIGTERM on to the command it runs: a serve under it drains and stops, no orphan', async () => {
    const wrapper = spawn(
      process.execPath,
      [
        join(PACKAGE_ROOT, 'scripts', 'dev-env.mjs'),
        process.execPath,
        CLI,
        'serve',
        '--port',
        '0',
        '--model',
        bundle('labels2'),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    wrapper.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    wrapper.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    await waitFor(async () => output.includes('listening on'));
    const children = readFileSync(`/proc/${wrapper.pid}/task/${wrapper.pid}/children`, 'utf8').trim().split(/\s+/);
    assert.equal(children.length, 1, `the wrapper runs one child: ${children.join(' ')}`);
    const served = Number(children[0]);
    const exited = once(wrapper, 'exit');
    wrapper.kill('SIGTERM');
    const [code, signal] = (await exited) as [number | null, string | null];
    assert.deepEqual({ code, signal }, { code: 0, signal: null });
    assert.match(output, /SIGTERM: finishing in-flight requests\nstopped\n/);
    assert.throws(() => process.kill(served, 0), { code: 'ESRCH' }, 'the serve process is gone');
  });
});
