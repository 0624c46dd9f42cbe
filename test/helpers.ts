// Shared by the tests: fixture locations and small comparisons.

import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { PACKAGE_ROOT } from '../lib/binding.js';

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

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs((a[i] as number) - (b[i] as number)));
  return worst;
}

/**
 * A 1 ms timer that counts its ticks and the longest gap between them: a call that blocked the
 * JS thread would let no tick through. Stop it to read the figures.
 */
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
    return { ticks, worstGapMs: worst };
  };
}
