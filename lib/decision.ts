/**
 * From per-row scores to a decision: the best label when its (temperature-scaled)
 * probability reaches the threshold, else the "Other" label with the reason.
 */

import type { NativeInferResult } from './binding.js';

export interface TopEntry<L extends string> {
  label: L;
  probability: number;
  logProbability: number;
}

/** Confidence scores of the row, from the same fused pass (see DESIGN.md). */
export interface Scores {
  /** Top-1 minus top-2 probability. */
  margin: number;
  /** Of the predicted distribution, in nats. */
  entropy: number;
  /** -T * logsumexp(logits / T); lower means more in-distribution. */
  energy: number;
}

interface Common<L extends string> {
  probability: number;
  logProbability: number;
  top: TopEntry<L>[];
  /** The text was longer than the model's maximum length and was cut. */
  truncated: boolean;
  scores: Scores;
}

export interface Accepted<L extends string> extends Common<L> {
  accepted: true;
  label: L;
}

export interface BelowThreshold<L extends string, O extends string> extends Common<L> {
  accepted: false;
  label: O;
  /** The label the model would have given. */
  best: L;
  reason: 'below-threshold';
  threshold: number;
}

/** The model produced NaN or infinite logits for this text; no label can be trusted. */
export interface Invalid<L extends string, O extends string> {
  accepted: false;
  label: O;
  best: null;
  reason: 'invalid';
  probability: 0;
  logProbability: number;
  top: TopEntry<L>[];
  truncated: boolean;
  scores: null;
}

export type Rejected<L extends string, O extends string> = BelowThreshold<L, O> | Invalid<L, O>;
export type Decision<L extends string = string, O extends string = 'Other'> = Accepted<L> | Rejected<L, O>;

/**
 * The accept rule, and the one place it lives (calibration's evaluation and thresholds use it
 * too): a valid row is accepted when its best label's probability reaches that label's
 * threshold; an invalid row (NaN or infinite logits) never is.
 */
export function accepts(valid: boolean, probability: number, threshold: number): boolean {
  return valid && probability >= threshold;
}

export class DecisionPolicy<L extends string, O extends string> {
  readonly labels: readonly L[];
  readonly otherLabel: O;
  readonly threshold: number;
  readonly #perLabel: Float64Array;

  constructor(labels: readonly L[], otherLabel: O, threshold: number, thresholds: Partial<Record<L, number>>) {
    this.labels = labels;
    this.otherLabel = otherLabel;
    this.threshold = threshold;
    this.#perLabel = Float64Array.from(labels, (label) => thresholds[label] ?? threshold);
  }

  thresholdFor(index: number): number {
    return this.#perLabel[index] ?? this.threshold;
  }

  decide(result: NativeInferResult, row: number, truncated: boolean): Decision<L, O> {
    if (result.valid[row] !== 1) {
      return {
        accepted: false,
        label: this.otherLabel,
        best: null,
        reason: 'invalid',
        probability: 0,
        logProbability: Number.NEGATIVE_INFINITY,
        top: [],
        truncated,
        scores: null,
      };
    }
    const k = result.topK;
    const top: TopEntry<L>[] = [];
    for (let j = 0; j < k; j++) {
      const logProbability = result.topLogProb[row * k + j] as number;
      top.push({
        label: this.labels[result.topIndex[row * k + j] as number] as L,
        probability: Math.exp(logProbability),
        logProbability,
      });
    }
    const best = top[0] as TopEntry<L>;
    const bestIndex = result.topIndex[row * k] as number;
    const scores: Scores = {
      margin: result.margin[row] as number,
      entropy: result.entropy[row] as number,
      energy: result.energy[row] as number,
    };
    const common = { probability: best.probability, logProbability: best.logProbability, top, truncated, scores };
    const threshold = this.thresholdFor(bestIndex);
    if (accepts(true, best.probability, threshold)) return { accepted: true, label: best.label, ...common };
    return {
      accepted: false,
      label: this.otherLabel,
      best: best.label,
      reason: 'below-threshold',
      threshold,
      ...common,
    };
  }
}
