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
 * - perLabel: the same per predicted label, with delta split evenly over the labels (Bonferroni).
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
      `no threshold has selective risk <= ${risk} at confidence ${1 - delta}: ${m} examples are too few ` +
        `(each of the ${tests} tests runs at level ${level.toPrecision(3)}; with no errors at all, ` +
        `${minimumExamples(risk, level)} accepted examples would be needed)`,
    );
  }
  return best;
}

/** The fewest accepted examples, all correct, for which the bound reaches `risk`. */
export function minimumExamples(risk: number, delta: number): number {
  // With zero errors the Clopper–Pearson bound is 1 - delta^(1/n).
  return Math.ceil(Math.log(delta) / Math.log(1 - risk));
}

export function perLabel(
  rows: Array<Scored & { predicted: number }>,
  labels: number,
  risk: number,
  delta: number,
): Array<Guarantee | null> {
  return Array.from({ length: labels }, (_, label) => {
    const mine = rows.filter((r) => r.predicted === label);
    try {
      return withGuarantee(mine, risk, delta / labels);
    } catch (error) {
      if (error instanceof InsufficientDataError) return null; // too few: the global threshold applies
      throw error;
    }
  });
}
