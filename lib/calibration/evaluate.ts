/**
 * How a classifier, as configured (temperature, thresholds), does on labelled data, and how
 * well each confidence score separates out-of-distribution texts.
 */

import { accepts, gatePasses } from '../decision.js';
import { mulberry32 } from '../seeded-random.js';
import {
  auroc,
  ece,
  fpr95,
  nll,
  riskCoverage,
  scoreAll,
  SCORE_NAMES,
  type Predictions,
  type RowScores,
} from './metrics.js';

export interface Evaluation {
  n: number;
  accuracy: number;
  macroF1: number;
  nll: number;
  /** Of the confidence decisions carry (through the calibration map, if any), 15 equal-width bins. */
  ece: number;
  /** A 95% bootstrap interval of `ece` (1,000 resamples of the examples). */
  eceInterval: [number, number];
  /** Of the max probability itself (softmax(logits / T)), for comparison. */
  eceProbability: number;
  aurc: number;
  /** Share of texts the thresholds accept (not "Other"). */
  coverage: number;
  /** Accuracy among the accepted. */
  selectiveAccuracy: number;
  /** With an out-of-distribution gate: the share of these (in-distribution) texts it flags, against its promise. */
  gate?: { alpha: number; threshold: number; flagged: number; n: number };
  /** Per out-of-distribution set. */
  ood?: Array<{
    name: string;
    n: number;
    /** Share of its texts sent to "Other" (by the thresholds and the gate). */
    toOther: number;
    /** Share the gate alone flags, with a gate. */
    flagged?: number;
    /** In-distribution (the data) against this set, per score (the gate's, "gate", with a gate). */
    scores: Record<string, { auroc: number; fpr95: number }>;
  }>;
}

/** Out-of-distribution texts: their logits, and with a gate its score of each. */
export interface OodSet {
  name: string;
  logits: ArrayLike<number>[];
  gate?: number[];
}

/** The gate's scores of the labelled data, and its threshold and promise. */
export interface GateScores {
  scores: number[];
  threshold: number;
  alpha: number;
}

function macroF1(predicted: number[], truth: number[], labels: number): number {
  let total = 0;
  let present = 0;
  for (let c = 0; c < labels; c++) {
    let tp = 0;
    let fp = 0;
    let fn = 0;
    predicted.forEach((p, i) => {
      if (p === c && truth[i] === c) tp++;
      else if (p === c) fp++;
      else if (truth[i] === c) fn++;
    });
    if (tp + fn === 0) continue; // a label absent from the data does not count
    present++;
    total += tp === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn);
  }
  return total / present;
}

function bootstrapInterval(
  rows: RowScores[],
  statistic: (rows: RowScores[]) => number,
  resamples = 1000,
): [number, number] {
  const next = mulberry32(20261203);
  const values = Array.from({ length: resamples }, () =>
    statistic(Array.from({ length: rows.length }, () => rows[Math.floor(next() * rows.length)] as RowScores)),
  ).sort((a, b) => a - b);
  return [values[Math.floor(0.025 * resamples)] as number, values[Math.ceil(0.975 * resamples) - 1] as number];
}

/**
 * `thresholdOf(predictedIndex)` gives the threshold in force for that label (null: never
 * accepted); `confidenceOf` turns a max probability into the confidence decisions carry.
 */
export function evaluate(
  p: Predictions,
  temperature: number,
  thresholdOf: (label: number) => number | null,
  labels: number,
  ood: OodSet[] = [],
  confidenceOf: (probability: number) => number = (probability) => probability,
  gate?: GateScores,
): Evaluation {
  const raw = scoreAll(p, temperature);
  const rows = raw.map((r) => (r.valid ? { ...r, maxProbability: confidenceOf(r.maxProbability) } : r));
  // As decision.ts decides: the gate first (NaN: never accepted), then the threshold.
  const passes = (gateScore: number | undefined): boolean =>
    gate === undefined || (gateScore !== undefined && gatePasses(gateScore, gate.threshold));
  const accepted = rows.filter(
    (r, i) => passes(gate?.scores[i]) && accepts(r.valid, r.maxProbability, thresholdOf(r.predicted)),
  );
  const out: Evaluation = {
    n: rows.length,
    accuracy: rows.filter((r) => r.correct).length / rows.length,
    macroF1: macroF1(
      rows.map((r) => r.predicted),
      p.labels,
      labels,
    ),
    nll: nll(raw),
    ece: ece(rows),
    eceInterval: bootstrapInterval(rows, (sample) => ece(sample)),
    eceProbability: ece(raw),
    aurc: riskCoverage(raw).aurc,
    coverage: accepted.length / rows.length,
    selectiveAccuracy: accepted.length === 0 ? Number.NaN : accepted.filter((r) => r.correct).length / accepted.length,
  };
  if (gate) {
    out.gate = {
      alpha: gate.alpha,
      threshold: gate.threshold,
      flagged: gate.scores.filter((s) => !passes(s)).length / gate.scores.length,
      n: gate.scores.length,
    };
  }
  if (ood.length > 0) {
    out.ood = ood.map((set) => {
      const oodRows = scoreAll(
        { logits: [...Array.from(set.logits)], labels: Array.from(set.logits, () => -1) },
        temperature,
      ).map((r) => (r.valid ? { ...r, maxProbability: confidenceOf(r.maxProbability) } : r));
      const scores: Record<string, { auroc: number; fpr95: number }> = {};
      for (const name of SCORE_NAMES) {
        const inScores = rows.map((r) => r[name]);
        const outScores = oodRows.map((r) => r[name]);
        scores[name] = { auroc: auroc(inScores, outScores), fpr95: fpr95(inScores, outScores) };
      }
      if (gate && set.gate) {
        // Higher = more in-distribution, like the others; NaN (unscoreable) as far as can be.
        const inScores = gate.scores.map((s) => (Number.isNaN(s) ? -Infinity : -s));
        const outScores = set.gate.map((s) => (Number.isNaN(s) ? -Infinity : -s));
        scores['gate'] = { auroc: auroc(inScores, outScores), fpr95: fpr95(inScores, outScores) };
      }
      return {
        name: set.name,
        n: oodRows.length,
        toOther:
          oodRows.filter(
            (r, i) => !(passes(set.gate?.[i]) && accepts(r.valid, r.maxProbability, thresholdOf(r.predicted))),
          ).length / oodRows.length,
        ...(gate && set.gate ? { flagged: set.gate.filter((s) => !passes(s)).length / set.gate.length } : {}),
        scores,
      };
    });
  }
  return out;
}
