/**
 * From logits of labelled calibration examples to calibration.json: the temperature, the
 * top-label confidence map, the threshold(s) and the guarantee they carry, with the figures
 * before scaling, after it, and after the map.
 *
 * Thresholds are chosen on the confidence the classifier will serve: the engine's fp32 max
 * probability at the fitted temperature (`served`, from a pass through the addon), through the
 * map, compared as decision.ts compares it. So a calibration text at the threshold is accepted
 * at run time exactly as it was counted here.
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
import { applyConfidenceMap, fitConfidenceMap } from '../confidence-map.js';
import { chooseSmoothing } from './smoothing.js';
import { DRIFT_BINS, driftCounts } from '../drift.js';
import { fitTemperature } from './temperature.js';
import type { CalibrationFile, Figures } from './file.js';
import {
  byCoverage,
  InsufficientDataError,
  noThresholdReason,
  STARTS,
  perLabel,
  withGuarantee,
  type Guarantee,
} from './thresholds.js';

export const BINS = 15;

export interface CalibrateRequest {
  /** Selective accuracy to guarantee on accepted predictions (1 - r*). */
  targetAccuracy?: number;
  delta?: number;
  /** Or: the share of examples to accept, with no guarantee. */
  coverage?: number;
  /** Per-label thresholds, each certified at delta / labels; a label none certifies is never accepted. */
  perLabel?: boolean;
}

/**
 * Which rows the thresholds and their guarantee are computed on (all, by default), and which of
 * those the out-of-distribution gate flags: those are never accepted, so the guarantee is the
 * combined rule's (gate, then threshold).
 */
export interface Selection {
  rows?: ArrayLike<boolean>;
  flagged?: ArrayLike<boolean>;
}

/** What the classifier serves at the fitted temperature, per example (0 for an invalid row). */
export interface Served {
  temperature: number;
  maxProbability: ArrayLike<number>;
}

export interface CalibrationOutcome {
  /** calibration.json, less the gate's record (the calibrate command adds it). */
  file: Omit<CalibrationFile, 'gate'>;
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
  served?: Served,
  selection: Selection = {},
): CalibrationOutcome {
  const temperature = served?.temperature ?? fitTemperature(p);
  const rows = scoreAll(p, temperature);
  const raw = (i: number): number =>
    served ? (served.maxProbability[i] as number) : (rows[i]?.maxProbability as number);
  const valid = rows.map((r, i) => ({ r, i })).filter(({ r }) => r.valid);
  const smoothing = chooseSmoothing(
    valid.map(({ r }) => r),
    valid.map(({ i }) => raw(i)),
  );
  const map = fitConfidenceMap(
    valid.map(({ i }) => raw(i)),
    valid.map(({ r }) => r.correct),
    smoothing.minBlock,
  );
  const confidence = rows.map((r, i) => (r.valid ? applyConfidenceMap(map, raw(i)) : 0));
  const mappedRows = rows.map((r, i) => ({ ...r, maxProbability: confidence[i] as number }));
  // Thresholds are chosen among the valid rows only: an invalid row is rejected whatever the
  // threshold (decision.ts), so it takes no part in where the threshold goes, nor does a row the
  // gate flags; coverage is still a share of all n selected.
  const selected = (i: number): boolean => selection.rows === undefined || selection.rows[i] === true;
  const scored = valid
    .filter(({ i }) => selected(i) && selection.flagged?.[i] !== true)
    .map(({ r, i }) => ({
      score: confidence[i] as number,
      correct: r.correct,
      predicted: r.predicted,
    }));
  const curve = riskCoverage(rows);
  const n = rows.filter((_, i) => selected(i)).length;
  if (scored.length === 0) throw new InsufficientDataError('every calibration example has NaN or infinite logits');
  const ofAll = (accepted: number): number => accepted / n;

  let threshold: number;
  let thresholds: Record<string, number | null> | undefined;
  let guarantee: CalibrationFile['guarantee'];
  if (request.coverage !== undefined) {
    const chosen = byCoverage(scored, Math.min(1, (request.coverage * n) / scored.length));
    threshold = chosen.threshold;
    // Ties (a flat stretch of the map) can make the share accepted exceed the one asked for: both are recorded.
    guarantee = { kind: 'coverage', coverage: ofAll(chosen.coverage * scored.length), requested: request.coverage, n };
  } else {
    const target = request.targetAccuracy ?? 0.95;
    const delta = request.delta ?? 0.05;
    const risk = Number((1 - target).toFixed(12)); // 1 - 0.85 is 0.15000000000000002 in binary
    if (request.perLabel) {
      // Every label certified at delta / labels, or never accepted: the whole of delta goes to
      // the labels, and no global threshold applies to any of them.
      const each = perLabel(scored, labels.length, risk, delta);
      const certified = each.filter((g): g is Guarantee => g !== null);
      if (certified.length === 0) {
        throw new InsufficientDataError(
          `no label has a threshold with selective risk <= ${risk} at confidence ${1 - delta / labels.length} ` +
            `(delta ${delta} split over ${labels.length} labels): ` +
            noThresholdReason(
              scored,
              risk,
              delta / labels.length / STARTS,
              `each scan runs at level ${(delta / labels.length / STARTS).toPrecision(3)}`,
            ),
        );
      }
      thresholds = Object.fromEntries(labels.map((label, i) => [label, each[i]?.threshold ?? null]));
      threshold = Math.min(...certified.map((g) => g.threshold));
      const accepted = certified.reduce((s, g) => s + g.accepted, 0);
      const errors = certified.reduce((s, g) => s + g.errors, 0);
      guarantee = {
        kind: 'selective-risk',
        method:
          'per label: fixed-sequence (Learn then Test) scan of one-sided Clopper-Pearson bounds at delta / labels; ' +
          'labels without a certified threshold are never accepted',
        target_accuracy: target,
        risk,
        delta,
        n,
        accepted,
        errors,
        // Every accepted label's risk is within its bound at once (probability >= 1 - delta): so is their mixture.
        bound: Math.max(...certified.map((g) => g.bound)),
        coverage: ofAll(accepted),
        per_label: Object.fromEntries(
          labels.map((label, i) => {
            const g = each[i];
            return [label, g ? { coverage: g.coverage, accepted: g.accepted, errors: g.errors, bound: g.bound } : null];
          }),
        ),
      };
    } else {
      const global = withGuarantee(scored, risk, delta);
      threshold = global.threshold;
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
      };
    }
  }
  if (selection.flagged !== undefined && guarantee.kind === 'selective-risk') {
    guarantee.method +=
      "; on the texts the gate does not flag, which are never accepted: the guarantee is the combined rule's";
  }
  const file: CalibrationOutcome['file'] = {
    format: 1,
    temperature,
    score: 'calibrated_max_probability',
    map,
    threshold,
    ...(thresholds ? { thresholds } : {}),
    guarantee,
    figures: {
      before: figures(p, 1),
      after: figures(p, temperature),
      mapped: { ece: ece(mappedRows, BINS), mce: mce(mappedRows, BINS) },
      map_smoothing: {
        min_block: smoothing.minBlock,
        folds: smoothing.folds,
        cv: smoothing.cv.map((c) => ({ min_block: c.minBlock, brier: c.brier, ece: c.ece })),
      },
      aurc: curve.aurc,
      e_aurc: curve.eAurc,
      bins: BINS,
    },
    data: { file: data.file, sha256: data.sha256, n },
    created: new Date().toISOString(),
    drift: {
      score: 'served_max_probability',
      bins: DRIFT_BINS,
      counts: driftCounts(rows.map((r, i) => (r.valid ? raw(i) : 0))),
    },
  };
  return {
    file,
    binsBefore: reliabilityBins(scoreAll(p, 1), BINS),
    binsAfter: reliabilityBins(mappedRows, BINS),
    curve,
  };
}
