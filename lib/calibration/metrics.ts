/**
 * Calibration and selective-prediction figures of labelled predictions, in float64. Rows are
 * raw logits; temperature T scales them (softmax(z / T)).
 *
 * A row with a NaN or infinite logit is invalid, as the classifier treats it (decision.ts):
 * never accepted, wrong in accuracy and risk, every score -Infinity (maxProbability 0, the
 * probability its decision reports), and left out of the figures it has no probabilities for
 * (NLL, Brier, ECE, MCE, reliability bins, the temperature fit). Never a silent label 0.
 */

export interface Predictions {
  /** One logits row per example. */
  logits: ArrayLike<number>[];
  /** Index of the true label of each example. */
  labels: number[];
}

export interface RowScores {
  /** Every logit finite; an invalid row has predicted -1 and NaN probabilities. */
  valid: boolean;
  predicted: number;
  correct: boolean;
  probabilities: Float64Array;
  /** Max probability: the default confidence score. */
  maxProbability: number;
  margin: number;
  /** Negated, so that every score is "higher = more confident". */
  negativeEntropy: number;
  /** logsumexp(z / T) * T, i.e. minus the energy: higher = more in-distribution. */
  negativeEnergy: number;
  logProbabilityOfLabel: number;
}

export type ScoreName = 'maxProbability' | 'margin' | 'negativeEntropy' | 'negativeEnergy';
export const SCORE_NAMES: readonly ScoreName[] = ['maxProbability', 'margin', 'negativeEntropy', 'negativeEnergy'];

/** Whether every logit of the row is finite (the classifier's rule for a valid row). */
export function finiteRow(z: ArrayLike<number>): boolean {
  for (let i = 0; i < z.length; i++) if (!Number.isFinite(z[i] as number)) return false;
  return true;
}

function invalidRow(width: number): RowScores {
  return {
    valid: false,
    predicted: -1,
    correct: false,
    probabilities: new Float64Array(width).fill(Number.NaN),
    maxProbability: 0,
    margin: Number.NEGATIVE_INFINITY,
    negativeEntropy: Number.NEGATIVE_INFINITY,
    negativeEnergy: Number.NEGATIVE_INFINITY,
    logProbabilityOfLabel: Number.NEGATIVE_INFINITY,
  };
}

export function scoreRow(z: ArrayLike<number>, label: number, temperature: number): RowScores {
  if (!finiteRow(z)) return invalidRow(z.length);
  let m = -Infinity;
  for (let i = 0; i < z.length; i++) m = Math.max(m, (z[i] as number) / temperature);
  let s = 0;
  for (let i = 0; i < z.length; i++) s += Math.exp((z[i] as number) / temperature - m);
  const lse = m + Math.log(s);
  const probabilities = new Float64Array(z.length);
  let predicted = 0;
  let entropy = 0;
  for (let i = 0; i < z.length; i++) {
    const logp = (z[i] as number) / temperature - lse;
    const p = Math.exp(logp);
    probabilities[i] = p;
    if (p > (probabilities[predicted] as number)) predicted = i;
    if (p > 0) entropy -= p * logp;
  }
  const sorted = [...probabilities].sort((a, b) => b - a);
  return {
    valid: true,
    predicted,
    correct: predicted === label,
    probabilities,
    maxProbability: sorted[0] as number,
    margin: (sorted[0] as number) - (sorted[1] ?? 0),
    negativeEntropy: -entropy,
    negativeEnergy: temperature * lse,
    logProbabilityOfLabel: label >= 0 ? (z[label] as number) / temperature - lse : Number.NaN,
  };
}

export function scoreAll(p: Predictions, temperature: number): RowScores[] {
  return p.logits.map((z, i) => scoreRow(z, p.labels[i] as number, temperature));
}

/** Mean negative log-likelihood of the true labels, over the valid rows. */
export function nll(rows: RowScores[]): number {
  const valid = rows.filter((r) => r.valid);
  return -valid.reduce((s, r) => s + r.logProbabilityOfLabel, 0) / valid.length;
}

/** Multi-class Brier score: mean over the valid examples of sum_k (p_k - 1[k = y])^2. */
export function brier(rows: RowScores[], labels: number[]): number {
  let total = 0;
  let n = 0;
  rows.forEach((r, i) => {
    if (!r.valid) return;
    n++;
    r.probabilities.forEach((p, k) => (total += (p - (k === labels[i] ? 1 : 0)) ** 2));
  });
  return total / n;
}

export interface Bin {
  lower: number;
  upper: number;
  count: number;
  accuracy: number;
  confidence: number;
}

/** Equal-width confidence bins (lower, upper] of the valid rows; the first also takes confidence 0. */
export function reliabilityBins(rows: RowScores[], bins = 15): Bin[] {
  const out: Bin[] = Array.from({ length: bins }, (_, b) => ({
    lower: b / bins,
    upper: (b + 1) / bins,
    count: 0,
    accuracy: 0,
    confidence: 0,
  }));
  for (const r of rows) {
    if (!r.valid) continue;
    const b = Math.min(bins - 1, Math.max(0, Math.ceil(r.maxProbability * bins) - 1));
    const bin = out[b] as Bin;
    bin.count++;
    bin.accuracy += r.correct ? 1 : 0;
    bin.confidence += r.maxProbability;
  }
  for (const bin of out) {
    if (bin.count > 0) {
      bin.accuracy /= bin.count;
      bin.confidence /= bin.count;
    }
  }
  return out;
}

/** Expected calibration error: sum over bins of (count / n) |accuracy - confidence|, n the valid rows. */
export function ece(rows: RowScores[], bins = 15): number {
  const n = rows.filter((r) => r.valid).length;
  return reliabilityBins(rows, bins).reduce((s, b) => s + (b.count / n) * Math.abs(b.accuracy - b.confidence), 0);
}

/** Maximum calibration error: the largest |accuracy - confidence| of a non-empty bin. */
export function mce(rows: RowScores[], bins = 15): number {
  return reliabilityBins(rows, bins).reduce(
    (m, b) => (b.count > 0 ? Math.max(m, Math.abs(b.accuracy - b.confidence)) : m),
    0,
  );
}

export interface RiskCoverage {
  /** coverage[k] = (k + 1) / n, risk[k] = errors among the k + 1 most confident / (k + 1). */
  coverage: Float64Array;
  risk: Float64Array;
  aurc: number;
  /** AURC minus that of a perfect ranking with the same error rate. */
  eAurc: number;
}

export function riskCoverage(rows: RowScores[], score: ScoreName = 'maxProbability'): RiskCoverage {
  const order = [...rows].sort((a, b) => b[score] - a[score]);
  const n = order.length;
  const coverage = new Float64Array(n);
  const risk = new Float64Array(n);
  let errors = 0;
  order.forEach((r, k) => {
    if (!r.correct) errors++;
    coverage[k] = (k + 1) / n;
    risk[k] = errors / (k + 1);
  });
  const aurc = risk.reduce((s, v) => s + v, 0) / n;
  const rate = errors / n;
  // Perfect ranking: all errors last; its AURC in closed form (Geifman et al. 2019).
  const optimal = rate + (1 - rate) * Math.log(1 - rate || 1);
  return { coverage, risk, aurc, eAurc: aurc - optimal };
}

/** AUROC of a score separating in-distribution (positive) from out-of-distribution rows. */
export function auroc(inScores: number[], outScores: number[]): number {
  const all = [...inScores.map((s) => ({ s, pos: 1 })), ...outScores.map((s) => ({ s, pos: 0 }))].sort(
    (a, b) => a.s - b.s,
  );
  // Mann–Whitney U with average ranks for ties.
  let rankSum = 0;
  for (let i = 0; i < all.length;) {
    let j = i;
    while (j + 1 < all.length && (all[j + 1] as { s: number }).s === (all[i] as { s: number }).s) j++;
    const rank = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) if ((all[k] as { pos: number }).pos) rankSum += rank;
    i = j + 1;
  }
  const nPos = inScores.length;
  const nNeg = outScores.length;
  return (rankSum - (nPos * (nPos + 1)) / 2) / (nPos * nNeg);
}

/** The share of out-of-distribution rows scoring at or above the in-distribution 5% quantile. */
export function fpr95(inScores: number[], outScores: number[]): number {
  const sorted = [...inScores].sort((a, b) => a - b);
  const threshold = sorted[Math.floor(0.05 * sorted.length)] as number;
  return outScores.filter((s) => s >= threshold).length / outScores.length;
}
