/**
 * From logits of labelled calibration examples to calibration.json: the temperature, the
 * threshold(s) and the guarantee they carry, with the figures before and after scaling.
 */

import {
  brier,
  ece,
  mce,
  nll,
  reliabilityBins,
  riskCoverage,
  scoreAll,
  type Bin,
  type Predictions,
  type RiskCoverage,
} from './metrics.js';
import { fitTemperature } from './temperature.js';
import { byCoverage, InsufficientDataError, perLabel, withGuarantee, type Guarantee } from './thresholds.js';

export const BINS = 15;

export interface CalibrateRequest {
  /** Selective accuracy to guarantee on accepted predictions (1 - r*). */
  targetAccuracy?: number;
  delta?: number;
  /** Or: the share of examples to accept, with no guarantee. */
  coverage?: number;
  /** Per-label thresholds (with a guarantee: delta split over the global threshold and the labels). */
  perLabel?: boolean;
}

export interface Figures {
  accuracy: number;
  nll: number;
  brier: number;
  ece: number;
  mce: number;
}

export interface CalibrationFile {
  format: 1;
  temperature: number;
  score: 'max_probability';
  threshold: number;
  thresholds?: Record<string, number>;
  guarantee:
    | {
        kind: 'selective-risk';
        method: string;
        target_accuracy: number;
        risk: number;
        delta: number;
        n: number;
        accepted: number;
        errors: number;
        bound: number;
        coverage: number;
        per_label?: Record<string, Omit<Guarantee, 'threshold'> | null>;
      }
    | { kind: 'coverage'; coverage: number; n: number };
  figures: { before: Figures; after: Figures; aurc: number; e_aurc: number; bins: number };
  data: { file: string; sha256: string; n: number };
  created: string;
}

export interface CalibrationOutcome {
  file: CalibrationFile;
  binsBefore: Bin[];
  binsAfter: Bin[];
  curve: RiskCoverage;
}

function figures(p: Predictions, temperature: number): Figures {
  const rows = scoreAll(p, temperature);
  return {
    accuracy: rows.filter((r) => r.correct).length / rows.length, // an invalid row is wrong
    nll: nll(rows),
    brier: brier(rows, p.labels),
    ece: ece(rows, BINS),
    mce: mce(rows, BINS),
  };
}

export function calibrate(
  p: Predictions,
  labels: readonly string[],
  request: CalibrateRequest,
  data: { file: string; sha256: string },
): CalibrationOutcome {
  const temperature = fitTemperature(p);
  const rows = scoreAll(p, temperature);
  // Thresholds are chosen among the valid rows only: an invalid row is rejected whatever the
  // threshold (decision.ts), so it takes no part in where the threshold goes; coverage is still
  // a share of all n.
  const scored = rows
    .filter((r) => r.valid)
    .map((r) => ({ score: r.maxProbability, correct: r.correct, predicted: r.predicted }));
  const curve = riskCoverage(rows);
  const n = rows.length;
  if (scored.length === 0) throw new InsufficientDataError('every calibration example has NaN or infinite logits');
  const ofAll = (accepted: number): number => accepted / n;

  let threshold: number;
  let thresholds: Record<string, number> | undefined;
  let guarantee: CalibrationFile['guarantee'];
  if (request.coverage !== undefined) {
    const chosen = byCoverage(scored, Math.min(1, (request.coverage * n) / scored.length));
    threshold = chosen.threshold;
    guarantee = { kind: 'coverage', coverage: ofAll(chosen.coverage * scored.length), n };
  } else {
    const target = request.targetAccuracy ?? 0.95;
    const delta = request.delta ?? 0.05;
    const risk = Number((1 - target).toFixed(12)); // 1 - 0.85 is 0.15000000000000002 in binary
    // Per label, delta is split: half for the global threshold, half over the labels.
    const global = withGuarantee(scored, risk, request.perLabel ? delta / 2 : delta);
    threshold = global.threshold;
    let perLabelReport: Record<string, Omit<Guarantee, 'threshold'> | null> | undefined;
    if (request.perLabel) {
      const each = perLabel(scored, labels.length, risk, delta / 2);
      thresholds = {};
      perLabelReport = {};
      each.forEach((g, i) => {
        const label = labels[i] as string;
        if (g) {
          (thresholds as Record<string, number>)[label] = g.threshold;
          (perLabelReport as Record<string, Omit<Guarantee, 'threshold'> | null>)[label] = {
            coverage: g.coverage,
            accepted: g.accepted,
            errors: g.errors,
            bound: g.bound,
          };
        } else {
          (perLabelReport as Record<string, Omit<Guarantee, 'threshold'> | null>)[label] = null;
        }
      });
    }
    guarantee = {
      kind: 'selective-risk',
      method:
        'SGR (Geifman & El-Yaniv 2017): binary search, ceil(log2 n) one-sided Clopper-Pearson bounds at delta / ceil(log2 n)',
      target_accuracy: target,
      risk,
      delta,
      n,
      accepted: global.accepted,
      errors: global.errors,
      bound: global.bound,
      coverage: ofAll(global.accepted),
      ...(perLabelReport ? { per_label: perLabelReport } : {}),
    };
  }
  const file: CalibrationFile = {
    format: 1,
    temperature,
    score: 'max_probability',
    threshold,
    ...(thresholds ? { thresholds } : {}),
    guarantee,
    figures: {
      before: figures(p, 1),
      after: figures(p, temperature),
      aurc: curve.aurc,
      e_aurc: curve.eAurc,
      bins: BINS,
    },
    data: { file: data.file, sha256: data.sha256, n },
    created: new Date().toISOString(),
  };
  return { file, binsBefore: reliabilityBins(scoreAll(p, 1), BINS), binsAfter: reliabilityBins(rows, BINS), curve };
}
