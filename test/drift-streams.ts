// The streams the drift tests (test/drift.test.ts) and bench/drift.ts replay into the monitor:
// the default model's served scores, computed once, drawn in reshuffled passes (in
// distribution) or re-weighted to another acceptance rate (a mild drift).

import { join } from 'node:path';

import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { DEFAULT_MODEL } from '../lib/bundle.js';
import { readLabelled } from '../lib/calibration/data.js';
import { DriftMonitor, type DriftReference, type DriftState } from '../lib/drift.js';
import { Classifier } from '../lib/index.js';
import { mulberry32 as rng } from '../lib/seeded-random.js';

export interface Served {
  score: number;
  accepted: boolean;
  label: string;
}

/** The default model's served scores of each data file (relative to the package root), drift alarm off. */
export async function servedScores(files: string[]): Promise<Served[][]> {
  const clf = await Classifier.load(DEFAULT_MODEL, { drift: false });
  try {
    const out: Served[][] = [];
    for (const file of files) {
      const examples = (await readLabelled(join(PACKAGE_ROOT, file))).examples;
      const served: Served[] = [];
      for (let start = 0; start < examples.length; start += 512) {
        const part = examples.slice(start, start + 512);
        const decisions = await clf.classify(part.map((e) => e.text));
        decisions.forEach((d, i) =>
          served.push({ score: d.probability, accepted: d.accepted, label: part[i]?.label ?? '' }),
        );
      }
      out.push(served);
    }
    return out;
  } finally {
    await clf.close();
  }
}

export function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/** Endless in-distribution texts: the split in one random order, then another, and so on. */
export function passes(split: readonly Served[], random: () => number): () => Served {
  let order = shuffled(split, random);
  let i = 0;
  return () => {
    if (i === order.length) {
      order = shuffled(split, random);
      i = 0;
    }
    return order[i++] as Served;
  };
}

/**
 * Texts drawn from the split re-weighted so that a share `acceptance` of them is accepted: the
 * accepted texts up-weighted, the others down (the least a shift of the acceptance rate can
 * change, so the hardest to detect).
 */
export function reweighted(split: readonly Served[], acceptance: number, random: () => number): () => Served {
  const yes = split.filter((t) => t.accepted);
  const no = split.filter((t) => !t.accepted);
  return () => {
    const from = random() < acceptance ? yes : no;
    return from[Math.floor(random() * from.length)] as Served;
  };
}

/**
 * A monitor's state after `texts` in-distribution texts without an alarm: `count` of them, from
 * seeds `seed`, `seed + 1`, ...; how many streams false-alarmed on the way.
 */
export function uptimes(
  reference: DriftReference,
  alpha: number,
  split: readonly Served[],
  texts: number,
  count: number,
  seed: number,
): { states: Array<DriftState | null>; falseAlarms: number } {
  const states: Array<DriftState | null> = [];
  let falseAlarms = 0;
  for (let s = seed; states.length < count; s++) {
    if (texts === 0) {
      states.push(null);
      continue;
    }
    const random = rng(s);
    const monitor = new DriftMonitor(reference, alpha, random);
    const next = passes(split, random);
    let alarmed = false;
    for (let i = 0; i < texts && !alarmed; i++) {
      const t = next();
      alarmed = monitor.observe(t.score, t.accepted);
    }
    if (alarmed) falseAlarms++;
    else states.push(monitor.state());
  }
  return { states, falseAlarms };
}

/** Texts from `next` into a monitor continued from `state` (fresh if null): the 1-based text that set the alarm off, or 0 within `limit`. */
export function delay(
  reference: DriftReference,
  alpha: number,
  state: DriftState | null,
  next: () => Served,
  random: () => number,
  limit: number,
): number {
  const monitor = new DriftMonitor(reference, alpha, random);
  if (state) monitor.restore(state);
  for (let i = 1; i <= limit; i++) {
    const t = next();
    if (monitor.observe(t.score, t.accepted)) return i;
  }
  return 0;
}

/** The q-quantile of sorted values (nearest rank). */
export function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}
