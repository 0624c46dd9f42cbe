/**
 * The HTTP JSON API of `bertgate serve`, on fastify:
 *
 *   POST /classify   {"text": "..."} -> {"decision": {...}}
 *                    {"texts": ["...", {"text": "...", "pair": "..."}]} -> {"decisions": [...]}
 *                    optional "timeoutMs"; a client that disconnects cancels its texts
 *   GET  /healthz    the process can serve: 503 once no replica is healthy (a replica taken out
 *                    stays out until the model is loaded again, so a restart is the cure: a
 *                    liveness probe on it restarts the pod); 200 while shutting down
 *   GET  /readyz     should this process get traffic: 503 while shutting down or with no healthy
 *                    replica. A full queue does not flip it: that is a 429 per request, so one
 *                    burst cannot take every pod of a Service out at once
 *   GET  /metrics    Prometheus text
 *   GET  /stats      the classifier's statistics as JSON (queue, batches, padding, latency)
 *
 * Every error answer is JSON `{"error": {"code", "message"}}`, Node's and fastify's own included:
 * 400 for bad JSON or fields (ERR_BAD_REQUEST, ERR_INVALID_ARGUMENT), 400 for malformed HTTP or
 * a missing Host (ERR_BAD_HTTP), 408 for a request that did not arrive within requestTimeoutMs
 * (ERR_REQUEST_TIMEOUT; enforced while shutting down too), 413 for a body over the limit, 415
 * for a non-JSON body, 417 for an Expect header other than 100-continue
 * (ERR_EXPECTATION_FAILED), 431 for headers over Node's limit, 429 (with Retry-After) when the
 * queue is full, 422 for a text the model cannot run (ERR_UNPROCESSABLE_TEXT, naming texts[i]),
 * 500 for an engine fault (ERR_INFERENCE), 503 while shutting down or with no healthy replica,
 * 504 when timeoutMs passes. Each is counted once in
 * /metrics, by its code and in bertgate_requests_total (route "none" where no route was matched:
 * the HTTP never parsed, or the router could not read the URL).
 */

import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';

import type { Classifier } from './classifier.js';
import { BertgateError } from './errors.js';
import { createMetrics } from './metrics.js';
import { DEFAULTS } from './options.js';
import { decodeUtf8 } from './text-decoding.js';

export interface ServerOptions {
  /** Largest request body in bytes; default 1 MiB (DEFAULTS.server). */
  bodyLimit?: number;
  /** Most texts in one request; default 1,024. */
  maxTexts?: number;
  /** A request (headers and body) must arrive within this; default 30 s (slow clients). */
  requestTimeoutMs?: number;
}

/** Errors Node's HTTP parser raises before fastify sees a request, as this API names them. */
function clientError(error: { code?: string }): { status: number; code: string; message: string } {
  if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT')
    return {
      status: 408,
      code: 'ERR_REQUEST_TIMEOUT',
      message: 'the request did not arrive in time (--request-timeout-ms)',
    };
  if (error.code === 'HPE_HEADER_OVERFLOW')
    return { status: 431, code: 'ERR_HEADERS_TOO_LARGE', message: "the request's headers are over the size limit" };
  return { status: 400, code: 'ERR_BAD_HTTP', message: `malformed HTTP request (${error.code ?? 'parse error'})` };
}

/** Sockets answered by the client-error handler: their half-read request is not counted again. */
const answered = new WeakSet<Socket>();

/**
 * Keeps Node's request deadlines once closing has begun. server.close() stops Node's own checks
 * of requestTimeout and headersTimeout, so a client that stalls mid-request would hold the drain
 * until --drain-timeout-ms, whose forced exit drops every other request in flight. Returns the
 * function that starts the checks (every `everyMs`, until the server has closed); `expire` answers
 * a connection past its deadline. The deadlines count from when a connection became ready for its
 * request (it connected, or its previous answer was sent): at most a little stricter than Node,
 * which counts from the request's first byte, unseen here.
 */
function deadlinesWhileClosing(
  server: Server,
  limits: { requestMs: number; headersMs: number; everyMs: number },
  expire: (socket: Socket) => void,
): () => void {
  const waiting = new Map<Socket, { since: number; request: IncomingMessage | undefined }>();
  server.on('connection', (socket: Socket) => {
    waiting.set(socket, { since: Date.now(), request: undefined });
    socket.once('close', () => waiting.delete(socket));
  });
  server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    const state = waiting.get(request.socket as Socket);
    if (state === undefined) return;
    state.request = request;
    response.once('finish', () => {
      if (state.request !== request) return; // a pipelined request came in after it
      state.since = Date.now();
      state.request = undefined;
    });
  });
  return () => {
    const timer = setInterval(() => {
      const now = Date.now();
      for (const [socket, { since, request }] of waiting) {
        // Without a request its headers are still arriving; a request whose body has all
        // arrived is being answered, which takes what it takes.
        const limit = request === undefined ? limits.headersMs : request.complete ? Infinity : limits.requestMs;
        if (now - since > limit) expire(socket);
      }
    }, limits.everyMs).unref();
    server.once('close', () => clearInterval(timer));
  };
}

const STATUS: Partial<Record<string, number>> = {
  ERR_INVALID_ARGUMENT: 400,
  ERR_OVERLOADED: 429,
  ERR_CLOSED: 503,
  ERR_NO_HEALTHY_REPLICA: 503,
  ERR_UNPROCESSABLE_TEXT: 422, // the model cannot run that text: retrying will not help
  ERR_TIMEOUT: 504,
  ERR_ABORTED: 499, // the client went away; nobody reads this
};

function fail(reply: FastifyReply, status: number, code: string, message: string): FastifyReply {
  if (status === 429) void reply.header('retry-after', '1');
  return reply.code(status).send({ error: { code, message } });
}

type Body = Record<string, unknown>;

/** The texts of a /classify body, or a message saying what is wrong with it. */
function readBody(body: unknown, maxTexts: number): { single: boolean; texts: unknown[]; timeoutMs?: number } | string {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return 'Expected a JSON object with "text" (a string) or "texts" (an array)';
  }
  const b = body as Body;
  const unknown = Object.keys(b).filter((k) => !['text', 'texts', 'timeoutMs'].includes(k));
  if (unknown.length > 0)
    return `Unknown field ${JSON.stringify(unknown[0])}; expected "text" or "texts", and optionally "timeoutMs"`;
  if ('text' in b === 'texts' in b) return 'Expected exactly one of "text" (a string) or "texts" (an array)';
  if (b['timeoutMs'] !== undefined && typeof b['timeoutMs'] !== 'number') return 'Expected "timeoutMs" to be a number';
  const timeout = b['timeoutMs'] as number | undefined;
  if ('text' in b)
    return { single: true, texts: [b['text']], ...(timeout === undefined ? {} : { timeoutMs: timeout }) };
  const texts = b['texts'];
  if (!Array.isArray(texts)) return 'Expected "texts" to be an array';
  if (texts.length > maxTexts) return `Expected at most ${maxTexts} texts in one request, got ${texts.length}`;
  return { single: false, texts, ...(timeout === undefined ? {} : { timeoutMs: timeout }) };
}

export function createServer(classifier: Classifier<string, string>, options: ServerOptions = {}): FastifyInstance {
  const maxTexts = options.maxTexts ?? DEFAULTS.server.maxTexts;
  const requestTimeout = options.requestTimeoutMs ?? DEFAULTS.server.requestTimeoutMs;
  const bodyLimit = options.bodyLimit ?? DEFAULTS.server.bodyLimit;
  // Node enforces request and header deadlines only when it checks, every 30 s by default:
  // a slow client could hold a socket that long past its deadline. Check at a tenth of it.
  const checkEveryMs = Math.max(10, Math.min(1000, Math.floor(requestTimeout / 10)));
  const headersTimeout = Math.min(requestTimeout, 60_000);
  // Assigned below, once the metrics exist; the handlers run only after listen().
  let onClientError: (error: Error & { code?: string }, socket: Socket) => void = () => {};
  const app = Fastify({
    bodyLimit,
    requestTimeout,
    // Node answers a request without Host itself, with a bare 400 nobody counts: the onRequest
    // hook below does, in this API's shape.
    http: { connectionsCheckingInterval: checkEveryMs, headersTimeout, requireHostHeader: false },
    return503OnClosing: true,
    logger: false,
    // Malformed HTTP, a request past its deadline, oversized headers: answered here in this
    // API's shape (fastify's default writes its own), then the connection closes.
    clientErrorHandler: (error, socket) => onClientError(error, socket),
    // A URL the router cannot decode, and the like: fastify's own 400s, in this API's shape. No
    // route matched, so no hook runs: counted here.
    frameworkErrors: (error, _request, reply) => {
      metrics.errors.inc({ code: 'ERR_BAD_REQUEST' });
      metrics.requests.inc({ route: 'none', status: '400' });
      return fail(reply, 400, 'ERR_BAD_REQUEST', error.message);
    },
  });
  // JSON only: a text/plain body is a 415, not a string to misread.
  app.removeContentTypeParser('text/plain');
  const metrics = createMetrics(classifier);
  onClientError = (error, socket) => {
    // A reset connection has nobody to answer, and nothing went wrong on this side.
    if (error.code === 'ECONNRESET' || socket.destroyed) return;
    const { status, code, message } = clientError(error);
    metrics.errors.inc({ code });
    metrics.requests.inc({ route: 'none', status: String(status) });
    answered.add(socket);
    if (socket.writable) {
      const body = JSON.stringify({ error: { code, message } });
      socket.write(
        `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    }
    socket.destroy();
  };
  const timedOut = Object.assign(new Error('request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' });
  const keepDeadlines = deadlinesWhileClosing(
    app.server,
    { requestMs: requestTimeout, headersMs: headersTimeout, everyMs: checkEveryMs },
    (socket) => onClientError(timedOut, socket),
  );
  // An Expect header other than 100-continue: Node answers a bare 417 itself unless someone
  // listens, so it is passed on to the routes, and the onRequest hook below refuses it.
  const unmetExpectation = new WeakSet<IncomingMessage>();
  app.server.on('checkExpectation', (request: IncomingMessage, response: ServerResponse) => {
    unmetExpectation.add(request);
    app.server.emit('request', request, response);
  });
  app.addHook('onRequest', async (request, reply) => {
    if (unmetExpectation.has(request.raw)) {
      metrics.errors.inc({ code: 'ERR_EXPECTATION_FAILED' });
      const got = JSON.stringify(request.headers.expect);
      return fail(reply, 417, 'ERR_EXPECTATION_FAILED', `Expected no Expect header or "100-continue", got ${got}`);
    }
    // Node's own rule (requireHostHeader), which is off so that this answer has a body.
    const { httpVersionMajor, httpVersionMinor } = request.raw;
    if (httpVersionMajor === 1 && httpVersionMinor === 1 && !request.headers.host) {
      metrics.errors.inc({ code: 'ERR_BAD_HTTP' });
      return fail(reply, 400, 'ERR_BAD_HTTP', 'Expected a Host header, which HTTP/1.1 requires');
    }
    // RFC 9112 3.2: more than one Host is a 400 (Node keeps the first and says nothing).
    const hosts = request.raw.rawHeaders.filter(
      (_, i) => i % 2 === 0 && /^host$/i.test(request.raw.rawHeaders[i] ?? ''),
    );
    if (hosts.length > 1) {
      metrics.errors.inc({ code: 'ERR_BAD_HTTP' });
      return fail(reply, 400, 'ERR_BAD_HTTP', `Expected one Host header, got ${hosts.length}`);
    }
    // Bodies are read as they come: a compressed one would be misread as JSON, so it is refused.
    const encoding = request.headers['content-encoding'];
    if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
      metrics.errors.inc({ code: 'ERR_UNSUPPORTED_MEDIA_TYPE' });
      return fail(
        reply,
        415,
        'ERR_UNSUPPORTED_MEDIA_TYPE',
        `Expected an uncompressed body (no Content-Encoding, or "identity"), got Content-Encoding ${JSON.stringify(encoding)}`,
      );
    }
  });
  let shuttingDown = false;
  app.addHook('preClose', async () => {
    shuttingDown = true;
    keepDeadlines();
  });
  app.addHook('onClose', async () => {
    metrics.stop();
  });

  // Shutting down, close() waits for every connection to end: keep-alive sockets that fall idle
  // after their last answer would hold the process for the whole keep-alive timeout. So answers
  // sent while closing say `Connection: close`, and idle sockets are closed as they appear.
  app.addHook('onSend', async (_request, reply) => {
    if (shuttingDown) void reply.header('connection', 'close');
  });
  app.addHook('onResponse', async (request, reply) => {
    if (answered.has(request.raw.socket)) return; // counted as the client error it was
    const route = request.routeOptions.url ?? 'unknown';
    metrics.requests.inc({ route, status: String(reply.statusCode) });
    metrics.latency.observe({ route }, reply.elapsedTime / 1000);
    if (shuttingDown) setImmediate(() => app.server.closeIdleConnections());
  });

  // JSON bodies are parsed here, not by fastify: as UTF-8 by bertgate's one rule (text-decoding.ts:
  // strict, invalid bytes are an error, never replaced), and by JSON.parse, which makes "__proto__" an own
  // key like any other (no prototype is touched; nothing here merges bodies into objects), so
  // such a body is refused as an unknown field, by name. fastify's parser replaced bad bytes,
  // ignored the charset, and answered "not valid JSON" for a __proto__ key, hiding JSON.parse's
  // own message, which says where a broken body breaks.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    const fail = (status: number, message: string): void =>
      done(Object.assign(new Error(message), { statusCode: status }), undefined);
    const charset = /;\s*charset\s*=\s*"?([^";\s]+)"?/i.exec(request.headers['content-type'] ?? '')?.[1];
    if (charset !== undefined && !/^utf-?8$/i.test(charset)) {
      return fail(415, `Expected a UTF-8 body (charset=utf-8 or none), got charset=${charset}`);
    }
    const bytes = body as Buffer;
    if (bytes.length === 0) return fail(400, "Body cannot be empty when content-type is set to 'application/json'");
    let text: string;
    try {
      text = decodeUtf8(bytes);
    } catch {
      return fail(400, 'Body is not valid UTF-8');
    }
    try {
      done(null, JSON.parse(text));
    } catch (error) {
      fail(400, `Body is not valid JSON: ${(error as Error).message}`);
    }
  });
  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, request, reply) => {
    // The body stopped arriving because the connection was answered as a client error (408)
    // or went away: nobody reads this reply, and the request was counted (or never was one).
    if (answered.has(request.raw.socket) || request.raw.socket.destroyed) {
      if (!answered.has(request.raw.socket)) metrics.errors.inc({ code: 'ERR_CLIENT_GONE' });
      return reply.code(499).send();
    }
    const status = error.statusCode ?? 500;
    // fastify's own errors and the JSON parser's above: bad JSON or UTF-8, a charset, oversize
    // or non-JSON bodies, timeouts.
    let code = status === 400 ? 'ERR_BAD_REQUEST' : status === 415 ? 'ERR_UNSUPPORTED_MEDIA_TYPE' : 'ERR_INTERNAL';
    let message = status >= 500 ? 'internal error' : error.message;
    if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      code = 'ERR_UNSUPPORTED_MEDIA_TYPE';
      message = `Expected content-type application/json, got ${request.headers['content-type'] ?? 'none'}`;
    } else if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      code = 'ERR_BODY_TOO_LARGE';
      message = `Expected a body of at most ${bodyLimit} bytes (--body-limit)`;
    }
    metrics.errors.inc({ code });
    return fail(reply, status, code, message);
  });
  app.setNotFoundHandler((request, reply) =>
    fail(reply, 404, 'ERR_NOT_FOUND', `no route ${request.method} ${request.url}`),
  );

  /** The replicas that can run a batch, of all loaded: what both probes answer on. */
  const replicaHealth = (): { healthy: number; total: number } => {
    const replicas = classifier.stats().replicas;
    return { healthy: replicas.filter((r) => r.healthy).length, total: replicas.length };
  };

  app.get('/healthz', async (_request, reply) => {
    const replicas = replicaHealth();
    if (replicas.healthy === 0) return reply.code(503).send({ status: 'no healthy replica', replicas });
    return { status: 'ok', replicas };
  });

  app.get('/readyz', async (_request, reply) => {
    const replicas = replicaHealth();
    if (shuttingDown) return reply.code(503).send({ status: 'shutting down', replicas });
    if (replicas.healthy === 0) return reply.code(503).send({ status: 'no healthy replica', replicas });
    return { status: 'ready', queueDepth: classifier.stats().queueDepth, replicas };
  });

  app.get('/stats', async () => classifier.stats());

  app.get('/metrics', async (_request, reply) => {
    void reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  app.post('/classify', async (request: FastifyRequest, reply) => {
    const parsed = readBody(request.body, maxTexts);
    if (typeof parsed === 'string') {
      metrics.errors.inc({ code: 'ERR_INVALID_ARGUMENT' });
      return fail(reply, 400, 'ERR_INVALID_ARGUMENT', parsed);
    }
    // A client that goes away before its answer cancels its texts. (The response's 'close'
    // before it finished writing is the disconnect; the request's own 'close' only means its
    // body was read.)
    const controller = new AbortController();
    const onClose = (): void => {
      if (!reply.raw.writableFinished) controller.abort(new Error('the client disconnected'));
    };
    reply.raw.once('close', onClose);
    try {
      const call = {
        signal: controller.signal,
        ...(parsed.timeoutMs === undefined ? {} : { timeoutMs: parsed.timeoutMs }),
      };
      if (parsed.single) {
        const decision = await classifier.classify(parsed.texts[0] as never, call);
        metrics.texts.inc();
        return { decision };
      }
      const decisions = await classifier.classify(parsed.texts as never[], call);
      metrics.texts.inc(decisions.length);
      return { decisions };
    } catch (error) {
      if (!(error instanceof BertgateError)) throw error;
      metrics.errors.inc({ code: error.code });
      return fail(reply, STATUS[error.code] ?? 500, error.code, error.message);
    } finally {
      reply.raw.off('close', onClose);
    }
  });

  return app;
}
