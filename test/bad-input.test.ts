// The bad-input matrix beyond errors.test.ts (bundles and texts) and load-options.test.ts:
// call options and odd values through the API, the command line, and HTTP. Every case names
// the exact error type (class, code or status) and message; after each group the process
// still classifies.

import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';

import { AbortedError, BundleError, Classifier, InvalidArgumentError, OverloadedError } from '../lib/index.js';
import { CLI, type ErrorClass, bertgate, bundle, rawHttp, rejectsWith, serveFixture } from './helpers.js';

const TEXT_KINDS = 'a string, a Uint8Array of UTF-8, or { text, pair }';

describe('bad input: the API', () => {
  let clf: Classifier;
  before(async () => {
    clf = await Classifier.load(bundle('labels2'), { maxQueue: 100, maxTextLength: 5000 });
  });
  after(() => clf.close());

  const cases: Array<[string, () => Promise<unknown>, ErrorClass, string]> = [
    [
      'timeoutMs negative',
      () => clf.classify('a', { timeoutMs: -1 }),
      InvalidArgumentError,
      'Expected the "timeoutMs" option to be a finite number greater than 0, got -1',
    ],
    [
      'timeoutMs as text',
      () => clf.classify('a', { timeoutMs: '5' as never }),
      InvalidArgumentError,
      'Expected the "timeoutMs" option to be a finite number greater than 0, got "5"',
    ],
    [
      'timeoutMs NaN',
      () => clf.classify('a', { timeoutMs: NaN }),
      InvalidArgumentError,
      'Expected the "timeoutMs" option to be a finite number greater than 0, got NaN',
    ],
    [
      'timeoutMs beyond what a timer holds',
      () => clf.classify('a', { timeoutMs: 2 ** 31 }),
      InvalidArgumentError,
      'Expected the "timeoutMs" option to be a finite number greater than 0 and at most 2147483647 (about 24.8 days), got 2147483648',
    ],
    [
      'a signal that is not an AbortSignal',
      () => clf.classify('a', { signal: {} as never }),
      InvalidArgumentError,
      'Expected the "signal" option to be an AbortSignal, got an instance of Object',
    ],
    [
      'a misspelt call option',
      () => clf.classify('a', { timeout: 5 } as never),
      InvalidArgumentError,
      'Unknown option "timeout" in the call options; known options: signal, timeoutMs',
    ],
    [
      'call options that are not an object',
      () => clf.logits('a', 'fast' as never),
      InvalidArgumentError,
      'Expected the call options to be an object, got "fast"',
    ],
    [
      'a signal already aborted',
      () => clf.classify('a', { signal: AbortSignal.abort() }),
      AbortedError,
      'the request was aborted',
    ],
    [
      'a pair that is a number',
      () => clf.classify({ text: 'a', pair: 5 as never }),
      InvalidArgumentError,
      'Expected text.pair to be a string or a Uint8Array of UTF-8, got 5',
    ],
    [
      'a pair without its text',
      () => clf.classify({ pair: 'b' } as never),
      InvalidArgumentError,
      `Expected text to be ${TEXT_KINDS}, got an instance of Object`,
    ],
    [
      'a hole in a sparse array',
      // eslint-disable-next-line no-sparse-arrays
      () => clf.classify([, 'a'] as never),
      InvalidArgumentError,
      `Expected texts[0] to be ${TEXT_KINDS}, got undefined`,
    ],
    [
      'an unpaired surrogate',
      () => clf.classify('ok \ud800 then'),
      InvalidArgumentError,
      'Expected text to be well-formed Unicode, got a string with an unpaired surrogate',
    ],
    [
      'a boxed String',
      () => clf.classify(new String('a') as never),
      InvalidArgumentError,
      `Expected text to be ${TEXT_KINDS}, got an instance of String`,
    ],
    [
      'a symbol',
      () => clf.classify(Symbol('a') as never),
      InvalidArgumentError,
      `Expected text to be ${TEXT_KINDS}, got symbol`,
    ],
    [
      'a huge text',
      () => clf.classify('x'.repeat(5001)),
      InvalidArgumentError,
      'Expected text to be at most 5000 characters (the "maxTextLength" option), got 5001',
    ],
    [
      'more texts at once than maxQueue',
      () => clf.classify(Array.from({ length: 101 }, () => 'a')),
      OverloadedError,
      'overloaded: 0 texts are waiting and 101 more would exceed maxQueue (100)',
    ],
    [
      'a bundle path that is empty',
      () => Classifier.load(''),
      InvalidArgumentError,
      'Expected bundleDir to be a directory path (or undefined: the default model), got ""',
    ],
    ['a bundle path that is a file', () => Classifier.load(CLI), BundleError, `the bundle at ${CLI} has no model.pt`],
    [
      'labels that disagree with config.json',
      () => Classifier.load(bundle('labels2'), { labels: ['a'] }),
      BundleError,
      'The "labels" option lists ["a"], but config.json "id2label" names ["negative","positive"]',
    ],
    [
      'maxBatchTokens below the model length',
      () => Classifier.load(bundle('labels2'), { maxBatchTokens: 1 }),
      InvalidArgumentError,
      'Expected the "maxBatchTokens" option to be at least the model\'s maximum length (64), so that any one text fits a batch, got 1',
    ],
    [
      'cudaMemoryFraction on the CPU',
      () => Classifier.load(bundle('labels2'), { cudaMemoryFraction: 0.5 }),
      InvalidArgumentError,
      'The "cudaMemoryFraction" option applies to CUDA devices; the device is "cpu"',
    ],
    [
      'cudaMemoryFraction above 1',
      () => Classifier.load(bundle('labels2'), { device: 'cuda', cudaMemoryFraction: 1.5 }),
      InvalidArgumentError,
      'Expected the "cudaMemoryFraction" option to be a number in (0, 1], got 1.5',
    ],
    [
      'a truncation strategy that does not exist',
      () => Classifier.load(bundle('labels2'), { truncation: 'middle' as never }),
      InvalidArgumentError,
      'Expected the "truncation" option to be one of "longest_first", "only_first", "only_second", got "middle"',
    ],
  ];
  for (const [name, call, type, message] of cases)
    it(name, async () => void (await rejectsWith(call(), type, message)));

  // Reading the caller's value runs the caller's code: its failure is the input's fault,
  // named, with the original error kept as the cause (not an InferenceError, not a raw TypeError).
  const boom = new Error('boom');
  const revoked = (): object => {
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    return proxy;
  };
  const readingCases: Array<[string, () => Promise<unknown>, string | RegExp, (cause: unknown) => boolean]> = [
    [
      'a texts element whose getter throws',
      () => {
        const texts = ['fine'];
        Object.defineProperty(texts, 1, {
          get: () => {
            throw boom;
          },
          enumerable: true,
        });
        return clf.classify(texts);
      },
      'Reading texts[1] failed (Error: boom)',
      (cause) => cause === boom,
    ],
    [
      'a texts array behind a Proxy whose get trap throws',
      () =>
        clf.classify(
          new Proxy(['a', 'b'], {
            get(target, key) {
              if (key === '0') throw boom;
              return Reflect.get(target, key);
            },
          }),
        ),
      'Reading texts[0] failed (Error: boom)',
      (cause) => cause === boom,
    ],
    [
      'a pair whose text getter throws',
      () =>
        clf.classify({
          get text(): string {
            throw boom;
          },
          pair: 'b',
        }),
      'Reading text failed (Error: boom)',
      (cause) => cause === boom,
    ],
    [
      'a revoked Proxy as the text',
      () => clf.classify(revoked() as never),
      /^Reading text failed \(TypeError: .*revoked/,
      (cause) => cause instanceof TypeError,
    ],
    [
      'a revoked Proxy as the texts',
      () => clf.logits([revoked()] as never),
      /^Reading texts\[0\] failed \(TypeError: .*revoked/,
      (cause) => cause instanceof TypeError,
    ],
  ];
  for (const [name, call, message, isCause] of readingCases) {
    it(name, async () => {
      const error = await rejectsWith(call(), InvalidArgumentError, message);
      assert.ok(isCause(error.cause), `cause: ${String(error.cause)}`);
      assert.equal(error.code, 'ERR_INVALID_ARGUMENT');
    });
  }

  it('accepts the texts that are odd but valid: empty, NUL, empty bytes', async () => {
    const decisions = await clf.classify(['', 'a\u0000b', new Uint8Array(0)]);
    assert.equal(decisions.length, 3);
    for (const d of decisions) assert.ok(d.label === 'negative' || d.label === 'positive' || d.label === 'Other');
  });
});

describe('bad input: the command line', () => {
  const labels2 = bundle('labels2');
  const cases: Array<[string[], string]> = [
    [
      ['classify', '--bogus', 'x'],
      `ERR_INVALID_ARGUMENT: Unknown option '--bogus'. To specify a positional argument starting with a '-', place it at the end of the command after '--', as in '-- "--bogus" (see "bertgate help")`,
    ],
    [['classify', '--model'], `ERR_INVALID_ARGUMENT: Option '--model <value>' argument missing (see "bertgate help")`],
    [
      ['doctor', 'extra'],
      `ERR_INVALID_ARGUMENT: Unexpected argument 'extra'. This command does not take positional arguments (see "bertgate help")`,
    ],
    [
      ['classify', '--threshold', 'abc', 'x'],
      'ERR_INVALID_ARGUMENT: Expected --threshold to be a decimal number, got "abc"',
    ],
    [
      ['classify', '--model', labels2, '--threshold', '2', 'x'],
      'ERR_INVALID_ARGUMENT: Expected the "threshold" option to be a number in [0, 1], got 2',
    ],
    [['classify', '--model', '/nonexistent', 'x'], 'ERR_BUNDLE: the bundle at /nonexistent has no model.pt'],
    // Counts take digits only, numbers decimal notation only: Number() would take each of these.
    [
      ['classify', '--threads', '0x2', 'x'],
      'ERR_INVALID_ARGUMENT: Expected --threads to be a whole number (digits only), got "0x2"',
    ],
    [
      ['classify', '--threads', '1e0', 'x'],
      'ERR_INVALID_ARGUMENT: Expected --threads to be a whole number (digits only), got "1e0"',
    ],
    [
      ['classify', '--batch-size', ' 1', 'x'],
      'ERR_INVALID_ARGUMENT: Expected --batch-size to be a whole number (digits only), got " 1"',
    ],
    [
      ['classify', '--threshold', '0x1', 'x'],
      'ERR_INVALID_ARGUMENT: Expected --threshold to be a decimal number, got "0x1"',
    ],
    [
      ['classify', '--model', labels2, '--device', 'cpu,', 'x'],
      'ERR_INVALID_ARGUMENT: Expected --device to be a device or a comma list of CUDA devices (cuda:0,cuda:1), got "cpu,": item 2 is empty',
    ],
    [
      ['classify', '--model', labels2, '--device', 'gpu', 'x'],
      'ERR_INVALID_ARGUMENT: Expected the "device" option to be "cpu", "cuda", "cuda:N", "cuda:*" or a non-empty list of CUDA devices, got "gpu"',
    ],
    // calibrate and evaluate take the same model flags as classify.
    [
      ['calibrate', '--model', labels2, '--data', CLI, '--device', 'gpu'],
      'ERR_INVALID_ARGUMENT: Expected the "device" option to be "cpu", "cuda", "cuda:N", "cuda:*" or a non-empty list of CUDA devices, got "gpu"',
    ],
    [
      ['evaluate', '--model', labels2, '--data', CLI, '--dtype', 'float16'],
      'ERR_INVALID_ARGUMENT: The "dtype" option "float16" needs a CUDA device; on "cpu" use "float32"',
    ],
    [
      ['calibrate', '--model', labels2, '--data', CLI, '--temperature', '2'],
      `ERR_INVALID_ARGUMENT: Unknown option '--temperature' (see "bertgate help")`,
    ],
    [
      ['classify', '--model', labels2, '--top-k', '0', 'x'],
      'ERR_INVALID_ARGUMENT: Expected the "topK" option to be an integer in [1, 64], got 0',
    ],
    [
      ['serve', '--port', '70000'],
      'ERR_INVALID_ARGUMENT: Expected --port to be a whole number in [0, 65535], got "70000"',
    ],
    [
      ['serve', '--max-texts', '0'],
      'ERR_INVALID_ARGUMENT: Expected --max-texts to be a whole number in [1, 1000000], got "0"',
    ],
    [
      ['serve', '--body-limit', '1.5'],
      'ERR_INVALID_ARGUMENT: Expected --body-limit to be a whole number in [1, 2147483647], got "1.5"',
    ],
    [
      ['calibrate', '--model', labels2],
      'ERR_INVALID_ARGUMENT: Expected --data FILE.jsonl (labelled {"text", "label"} lines)',
    ],
    [
      ['calibrate', '--model', labels2, '--data', '/nonexistent.jsonl'],
      "ERR_DATA: /nonexistent.jsonl could not be read: ENOENT: no such file or directory, open '/nonexistent.jsonl'",
    ],
    [
      ['calibrate', '--model', labels2, '--data', CLI, '--coverage', '1.5'],
      'ERR_INVALID_ARGUMENT: Expected --coverage to be a number in (0, 1], got "1.5"',
    ],
    [
      ['calibrate', '--model', labels2, '--data', CLI, '--target-accuracy', '0.9', '--delta', '2'],
      'ERR_INVALID_ARGUMENT: Expected --delta to be a number in (0, 1), got "2"',
    ],
  ];
  for (const [args, message] of cases) {
    it(`bertgate ${args.join(' ')}`, async () => {
      const r = await bertgate(args);
      assert.deepEqual(r, { code: 1, stdout: '', stderr: `bertgate: ${message}\n` });
    });
  }

  it('an unknown command: usage, exit 2', async () => {
    const r = await bertgate(['frobnicate']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^bertgate: unknown command "frobnicate"\n\nUsage: bertgate <command> \[options\]\n/);
  });
});

describe('bad input: HTTP', () => {
  let server: Awaited<ReturnType<typeof serveFixture>>;
  let url: string;
  before(async () => {
    server = await serveFixture('labels2', { maxTextLength: 1000 }, { bodyLimit: 4096, maxTexts: 8 });
    url = server.url;
  });
  after(() => server.close());

  const json = (body: unknown): RequestInit => ({
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const cases: Array<[string, string, RequestInit, number, string, string]> = [
    [
      '"texts" not an array',
      '/classify',
      json({ texts: 'a' }),
      400,
      'ERR_INVALID_ARGUMENT',
      'Expected "texts" to be an array',
    ],
    [
      'too many texts',
      '/classify',
      json({ texts: Array(9).fill('a') }),
      400,
      'ERR_INVALID_ARGUMENT',
      'Expected at most 8 texts in one request, got 9',
    ],
    [
      '"timeoutMs" as text',
      '/classify',
      json({ text: 'a', timeoutMs: '5' }),
      400,
      'ERR_INVALID_ARGUMENT',
      'Expected "timeoutMs" to be a number',
    ],
    [
      '"timeoutMs" negative',
      '/classify',
      json({ text: 'a', timeoutMs: -5 }),
      400,
      'ERR_INVALID_ARGUMENT',
      'Expected the "timeoutMs" option to be a finite number greater than 0, got -5',
    ],
    [
      'a bad text among good ones',
      '/classify',
      json({ texts: ['a', null] }),
      400,
      'ERR_INVALID_ARGUMENT',
      `Expected texts[1] to be ${TEXT_KINDS}, got null`,
    ],
    [
      'a text over maxTextLength',
      '/classify',
      json({ text: 'y'.repeat(1001) }),
      400,
      'ERR_INVALID_ARGUMENT',
      'Expected text to be at most 1000 characters (the "maxTextLength" option), got 1001',
    ],
    [
      'an unpaired surrogate escaped in JSON',
      '/classify',
      json('{"text": "a\\ud800b"}'),
      400,
      'ERR_INVALID_ARGUMENT',
      'Expected text to be well-formed Unicode, got a string with an unpaired surrogate',
    ],
    [
      'a JSON null body',
      '/classify',
      json('null'),
      400,
      'ERR_INVALID_ARGUMENT',
      'Expected a JSON object with "text" (a string) or "texts" (an array)',
    ],
    [
      'a pair with a number',
      '/classify',
      json({ text: { text: 'a', pair: 1 } }),
      400,
      'ERR_INVALID_ARGUMENT',
      'Expected text.pair to be a string or a Uint8Array of UTF-8, got 1',
    ],
    [
      '"__proto__" as a field (an own key to JSON.parse, refused by name; no prototype touched)',
      '/classify',
      json('{"text": "a", "__proto__": {"x": 1}}'),
      400,
      'ERR_INVALID_ARGUMENT',
      'Unknown field "__proto__"; expected "text" or "texts", and optionally "timeoutMs"',
    ],
    [
      'invalid UTF-8 in the body (decoded strictly, never replaced)',
      '/classify',
      {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: Buffer.from('{"text": "caf\xe9"}', 'latin1'),
      },
      400,
      'ERR_BAD_REQUEST',
      'Body is not valid UTF-8',
    ],
    [
      'a charset other than UTF-8',
      '/classify',
      {
        method: 'POST',
        headers: { 'content-type': 'application/json; charset=iso-8859-1' },
        body: Buffer.from('{"text": "caf\xe9"}', 'latin1'),
      },
      415,
      'ERR_UNSUPPORTED_MEDIA_TYPE',
      'Expected a UTF-8 body (charset=utf-8 or none), got charset=iso-8859-1',
    ],
    [
      'an empty JSON body',
      '/classify',
      json(''),
      400,
      'ERR_BAD_REQUEST',
      "Body cannot be empty when content-type is set to 'application/json'",
    ],
    [
      'no content-type',
      '/classify',
      { method: 'POST', body: 'hello' },
      415,
      'ERR_UNSUPPORTED_MEDIA_TYPE',
      'Expected content-type application/json, got text/plain;charset=UTF-8',
    ],
    [
      'a body over the limit',
      '/classify',
      json({ text: 'z'.repeat(5000) }),
      413,
      'ERR_BODY_TOO_LARGE',
      'Expected a body of at most 4096 bytes (--body-limit)',
    ],
    ['GET on /classify', '/classify', { method: 'GET' }, 404, 'ERR_NOT_FOUND', 'no route GET /classify'],
  ];
  for (const [name, path, init, status, code, message] of cases) {
    it(name, async () => {
      const r = await fetch(`${url}${path}`, init);
      assert.deepEqual({ status: r.status, body: await r.json() }, { status, body: { error: { code, message } } });
    });
  }

  it('invalid UTF-8 bytes in a raw body are a 400, as in the library and the CLI, and the server goes on', async () => {
    const body = Buffer.concat([Buffer.from('{"text": "a'), Buffer.from([0xff, 0xfe]), Buffer.from('b"}')]);
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(
        `${url}/classify`,
        { method: 'POST', headers: { 'content-type': 'application/json' } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    assert.equal(status, 400);
    const r = await fetch(`${url}/classify`, json({ text: 'still serving' }));
    assert.equal(r.status, 200);
  });
});

describe('bad input: HTTP below the routes (slow clients, malformed requests)', () => {
  let server: Awaited<ReturnType<typeof serveFixture>>;
  let port: number;
  before(async () => {
    server = await serveFixture('labels2', {}, { requestTimeoutMs: 300 });
    port = server.port;
  });
  after(() => server.close());

  const metric = async (line: RegExp): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    return Number(line.exec(text)?.[1] ?? 0);
  };

  it('a client too slow with its body gets 408 in the API shape, counted once as ERR_REQUEST_TIMEOUT', async () => {
    const r = await rawHttp(
      port,
      'POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"text":',
      { keepOpen: true },
    );
    assert.deepEqual(r, {
      status: 408,
      body: {
        error: { code: 'ERR_REQUEST_TIMEOUT', message: 'the request did not arrive in time (--request-timeout-ms)' },
      },
    });
    assert.equal(await metric(/bertgate_request_errors_total\{code="ERR_REQUEST_TIMEOUT"\} (\d+)/), 1);
    assert.equal(await metric(/bertgate_request_errors_total\{code="ERR_BAD_REQUEST"\} (\d+)/), 0);
    assert.equal(await metric(/bertgate_requests_total\{route="none",status="408"\} (\d+)/), 1);
  });

  it('malformed HTTP gets 400 ERR_BAD_HTTP in the API shape, and is counted', async () => {
    const r = await rawHttp(port, 'NOT HTTP AT ALL\r\n\r\n');
    assert.equal(r.status, 400);
    assert.deepEqual(Object.keys((r.body as { error: object }).error), ['code', 'message']);
    assert.equal((r.body as { error: { code: string } }).error.code, 'ERR_BAD_HTTP');
    assert.equal(await metric(/bertgate_request_errors_total\{code="ERR_BAD_HTTP"\} (\d+)/), 1);
    assert.equal(await metric(/bertgate_requests_total\{route="none",status="400"\} (\d+)/), 1);
  });

  it('headers over the limit get 431 ERR_HEADERS_TOO_LARGE', async () => {
    const r = await rawHttp(port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    assert.deepEqual(r, {
      status: 431,
      body: { error: { code: 'ERR_HEADERS_TOO_LARGE', message: "the request's headers are over the size limit" } },
    });
  });

  it('still serves afterwards', async () => {
    const r = await fetch(`http://127.0.0.1:${port}/classify`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ text: 'fine' }),
    });
    assert.equal(r.status, 200);
  });
});
