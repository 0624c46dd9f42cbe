// The answers the HTTP stack would write itself (Node's bare 417 and no-Host 400, fastify's
// router 400s): each in the API's error shape, and counted in /metrics like any other request.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { rawHttp, serveFixture } from './helpers.js';

describe("server: Node's and fastify's own refusals", () => {
  let server: Awaited<ReturnType<typeof serveFixture>>;
  let port: number;
  before(async () => {
    server = await serveFixture('labels2', {}, {});
    port = server.port;
  });
  after(() => server.close());

  it('answers 417, a missing Host and a URL the router cannot decode in the API shape, counting each', async () => {
    // Each asks "Connection: close" and waits for the server to close, as a client of its own.
    const cases: Array<[string, number, string, string]> = [
      [
        'POST /classify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n' +
          'Expect: gzip-please\r\nContent-Length: 13\r\n\r\n{"text": "a"}',
        417,
        'ERR_EXPECTATION_FAILED',
        'Expected no Expect header or "100-continue", got "gzip-please"',
      ],
      [
        'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n',
        400,
        'ERR_BAD_HTTP',
        'Expected a Host header, which HTTP/1.1 requires',
      ],
      [
        'GET /%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
        400,
        'ERR_BAD_REQUEST',
        "'/%zz' is not a valid url component",
      ],
    ];
    for (const [data, status, code, message] of cases) {
      assert.deepEqual(await rawHttp(port, data, { keepOpen: true }), { status, body: { error: { code, message } } });
    }
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    for (const line of [
      'bertgate_requests_total{route="/classify",status="417"} 1',
      'bertgate_requests_total{route="/healthz",status="400"} 1',
      'bertgate_requests_total{route="none",status="400"} 1',
      'bertgate_request_errors_total{code="ERR_EXPECTATION_FAILED"} 1',
      'bertgate_request_errors_total{code="ERR_BAD_HTTP"} 1',
      'bertgate_request_errors_total{code="ERR_BAD_REQUEST"} 1',
    ]) {
      assert.ok(metrics.includes(line), `missing ${line} in\n${metrics}`);
    }
  });

  it('answers two Host headers 400 and a compressed body 415, in the API shape, counting each', async () => {
    const cases: Array<[string, number, string, string]> = [
      [
        'GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n',
        400,
        'ERR_BAD_HTTP',
        'Expected one Host header, got 2',
      ],
      [
        'POST /classify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n' +
          'Content-Encoding: gzip\r\nContent-Length: 13\r\n\r\n{"text": "a"}',
        415,
        'ERR_UNSUPPORTED_MEDIA_TYPE',
        'Expected an uncompressed body (no Content-Encoding, or "identity"), got Content-Encoding "gzip"',
      ],
    ];
    for (const [data, status, code, message] of cases) {
      assert.deepEqual(await rawHttp(port, data, { keepOpen: true }), { status, body: { error: { code, message } } });
    }
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    for (const line of [
      'bertgate_requests_total{route="/classify",status="415"} 1',
      'bertgate_request_errors_total{code="ERR_UNSUPPORTED_MEDIA_TYPE"} 1',
    ]) {
      assert.ok(metrics.includes(line), `missing ${line} in\n${metrics}`);
    }
  });

  it('still serves afterwards', async () => {
    const r = await rawHttp(
      port,
      'POST /classify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n' +
        'Content-Length: 16\r\n\r\n{"text": "fine"}',
      { keepOpen: true },
    );
    assert.equal(r.status, 200);
  });
});
