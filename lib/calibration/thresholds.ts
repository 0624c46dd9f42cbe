/**
 * Choosing the threshold below which a prediction becomes "Other".
 *
 * - byCoverage: accept the most confident share `coverage` of the calibration set.
 * - withGuarantee: the lowest threshold whose selective risk (error rate among accepted
 *   predictions) is at most `risk` with probability at least 1 - delta: SGR (Geifman &
 *   El-Yaniv 2017). A binary search over how many of the most confident examples to accept
 *   tests at most k = ceil(log2 m) thresholds, each with the one-sided Clopper–Pearson bound at
 *   level delta / k; by the union bound every tested bound holds at once with probability at
 *   least 1 - delta, so the threshold returned (one that passed) carries the guarantee for new
 *   data exchangeable with the calibration set. (A fixed-sequence scan from the most confident
 *   down was tried first: its first tests see few examples, and one failure ends it with
 *   nothing, as happened whenever the risk is flat across confidence.)
 * - perLabel: a threshold per predicted label, each certified at delta / labels (Bonferroni), by
 *   fixed-sequence testing with several starts (Learn then Test: Angelopoulos et al. 2021): from
 *   each of STARTS evenly spaced accepted counts, the label's thresholds are tested from strict
 *   to loose at level delta / labels / STARTS, stopping at the first failure; the loosest
 *   certified threshold over all scans is kept. A single scan from the strictest threshold
 *   fails on the first few texts (too few for any bound) and a binary search stops moving
 *   towards more texts once a half fails (a label with 162 accepted failing at 0.074 while 322
 *   would pass at 0.0445); scans from several starts test every threshold past each start, so
 *   none that passes there is skipped. A label with no certified threshold is never accepted
 *   (its texts go to "Other"): with probability at least 1 - delta every accepted label's
 *   selective risk is within the target, and so is the risk of all accepted texts together.
 */

import { clopperPearsonUpper } from './beta.js';

export interface Scored {
  /** Higher = more confident (the max probability by default). */
  score: number;
  correct: boolean;
}

export interface Guarantee {
  threshold: number;
  /** Share of the calibration set accepted at the threshold. */
  coverage: number;
  accepted: number;
  errors: number;
  /** The Clopper–Pearson upper bound on the selective risk at the threshold. */
  bound: number;
}

export class InsufficientDataError extends Error {}

/** The lowest threshold accepting at least `coverage` of the examples. */
export function byCoverage(rows: Scored[], coverage: number): { threshold: number; coverage: number } {
  const sorted = rows.map((r) => r.score).sort((a, b) => b - a);
  const k = Math.max(1, Math.ceil(coverage * sorted.length));
  const threshold = sorted[k - 1] as number;
  return { threshold, coverage: sorted.filter((s) => s >= threshold).length / sorted.length };
}

export function withGuarantee(rows: Scored[], risk: number, delta: number): Guarantee {
  const sorted = [...rows].sort((a, b) => b.score - a.score);
  const m = sorted.length;
  // errorsBefore[q]: errors among the q most confident; a threshold takes every tie of its score.
  const errorsBefore = new Int32Array(m + 1);
  sorted.forEach((r, i) => (errorsBefore[i + 1] = (errorsBefore[i] as number) + (r.correct ? 0 : 1)));
  const acceptedAt = (threshold: number): number => {
    let lo = 0;
    let hi = m;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((sorted[mid] as Scored).score >= threshold) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  const tests = Math.max(1, Math.ceil(Math.log2(m)));
  const level = delta / tests;
  let best: Guarantee | null = null;
  let lo = 1;
  let hi = m;
  for (let i = 0; i < tests && lo <= hi; i++) {
    const q = Math.ceil((lo + hi) / 2);
    const threshold = (sorted[q - 1] as Scored).score;
    const accepted = acceptedAt(threshold);
    const errors = errorsBefore[accepted] as number;
    const bound = clopperPearsonUpper(errors, accepted, level);
    if (bound <= risk) {
      best = { threshold, coverage: accepted / m, accepted, errors, bound };
      lo = q + 1; // certified: try accepting more
    } else {
      hi = q - 1;
    }
  }
  if (!best) {
    throw new InsufficientDataError(
      `no threshold has selective risk <= ${risk} at confidence ${1 - delta}: ` +
        noThresholdReason(rows, risk, level, `each of the ${tests} tests runs at level ${level.toPrecision(3)}`),
    );
  }
  return best;
}

/**
 * Why no threshold could be certified at `level`: too few examples, or a model wrong too often
 * at every threshold that accepts enough of them to certify anything (then more data of the
 * same kind cannot help, and saying "too few" would send the user the wrong way).
 */
export function noThresholdReason(rows: readonly Scored[], risk: number, level: number, tests: string): string {
  const needed = minimumExamples(risk, level);
  const sorted = [...rows].sort((a, b) => b.score - a.score);
  let errors = 0;
  let lowest = Number.POSITIVE_INFINITY;
  sorted.forEach((r, i) => {
    errors += r.correct ? 0 : 1;
    const accepted = i + 1;
    const boundary = accepted === sorted.length || (sorted[accepted] as Scored).score !== r.score;
    if (boundary && accepted >= needed) lowest = Math.min(lowest, errors / accepted);
  });
  if (lowest > risk && Number.isFinite(lowest)) {
    return (
      `the model is wrong too often: at every threshold accepting at least ${needed} examples (the fewest that ` +
      `could certify one), a share of at least ${lowest.toFixed(4)} is wrong, above the risk ${risk}; more ` +
      'data like this will not help: aim lower (--target-accuracy), or improve the model'
    );
  }
  return `${rows.length} examples are too few (${tests}; with no errors at all, ${needed} accepted examples would be needed)`;
}

/** The fewest accepted examples, all correct, for which the bound reaches `risk`. */
export function minimumExamples(risk: number, delta: number): number {
  // With zero errors the Clopper–Pearson bound is 1 - delta^(1/n).
  return Math.ceil(Math.log(delta) / Math.log(1 - risk));
}

/** Starts of the fixed-sequence scans; each runs at delta / STARTS. */
export const STARTS = 8;

/**
 * Fixed-sequence testing from STARTS starts for one set of rows at level `delta` in all; null
 * when no scan certifies a threshold. `total`: what coverage is a share of.
 */
export function fixedSequences(rows: Scored[], risk: number, delta: number, total = rows.length): Guarantee | null {
  const sorted = [...rows].sort((a, b) => b.score - a.score);
  const m = sorted.length;
  if (m === 0) return null;
  const level = delta / STARTS;
  // errorsBefore[q]: errors among the q most confident. A threshold takes every tie of its
  // score, so the counts tested are those where the next score is lower.
  const errorsBefore = new Int32Array(m + 1);
  sorted.forEach((r, i) => (errorsBefore[i + 1] = (errorsBefore[i] as number) + (r.correct ? 0 : 1)));
  const boundary = (q: number): boolean => q === m || (sorted[q] as Scored).score !== (sorted[q - 1] as Scored).score;
  let best: Guarantee | null = null;
  const starts = [...new Set(Array.from({ length: STARTS }, (_, j) => Math.max(1, Math.ceil(((j + 1) * m) / STARTS))))];
  // A scan that passed through a later start made the same tests from there on: it is not redone.
  let stoppedAt = 0;
  for (const start of starts) {
    if (start < stoppedAt) continue;
    for (let accepted = start; accepted <= m + 1; accepted++) {
      stoppedAt = accepted;
      if (accepted > m) break;
      if (!boundary(accepted)) continue;
      const errors = errorsBefore[accepted] as number;
      const bound = clopperPearsonUpper(errors, accepted, level);
      if (bound > risk) break;
      if (!best || accepted > best.accepted) {
        best = {
          threshold: (sorted[accepted - 1] as Scored).score,
          coverage: accepted / total,
          accepted,
          errors,
          bound,
        };
      }
    }
  }
  return best;
}

export function perLabel(
  rows: Array<Scored & { predicted: number }>,
  labels: number,
  risk: number,
  delta: number,
): Array<Guarantee | null> {
  return Array.from({ length: labels }, (_, label) =>
    fixedSequences(
      rows.filter((r) => r.predicted === label),
      risk,
      delta / labels,
      rows.length,
    ),
  );
}
