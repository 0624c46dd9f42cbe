/**
 * From per-row scores to a decision: the best label when its confidence reaches the
 * threshold, else the "Other" label with the reason. The confidence is the best label's
 * (temperature-scaled) probability through the bundle's calibration map when it has one
 * (lib/confidence-map.ts), else that probability itself.
 */

import type { NativeInferResult } from './binding.js';
import { applyConfidenceMap, type ConfidenceMap } from './confidence-map.js';

export interface TopEntry<L extends string> {
  label: L;
  probability: number;
  logProbability: number;
}

/** Confidence scores of the row, from the same fused pass (see DESIGN.md). */
export interface Scores {
  /** The out-of-distribution gate's score (higher: further from the calibration texts), or null without a gate. */
  ood: number | null;
  /** Top-1 minus top-2 probability. */
  margin: number;
  /** Of the predicted distribution, in nats. */
  entropy: number;
  /** -T * logsumexp(logits / T); lower means more in-distribution. */
  energy: number;
}

interface Common<L extends string> {
  /** softmax(logits / T) of the best label. */
  probability: number;
  logProbability: number;
  /**
   * How likely the best label is right: `probability` through the calibration map (equal to it
   * without one). The thresholds apply to this.
   */
  confidence: number;
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
  /** null: no threshold was certified for the best label, which is never accepted. */
  threshold: number | null;
}

/** The model produced NaN or infinite logits for this text; no label can be trusted. */
export interface Invalid<L extends string, O extends string> {
  accepted: false;
  label: O;
  best: null;
  reason: 'invalid';
  probability: 0;
  logProbability: number;
  confidence: 0;
  top: TopEntry<L>[];
  truncated: boolean;
  scores: null;
}

/** The gate found the text unlike the calibration texts (its features far from every label's). */
export interface OutOfDistribution<L extends string, O extends string> extends Common<L> {
  accepted: false;
  label: O;
  /** The label the model would have given. */
  best: L;
  reason: 'out-of-distribution';
  /** The gate's threshold the score passed. */
  threshold: number;
}

export type Rejected<L extends string, O extends string> =
  BelowThreshold<L, O> | OutOfDistribution<L, O> | Invalid<L, O>;
export type Decision<L extends string = string, O extends string = 'Other'> = Accepted<L> | Rejected<L, O>;

/**
 * The accept rule, and the one place it lives (calibration's evaluation and thresholds use it
 * too): a valid row is accepted when its best label's confidence reaches that label's
 * threshold; an invalid row (NaN or infinite logits) never is. A label whose threshold is
 * null (calibrate certified none) never is either.
 */
export function accepts(valid: boolean, confidence: number, threshold: number | null): boolean {
  return valid && threshold !== null && confidence >= threshold;
}

/**
 * The gate's test, and the one place it lives (calibrate fits its threshold with it, evaluate
 * counts with it): a text passes when its served score is at most the threshold. A NaN score
 * (NaN features) never passes.
 */
export function gatePasses(score: number, threshold: number): boolean {
  return score <= threshold;
}

export class DecisionPolicy<L extends string, O extends string> {
  readonly labels: readonly L[];
  readonly otherLabel: O;
  readonly threshold: number;
  readonly map: ConfidenceMap | undefined;
  /** The gate's threshold on its score, when there is a gate. */
  readonly gateThreshold: number | undefined;
  readonly #perLabel: Array<number | null>;

  /** `rule.thresholds`: by label index (lib/rule.ts decides them). */
  constructor(
    labels: readonly L[],
    otherLabel: O,
    rule: { threshold: number; thresholds: readonly (number | null)[]; map: ConfidenceMap | undefined },
    gateThreshold?: number,
  ) {
    this.labels = labels;
    this.otherLabel = otherLabel;
    this.threshold = rule.threshold;
    this.map = rule.map;
    this.gateThreshold = gateThreshold;
    this.#perLabel = [...rule.thresholds];
  }

  /** The threshold in force for a label; null: that label is never accepted. */
  thresholdFor(index: number): number | null {
    const t = this.#perLabel[index];
    return t === undefined ? this.threshold : t;
  }

  /** The confidence of a served max probability: through the map, if any. */
  confidenceOf(probability: number): number {
    return this.map ? applyConfidenceMap(this.map, probability) : probability;
  }

  decide(result: NativeInferResult, row: number, truncated: boolean): Decision<L, O> {
    const ood = this.gateThreshold === undefined ? null : (result.oodScore[row] as number);
    // NaN features leave the gate unable to say: the row is as untrustworthy as NaN logits.
    if (result.valid[row] !== 1 || (ood !== null && Number.isNaN(ood))) {
      return {
        accepted: false,
        label: this.otherLabel,
        best: null,
        reason: 'invalid',
        probability: 0,
        logProbability: Number.NEGATIVE_INFINITY,
        confidence: 0,
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
      ood,
      margin: result.margin[row] as number,
      entropy: result.entropy[row] as number,
      energy: result.energy[row] as number,
    };
    const confidence = this.confidenceOf(best.probability);
    const common = {
      probability: best.probability,
      logProbability: best.logProbability,
      confidence,
      top,
      truncated,
      scores,
    };
    if (ood !== null && !gatePasses(ood, this.gateThreshold as number)) {
      return {
        accepted: false,
        label: this.otherLabel,
        best: best.label,
        reason: 'out-of-distribution',
        threshold: this.gateThreshold as number,
        ...common,
      };
    }
    const threshold = this.thresholdFor(bestIndex);
    if (accepts(true, confidence, threshold)) return { accepted: true, label: best.label, ...common };
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
