/**
 * Fitting the out-of-distribution gate for calibrate: its directions and centres from the
 * model's features (gate.ts), then its threshold among the scores the engine serves with that
 * gate. The engine computes the score in fp32 (native/engine/ood_gate.cpp); a threshold chosen
 * on a float64 recomputation could sit within an ulp of a served score and flip it, so the
 * threshold is one of the served scores themselves, compared as decision.ts compares it.
 */

import type { Classifier } from '../classifier.js';
import { gatePasses } from '../decision.js';
import { DataError, InvalidArgumentError } from '../errors.js';
import { readLabelled, type LabelledData } from './data.js';
import type { Gate, GateRecord } from './file.js';
import { conformalThreshold, fitGate, gateFitUsable, type GateFit } from './gate.js';
import { featuresOf } from './logits.js';

/** Directions the gate keeps by default: fp32 numbers for 128 x 384 + 50 x 128 fit the bundle budget. */
export const DEFAULT_GATE_DIM = 128;

export interface GateDirections {
  fit: GateFit;
  /** The texts of the data the threshold and the guarantee are counted on (not those it was fitted on). */
  rows: boolean[];
  fittedOn: string;
}

export interface FittedGate extends GateDirections {
  alpha: number;
  threshold: number;
  /** Per text of the data: whether the gate flags it (never accepted). */
  flagged: boolean[];
  /** Texts the threshold was chosen among. */
  n: number;
}

/**
 * The gate keeps the least-variance directions of a within-class covariance, and N distinct
 * texts in K labels give that covariance a rank of at most N - K (a repeated text adds no
 * direction). Below the features' width its least-variance directions are ones the fitted texts
 * never vary along, whatever --gate-dim keeps: only the ridge gives them a scale, so every new
 * in-distribution text lands far out on them and the gate scores noise (500 texts, 768 wide: a
 * threshold of 4e7 against 1.6e3, far AUROC 0.89 against 0.95). So the fit needs a full-rank
 * covariance, however few directions it keeps. `half`: the texts are --data's even-numbered ones.
 */
function enoughToFit(
  source: string,
  texts: number,
  distinct: number,
  labels: number,
  width: number,
  half: boolean,
  alike = 'distinct',
): void {
  if (distinct - labels >= width) return;
  const needed = width + labels;
  throw new DataError(
    source,
    undefined,
    `${source}: ${texts} texts${distinct < texts ? ` (${distinct} ${alike})` : ''} in ${labels} ` +
      `label${labels === 1 ? '' : 's'} cannot fit a gate on features ${width} wide: their within-class spread ` +
      `spans at most ${Math.max(0, distinct - labels)} directions, so its least-variance directions would be ones ` +
      `the texts never vary along; give at least ${needed} distinct texts ` +
      (half
        ? `(the gate fits on --data's even-numbered examples: --data of at least ${2 * needed} texts, or --gate-data)`
        : '(--gate-data: many more are better; the default model fits on the train split)'),
  );
}

/**
 * Fits the gate on `gateData` when given (then its threshold and the guarantee use all of the
 * data), else on a fixed half of the data (then they use the other half: the gate's fit never
 * meets the texts its guarantees are counted on).
 */
export async function fitGateDirections(
  classifier: Classifier<string, string>,
  data: LabelledData,
  labels: readonly number[],
  dim: number,
  gateData: string | undefined,
  onProgress?: (done: number, total: number) => void,
): Promise<GateDirections> {
  const width = classifier.info.model.featureWidth;
  if (width === 0) {
    throw new InvalidArgumentError(
      `--gate-alpha needs a model that returns its features; ${classifier.info.bundleDir}/model.pt returns none (export it with --features)`,
    );
  }
  const labelIndex = new Map(classifier.labels.map((l, i) => [l, i]));
  const source =
    gateData === undefined
      ? data
      : await readLabelled(gateData, classifier.labels, {
          maxTextLength: classifier.info.maxTextLength,
        });
  const rows = data.examples.map((_, i) => gateData !== undefined || i % 2 === 1);
  // Every other example (by position, not by line: blank lines are no examples): fixed, and
  // independent of the labels.
  const fitting = gateData === undefined ? data.examples.filter((_, i) => !rows[i]) : source.examples;
  const fitLabels =
    gateData === undefined
      ? labels.filter((_, i) => !rows[i])
      : source.examples.map((e) => labelIndex.get(e.label) as number);
  const name = gateData ?? `${data.file} (its even-numbered examples)`;
  const distinct = new Set(fitting.map((e, i) => `${fitLabels[i]}\u0000${e.text}`)).size;
  enoughToFit(name, fitting.length, distinct, new Set(fitLabels).size, width, gateData === undefined);
  const features = await featuresOf(
    classifier,
    fitting.map((e) => e.text),
    onProgress,
  );
  features.forEach((f, i) => {
    if (!f.every(Number.isFinite)) {
      throw new DataError(
        source.file,
        undefined,
        `${source.file} line ${fitting[i]?.line}: the model's features for this text hold NaN or infinite values`,
      );
    }
  });
  // Counted again on what the model saw: texts its tokenizer reads alike (case, spacing, a
  // character it drops) are one feature vector, and add no direction however many strings they are.
  // Compared to 4 significant digits of the vector's largest value: the same tokens in batches of
  // other lengths differ in the 7th (batched equals single within fp32 rounding, not bit for bit).
  const seen = new Set(
    features.map((f, i) => {
      const scale = f.reduce((m, x) => Math.max(m, Math.abs(x)), 0) || 1;
      return `${fitLabels[i]}:${Array.from(f, (x) => Math.round((x / scale) * 1e4)).join(',')}`;
    }),
  ).size;
  enoughToFit(
    name,
    fitting.length,
    seen,
    new Set(fitLabels).size,
    width,
    gateData === undefined,
    'distinct to the model: texts its tokenizer reads alike, as in case or spacing, give one feature vector',
  );
  const fit = fitGate(features, fitLabels, classifier.labels.length, dim);
  const fittedOn =
    gateData === undefined
      ? `${data.file}, its even-numbered examples (${fitting.length} texts)`
      : `${gateData} (${fitting.length} texts)`;
  if (!gateFitUsable(fit)) {
    throw new DataError(
      source.file,
      undefined,
      `the model's features of ${fittedOn} have too little spread to fit a gate of ${dim} directions ` +
        '(too few texts, or all alike): fit it on more, varied labelled texts (--gate-data)',
    );
  }
  return { fit, rows, fittedOn };
}

/** The fitted directions as a gate the engine can serve, its threshold not yet chosen (nothing flagged). */
export function candidateGate(directions: GateDirections): Gate {
  const { fit } = directions;
  return { ...fit, threshold: Number.POSITIVE_INFINITY, alpha: 1 };
}

/**
 * The split-conformal threshold among `served`, the engine's scores of the data with the
 * candidate gate; a NaN score (NaN features) is flagged, as decision.ts flags it.
 */
export function thresholdGate(
  directions: GateDirections,
  served: ArrayLike<number>,
  alpha: number,
  file: string,
): FittedGate {
  const { rows } = directions;
  const scores = Array.from(served);
  const counted = scores.filter((_, i) => rows[i]).map((s) => (Number.isNaN(s) ? Number.POSITIVE_INFINITY : s));
  const threshold = conformalThreshold(counted, alpha);
  if (!Number.isFinite(threshold)) {
    throw new DataError(file, undefined, `${counted.length} texts are too few for a gate at alpha ${alpha}`);
  }
  return {
    ...directions,
    alpha,
    threshold,
    flagged: scores.map((s) => !gatePasses(s, threshold)),
    n: counted.length,
  };
}

/** What calibration.json records of the gate (the file and its digest are added where it is written). */
export function gateRecord(gate: FittedGate): Omit<GateRecord, 'file' | 'sha256'> {
  return {
    kind: 'mahalanobis',
    directions: 'least within-class variance, whitened',
    dim: gate.fit.dim,
    width: gate.fit.width,
    alpha: gate.alpha,
    threshold: gate.threshold,
    fitted_on: gate.fittedOn,
    thresholded_on: gate.n,
    guarantee:
      `split conformal: at most a share ${gate.alpha} of in-distribution texts flagged ` +
      '(marginally, for texts exchangeable with the calibration data)',
  };
}
