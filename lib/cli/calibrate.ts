// bertgate calibrate: temperature, threshold(s) and their guarantee from labelled data,
// written to calibration.json (with a reliability diagram and a risk-coverage curve).

import { mkdir, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { calibrate, type CalibrateRequest } from '../calibration/calibrate.js';
import { readLabelled, type LabelledData } from '../calibration/data.js';
import { conformalThreshold, fitGate, gateFitUsable, gateScore, type GateFit } from '../calibration/gate.js';
import { featuresOf, logitsOf, servedMaxProbability } from '../calibration/logits.js';
import type { Predictions } from '../calibration/metrics.js';
import { fitTemperature } from '../calibration/temperature.js';
import { reliabilitySvg, riskCoverageSvg } from '../calibration/plots.js';
import { InsufficientDataError } from '../calibration/thresholds.js';
import { Classifier } from '../classifier.js';
import { DataError, InvalidArgumentError } from '../errors.js';
import { RUNTIME_FLAGS, classifierOptions } from './options.js';
import { progressBar } from './progress.js';

function share(flag: string, value: string | undefined, { allowOne = false } = {}): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!(n > 0 && (n < 1 || (allowOne && n === 1)))) {
    throw new InvalidArgumentError(
      `Expected --${flag} to be a number in (0, 1${allowOne ? ']' : ')'}, got ${JSON.stringify(value)}`,
    );
  }
  return n;
}

export async function calibrateCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...RUNTIME_FLAGS,
      data: { type: 'string' },
      'target-accuracy': { type: 'string' },
      delta: { type: 'string' },
      coverage: { type: 'string' },
      'per-label': { type: 'boolean' },
      'gate-alpha': { type: 'string' },
      'gate-dim': { type: 'string' },
      'gate-data': { type: 'string' },
      out: { type: 'string' },
    },
    strict: true,
  });
  if (!values.data) throw new InvalidArgumentError('Expected --data FILE.jsonl (labelled {"text", "label"} lines)');
  const request: CalibrateRequest = {};
  const target = share('target-accuracy', values['target-accuracy']);
  const delta = share('delta', values.delta);
  const coverage = share('coverage', values.coverage, { allowOne: true });
  if (coverage !== undefined && (target !== undefined || delta !== undefined)) {
    throw new InvalidArgumentError('Give either --coverage, or --target-accuracy (with --delta), not both');
  }
  if (coverage !== undefined && values['per-label']) {
    throw new InvalidArgumentError('--per-label goes with --target-accuracy (a guarantee per label), not --coverage');
  }
  if (target !== undefined) request.targetAccuracy = target;
  if (delta !== undefined) request.delta = delta;
  if (coverage !== undefined) request.coverage = coverage;
  if (values['per-label']) request.perLabel = true;
  const gateAlpha = share('gate-alpha', values['gate-alpha']);
  const gateDim = values['gate-dim'] === undefined ? DEFAULT_GATE_DIM : Number(values['gate-dim']);
  if (!(Number.isInteger(gateDim) && gateDim >= 1 && gateDim <= 4096)) {
    throw new InvalidArgumentError(
      `Expected --gate-dim to be an integer in [1, 4096], got ${JSON.stringify(values['gate-dim'])}`,
    );
  }
  if (gateAlpha === undefined && (values['gate-dim'] !== undefined || values['gate-data'] !== undefined)) {
    throw new InvalidArgumentError('--gate-dim and --gate-data go with --gate-alpha (the gate they fit)');
  }

  const { bundle, options } = classifierOptions(values);
  // --out is checked, and made, before the passes over the data: a long calibration must not
  // end in a raw EEXIST, nor write a calibration into another model's bundle.
  if (values.out !== undefined) await checkOut(values.out, bundle);
  // What an earlier calibration left (its gate, its drift reference) plays no part in this one.
  const fresh = { ...options, gate: false, drift: false } as const;
  const classifier = await Classifier.load(bundle, fresh);
  let predictions: Predictions;
  let data: LabelledData;
  let gate:
    { fit: GateFit; threshold: number; rows: boolean[]; flagged: boolean[]; fittedOn: string; n: number } | undefined;
  try {
    data = await readLabelled(values.data, classifier.labels);
    const logits = await logitsOf(
      classifier,
      data.examples.map((e) => e.text),
      progressBar('logits'),
    );
    const labelIndex = new Map(classifier.labels.map((l, i) => [l, i]));
    predictions = { logits, labels: data.examples.map((e) => labelIndex.get(e.label) as number) };
    if (gateAlpha !== undefined) {
      gate = await fitGateFor(
        classifier,
        data,
        predictions.labels,
        gateAlpha,
        gateDim,
        values['gate-data'],
        labelIndex,
      );
    }
  } finally {
    await classifier.close();
  }
  // The thresholds go on what the classifier will serve: its own pass at the fitted temperature.
  const temperature = fitTemperature(predictions);
  const serving = await Classifier.load(bundle, { ...fresh, temperature, threshold: 0, topK: 1 });
  let served: Float64Array;
  try {
    served = await servedMaxProbability(
      serving,
      data.examples.map((e) => e.text),
      progressBar('served'),
    );
  } finally {
    await serving.close();
  }
  let outcome;
  try {
    outcome = calibrate(
      predictions,
      serving.labels,
      request,
      { file: values.data, sha256: data.sha256 },
      {
        temperature,
        maxProbability: served,
      },
      gate ? { rows: gate.rows, flagged: gate.flagged } : {},
    );
  } catch (error) {
    if (error instanceof InsufficientDataError) throw new DataError(values.data, undefined, error.message);
    throw error;
  }

  const out = values.out ?? bundle;
  await mkdir(out, { recursive: true });
  if (gate) {
    outcome.file.gate = {
      kind: 'mahalanobis',
      directions: 'least within-class variance, whitened',
      dim: gate.fit.dim,
      width: gate.fit.width,
      alpha: gateAlpha as number,
      threshold: gate.threshold,
      file: 'gate.bin',
      fitted_on: gate.fittedOn,
      thresholded_on: gate.n,
      guarantee: `split conformal: at most a share ${gateAlpha} of in-distribution texts flagged (marginally, for texts exchangeable with the calibration data)`,
    };
    if (outcome.file.guarantee.kind === 'selective-risk') {
      outcome.file.guarantee.method +=
        "; on the texts the gate does not flag, which are never accepted: the guarantee is the combined rule's";
    }
    const bytes = new Float32Array(gate.fit.projection.length + gate.fit.centres.length);
    bytes.set(gate.fit.projection);
    bytes.set(gate.fit.centres, gate.fit.projection.length);
    await writeFile(join(out, 'gate.bin'), Buffer.from(bytes.buffer));
  } else {
    await rm(join(out, 'gate.bin'), { force: true }); // a gate of an earlier calibration would not fit this one
  }
  await writeFile(join(out, 'calibration.json'), JSON.stringify(outcome.file, null, 2) + '\n');
  await writeFile(
    join(out, 'reliability.svg'),
    reliabilitySvg(outcome.binsBefore, outcome.binsAfter, outcome.file.temperature),
  );
  const g = outcome.file.guarantee;
  const chosenRisk = g.kind === 'selective-risk' ? g.errors / g.accepted : undefined;
  await writeFile(
    join(out, 'risk-coverage.svg'),
    riskCoverageSvg(outcome.curve, chosenRisk === undefined ? undefined : { coverage: g.coverage, risk: chosenRisk }),
  );

  const { before, after, mapped } = outcome.file.figures;
  const f = (v: number): string => v.toFixed(4);
  const lines = [
    `${outcome.file.data.n} examples from ${values.data}; temperature ${outcome.file.temperature.toFixed(4)}`,
    '',
    '| figure | before (T = 1) | after temperature | after the confidence map |',
    '| --- | --- | --- | --- |',
    `| accuracy | ${f(before.accuracy)} | ${f(after.accuracy)} | ${f(after.accuracy)} |`,
    `| NLL | ${f(before.nll)} | ${f(after.nll)} | (a top-label map) |`,
    `| Brier | ${f(before.brier)} | ${f(after.brier)} | (a top-label map) |`,
    `| ECE (15 bins) | ${f(before.ece)} | ${f(after.ece)} | ${f(mapped.ece)} |`,
    `| MCE (15 bins) | ${f(before.mce)} | ${f(after.mce)} | ${f(mapped.mce)} |`,
    '',
    `AURC ${f(outcome.file.figures.aurc)}, E-AURC ${f(outcome.file.figures.e_aurc)}`,
    g.kind === 'selective-risk'
      ? `${outcome.file.thresholds ? 'per-label thresholds' : `threshold ${f(outcome.file.threshold)}`} on the calibrated ` +
        `confidence: accepts ${(g.coverage * 100).toFixed(1)}% (${g.accepted}), ${g.errors} errors; selective risk ` +
        `<= ${f(g.bound)} <= ${f(g.risk)} with probability >= ${1 - g.delta}` +
        `${outcome.file.thresholds ? ' for every accepted label' : ''}, i.e. accuracy on accepted >= ${f(g.target_accuracy)}`
      : `threshold ${f(outcome.file.threshold)} on the calibrated confidence: accepts ${(g.coverage * 100).toFixed(1)}% (no guarantee)`,
    ...(outcome.file.thresholds
      ? [
          `per-label thresholds certified for ${Object.values(outcome.file.thresholds).filter((t) => t !== null).length} ` +
            `of ${Object.keys(outcome.file.thresholds).length} labels; the others are never accepted (their texts go to "Other")`,
        ]
      : []),
    `wrote ${join(out, 'calibration.json')}, reliability.svg, risk-coverage.svg`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

/** Directions the gate keeps by default: fp32 numbers for 128 x 384 + 50 x 128 fit the bundle budget. */
const DEFAULT_GATE_DIM = 128;

/**
 * Fits the gate on --gate-data when given (then its threshold and the guarantee use all of
 * --data), else on a fixed half of --data (then its threshold and the guarantee use the other
 * half: the gate's fit never meets the texts its guarantees are counted on).
 */
/** --out: a directory (made if missing) that holds no other bundle's model.pt. */
async function checkOut(out: string, bundle: string): Promise<void> {
  if (out === '') throw new InvalidArgumentError('Expected --out to be a directory, got ""');
  try {
    await mkdir(out, { recursive: true });
  } catch (error) {
    throw new InvalidArgumentError(`--out ${out} cannot be made a directory: ${(error as Error).message}`);
  }
  const info = await stat(out);
  if (!info.isDirectory()) throw new InvalidArgumentError(`--out ${out} is not a directory`);
  const model = join(out, 'model.pt');
  const theirs = await realpath(model).catch(() => undefined);
  if (theirs !== undefined && theirs !== (await realpath(join(bundle, 'model.pt')).catch(() => undefined))) {
    throw new InvalidArgumentError(
      `--out ${out} holds another bundle's model.pt: a calibration written there would be read with a model it ` +
        'was not fitted for; give an empty directory, or the model directory itself',
    );
  }
}

/** A within-class covariance from fewer texts than directions kept is singular along the rest. */
function enoughToFit(source: string, texts: number, dim: number): void {
  if (texts <= dim) {
    throw new DataError(
      source,
      undefined,
      `${source}: ${texts} texts cannot fit a gate of ${dim} directions (it needs more texts than directions; ` +
        'lower --gate-dim or give more --gate-data)',
    );
  }
}

async function fitGateFor(
  classifier: Classifier<string, string>,
  data: LabelledData,
  labels: number[],
  alpha: number,
  dim: number,
  gateData: string | undefined,
  labelIndex: Map<string, number>,
): Promise<{ fit: GateFit; threshold: number; rows: boolean[]; flagged: boolean[]; fittedOn: string; n: number }> {
  if (classifier.info.model.featureWidth === 0) {
    throw new InvalidArgumentError(
      `--gate-alpha needs a model that returns its features; ${classifier.info.bundleDir}/model.pt returns none (export it with --features)`,
    );
  }
  const features = await featuresOf(
    classifier,
    data.examples.map((e) => e.text),
    progressBar('features'),
  );
  features.forEach((f, i) => {
    if (!f.every(Number.isFinite)) {
      throw new DataError(
        data.file,
        undefined,
        `${data.file}: the model's features for example ${i + 1} (${JSON.stringify(data.examples[i]?.text.slice(0, 40))}) hold NaN or infinite values`,
      );
    }
  });
  let fit: GateFit;
  let rows: boolean[];
  let fittedOn: string;
  if (gateData) {
    const other = await readLabelled(gateData, classifier.labels);
    const fitFeatures = await featuresOf(
      classifier,
      other.examples.map((e) => e.text),
      progressBar('gate data'),
    );
    enoughToFit(gateData, other.examples.length, Math.min(dim, classifier.info.model.featureWidth));
    fit = fitGate(
      fitFeatures,
      other.examples.map((e) => labelIndex.get(e.label) as number),
      classifier.labels.length,
      dim,
    );
    rows = data.examples.map(() => true);
    fittedOn = `${gateData} (${other.examples.length} texts)`;
  } else {
    // Every other text, in file order: fixed, and independent of the labels.
    rows = data.examples.map((_, i) => i % 2 === 1);
    const half = features.filter((_, i) => !rows[i]);
    enoughToFit(`${data.file} (its even lines)`, half.length, Math.min(dim, classifier.info.model.featureWidth));
    fit = fitGate(
      half,
      labels.filter((_, i) => !rows[i]),
      classifier.labels.length,
      dim,
    );
    fittedOn = `${data.file}, its even lines (${half.length} texts)`;
  }
  if (!gateFitUsable(fit)) {
    const source = gateData ?? data.file;
    throw new DataError(
      source,
      undefined,
      `the model's features of ${fittedOn} have too little spread to fit a gate of ${dim} directions ` +
        '(too few texts, or all alike): fit it on more, varied labelled texts (--gate-data)',
    );
  }
  const scores = features.map((f) => gateScore(fit, f));
  const threshold = conformalThreshold(
    scores.filter((_, i) => rows[i]),
    alpha,
  );
  if (!Number.isFinite(threshold)) {
    throw new DataError(
      data.file,
      undefined,
      `${rows.filter(Boolean).length} texts are too few for a gate at alpha ${alpha}`,
    );
  }
  return { fit, threshold, rows, flagged: scores.map((s) => s > threshold), fittedOn, n: rows.filter(Boolean).length };
}
