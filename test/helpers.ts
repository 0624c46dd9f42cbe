// Shared by the tests: fixture locations, small comparisons, the one CLI runner, the one
// in-process server, the one raw HTTP client and the one typed-rejection check.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';

import { Classifier, type ClassifierOptions } from '../lib/index.js';
import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import type { BertgateError } from '../lib/errors.js';
import { createServer, type ServerOptions } from '../lib/server.js';

/** Built by scripts/setup.mjs (python -m bertgate_export.fixtures). */
export const FIXTURES = join(PACKAGE_ROOT, '.fixtures');
export const CLI = join(PACKAGE_ROOT, 'dist', 'lib', 'cli', 'main.js');

export function bundle(name: string): string {
  return join(FIXTURES, name);
}

export interface Expected {
  texts: string[];
  input_ids: number[][];
  logits: number[][];
  truncated: boolean[];
  max_length: number;
  pairs: Array<[string, string]>;
  pair_logits: number[][];
}

export async function expected(name: string): Promise<Expected> {
  return JSON.parse(await readFile(join(FIXTURES, `${name}.expected.json`), 'utf8')) as Expected;
}

/** A private copy of a fixture bundle, for tests that break it. */
export async function copyBundle(name: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const root = await mkdtemp(join(tmpdir(), 'bertgate-test-'));
  const dir = join(root, name);
  await cp(bundle(name), dir, { recursive: true });
  return { dir, cleanup: () => rm(root, { recursive: true, force: true }) };
}

const WORDS = 'install package server network game sound text graphics admin tool library data file editor'.split(' ');

/**
 * `n` texts of 3 to 12 words from the fixtures' word list, drawn by a seeded LCG: the same texts
 * for the same seed, in distribution for the fixture models and for calibration sets made of them.
 */
export function wordTexts(n: number, seed: number): string[] {
  let s = seed;
  const random = (): number => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  return Array.from({ length: n }, () =>
    Array.from({ length: 3 + Math.floor(random() * 10) }, () => WORDS[Math.floor(random() * WORDS.length)]).join(' '),
  );
}

/** The top label the bundle in `dir` gives each text, and the bundle's labels. */
export async function modelLabels(
  dir: string,
  texts: readonly string[],
): Promise<{ best: string[]; labels: readonly string[] }> {
  const clf = await Classifier.load(dir);
  try {
    const decisions = await clf.classify([...texts]);
    return { best: decisions.map((d) => d.top[0]?.label as string), labels: clf.labels };
  } finally {
    await clf.close();
  }
}

/** Labelled data as calibrate and evaluate read it: a `{text, label}` JSON line a text, label(i) its label. */
export function labelledLines(texts: readonly string[], label: (i: number) => string): string {
  return texts.map((text, i) => JSON.stringify({ text, label: label(i) })).join('\n') + '\n';
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs((a[i] as number) - (b[i] as number)));
  return worst;
}

/**
 * A 1 ms timer that counts its ticks and the longest gap between them: a call that blocked the
 * JS thread would let no tick through. Stop it to read the figures. Tests bound the worst gap
 * generously (MAX_EVENT_LOOP_GAP_MS): a liveness check, not a speed claim.
 */
export const MAX_EVENT_LOOP_GAP_MS = 50;
/**
 * Under full load the JS thread does real work (tokenizer callbacks, decisions for thousands of
 * calls, GC) on a machine of 2 cores shared with libtorch: worst gaps of up to 77 ms were seen
 * with the real, non-blocking addon. The bound says the loop never stalls for long; that the
 * addon does not block is proved where one inference is long (async.test.ts, 50 ms).
 */
export const MAX_EVENT_LOOP_GAP_UNDER_LOAD_MS = 250;

export function watchTimer(): () => { ticks: number; worstGapMs: number } {
  let ticks = 0;
  let worst = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
    ticks++;
  }, 1);
  return () => {
    clearInterval(timer);
    // The stretch since the last tick counts too: a call that blocked until just before the
    // stop would otherwise leave no gap behind.
    worst = Math.max(worst, performance.now() - last);
    return { ticks, worstGapMs: worst };
  };
}

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the bertgate command line as users do, in a child process; never throws, so a test
 * reads the exit code and both streams. `input` goes to its stdin (bytes as given).
 */
export function bertgate(
  args: readonly string[],
  options: {
    /** Added to this process's environment. */
    env?: NodeJS.ProcessEnv;
    /** The whole environment instead (for tests of the lookup, which must not inherit one). */
    exactEnv?: NodeJS.ProcessEnv;
    input?: string | Uint8Array;
    timeoutMs?: number;
  } = {},
): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      {
        env: options.exactEnv ?? { ...process.env, ...options.env },
        timeout: options.timeoutMs ?? 120_000,
        maxBuffer: 16 << 20,
      },
      (error, stdout, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    // A command that stops reading early (an error on an early line) closes its stdin: the
    // write then fails with EPIPE, which is the command's business, not the test's.
    child.stdin?.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EPIPE') throw error;
    });
    child.stdin?.end(options.input ?? '');
  });
}

/**
 * `bertgate calibrate --model model --data data` and then `flags` in their order: `--name value`
 * for each entry, a bare `--name` for `true`.
 */
export function calibrateCli(model: string, data: string, flags: Record<string, string | true> = {}): Promise<CliRun> {
  const rest = Object.entries(flags).flatMap(([name, value]) =>
    value === true ? [`--${name}`] : [`--${name}`, value],
  );
  return bertgate(['calibrate', '--model', model, '--data', data, ...rest]);
}

export type ErrorClass = new (...args: never[]) => BertgateError;

/**
 * The typed-rejection check every bad-input test makes: `promise` rejects with exactly an
 * instance of `type` whose message is `message` (or matches it). Returns the error for more.
 */
export async function rejectsWith(
  promise: Promise<unknown>,
  type: ErrorClass,
  message: string | RegExp,
): Promise<BertgateError> {
  let caught: unknown;
  await assert.rejects(promise, (e: unknown) => {
    caught = e;
    return true;
  });
  assert.ok(
    caught instanceof type,
    `expected ${type.name}, got ${(caught as Error)?.constructor?.name}: ${(caught as Error)?.message}`,
  );
  if (typeof message === 'string') assert.equal(caught.message, message);
  else assert.match(caught.message, message);
  return caught;
}

/** For tests that need nothing of the error beyond the checks. */
export async function expectRejects(
  promise: Promise<unknown>,
  type: ErrorClass,
  message: string | RegExp,
): Promise<void> {
  await rejectsWith(promise, type, message);
}

/**
 * Writes `data`, the bytes of a request as given (what fetch would not send: no Host, any
 * Expect, malformed HTTP), on a connection of its own to 127.0.0.1:`port`, and reads until the
 * server closes it. The client ends its side after writing unless `keepOpen` (a client that
 * stalls, or a request that asks "Connection: close" and waits for its answer).
 */
export function rawHttp(
  port: number,
  data: string,
  options: { keepOpen?: boolean } = {},
): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const [head = '', body = ''] = text.split('\r\n\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
      try {
        resolve({ status, body: JSON.parse(body) });
      } catch {
        reject(new Error(`not JSON: ${JSON.stringify(text)}`));
      }
    });
    socket.write(data);
    if (options.keepOpen !== true) socket.end();
  });
}

/** A fixture bundle served in this process on a free local port; close() stops both. */
export async function serveFixture(
  name: string,
  loadOptions: ClassifierOptions,
  serverOptions: ServerOptions,
): Promise<{ url: string; port: number; close: () => Promise<void> }> {
  const clf = await Classifier.load<string, string>(bundle(name), loadOptions);
  const app = createServer(clf, serverOptions);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return {
    url,
    port: Number(new URL(url).port),
    close: async () => {
      await app.close();
      await clf.close();
    },
  };
}
