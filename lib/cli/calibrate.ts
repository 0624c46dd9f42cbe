// bertgate calibrate: temperature, threshold(s) and their guarantee from labelled data,
// written to calibration.json (with a reliability diagram and a risk-coverage curve).

import { mkdir, realpath, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { calibrate, type CalibrateRequest } from '../calibration/calibrate.js';
import { readLabelled, type LabelledData } from '../calibration/data.js';
import { assertWritable, writeCalibration, type CalibrationFile } from '../calibration/file.js';
import {
  DEFAULT_GATE_DIM,
  candidateGate,
  fitGateDirections,
  gateRecord,
  thresholdGate,
  type FittedGate,
  type GateDirections,
} from '../calibration/fit-gate.js';
import { logitsOf, servedScores } from '../calibration/logits.js';
import type { Predictions } from '../calibration/metrics.js';
import { fitTemperature } from '../calibration/temperature.js';
import { reliabilitySvg, riskCoverageSvg } from '../calibration/plots.js';
import { InsufficientDataError } from '../calibration/thresholds.js';
import { modelSha256, readBundle } from '../bundle.js';
import { loadForCalibration } from '../classifier.js';
import { BundleError, DataError, InvalidArgumentError } from '../errors.js';
import { RUNTIME_FLAGS, classifierOptions, integer } from './options.js';
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
  const gateDim = integer('gate-dim', values['gate-dim'], DEFAULT_GATE_DIM, 1, 4096);
  if (gateAlpha === undefined && (values['gate-dim'] !== undefined || values['gate-data'] !== undefined)) {
    throw new InvalidArgumentError('--gate-dim and --gate-data go with --gate-alpha (the gate they fit)');
  }

  const { bundle, options } = classifierOptions(values);
  // --out is checked, and made, before the passes over the data: a long calibration must not
  // end in a raw EEXIST, nor write a calibration into another model's bundle.
  if (values.out !== undefined) await checkOut(values.out, bundle);
  await assertWritable(values.out ?? bundle);
  // The model.pt the passes run on, bound into calibration.json; taken again after them, so a
  // model swapped in meanwhile is refused rather than recorded as the one fitted.
  const modelDigest = async (): Promise<string> =>
    (
      (await modelSha256(bundle, (await readBundle(bundle, { calibration: false })).manifest, true)) as {
        sha256: string;
      }
    ).sha256;
  const fittedOn = await modelDigest();
  const classifier = await loadForCalibration(bundle, options);
  let predictions: Predictions;
  let data: LabelledData;
  let directions: GateDirections | undefined;
  try {
    data = await readLabelled(values.data, classifier.labels, { maxTextLength: classifier.info.maxTextLength });
    const logits = await logitsOf(
      classifier,
      data.examples.map((e) => e.text),
      progressBar('logits'),
    );
    const labelIndex = new Map(classifier.labels.map((l, i) => [l, i]));
    predictions = { logits, labels: data.examples.map((e) => labelIndex.get(e.label) as number) };
    if (gateAlpha !== undefined) {
      directions = await fitGateDirections(
        classifier,
        data,
        predictions.labels,
        gateDim,
        values['gate-data'],
        progressBar('gate features'),
      );
    }
  } finally {
    await classifier.close();
  }
  // The thresholds (and the gate's) go on what the classifier will serve: its own pass at the
  // fitted temperature, with the fitted gate.
  const temperature = fitTemperature(predictions);
  const serving = await loadForCalibration(
    bundle,
    { ...options, temperature, threshold: 0, topK: 1 },
    directions && candidateGate(directions),
  );
  let served;
  try {
    served = await servedScores(
      serving,
      data.examples.map((e) => e.text),
      progressBar('served'),
    );
  } finally {
    await serving.close();
  }
  const gate = directions && thresholdGate(directions, served.ood, gateAlpha as number, values.data);
  let outcome;
  try {
    outcome = calibrate(
      predictions,
      serving.labels,
      request,
      { file: values.data, sha256: data.sha256 },
      { temperature, maxProbability: served.maxProbability },
      gate ? { rows: gate.rows, flagged: gate.flagged } : {},
    );
  } catch (error) {
    if (error instanceof InsufficientDataError) throw new DataError(values.data, undefined, error.message);
    throw error;
  }

  if ((await modelDigest()) !== fittedOn) {
    throw new BundleError(
      'model.pt',
      undefined,
      `${join(bundle, 'model.pt')} changed while calibrate ran (SHA-256 ${fittedOn} before its passes): ` +
        'nothing was written; calibrate again once the bundle is settled',
    );
  }
  const out = values.out ?? bundle;
  await mkdir(out, { recursive: true });
  // Bound to the model.pt it was fitted on: another model's bundle refuses it at load.
  const file = { ...outcome.file, model: { file: 'model.pt' as const, sha256: fittedOn } };
  await writeCalibration(out, file, gate ? { record: gateRecord(gate), fit: gate.fit } : undefined);
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
    smoothingLine(outcome.file.figures.map_smoothing),
    g.kind === 'selective-risk'
      ? `${outcome.file.thresholds ? 'per-label thresholds' : `threshold ${f(outcome.file.threshold)}`} on the calibrated ` +
        `confidence: accepts ${(g.coverage * 100).toFixed(1)}% (${g.accepted}), ${g.errors} errors; selective risk ` +
        `<= ${f(g.bound)} <= ${f(g.risk)} with probability >= ${1 - g.delta}` +
        `${outcome.file.thresholds ? ' for every accepted label' : ''}, i.e. accuracy on accepted >= ${f(g.target_accuracy)}`
      : `threshold ${f(outcome.file.threshold)} on the calibrated confidence: accepts ${(g.coverage * 100).toFixed(1)}% (no guarantee)` +
        // Many texts share a confidence where the map is flat: no threshold splits them.
        (g.coverage > g.requested + 0.005
          ? `; warning: --coverage ${g.requested} was asked for, but ${(g.coverage * 100).toFixed(1)}% of the texts ` +
            'have a confidence at or above the lowest threshold that accepts that many (ties where the confidence map is flat)'
          : ''),
    ...(outcome.file.thresholds
      ? [
          `per-label thresholds certified for ${Object.values(outcome.file.thresholds).filter((t) => t !== null).length} ` +
            `of ${Object.keys(outcome.file.thresholds).length} labels; the others are never accepted (their texts go to "Other")`,
        ]
      : []),
    ...(gate ? [gateLine(gate)] : []),
    `wrote ${join(out, 'calibration.json')}, reliability.svg, risk-coverage.svg`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

/** What the fitted gate keeps and flags: a --gate-dim past the width keeps every direction, said here. */
function gateLine(gate: FittedGate): string {
  const { dim, width } = gate.fit;
  const counted = gate.flagged.filter((_, i) => gate.rows[i]);
  const flagged = counted.filter(Boolean).length;
  return (
    `gate: ${dim === width ? `every direction (${width})` : `${dim} of ${width} directions`} of the features, ` +
    `fitted on ${gate.fittedOn}; threshold ${gate.threshold.toPrecision(6)} flags ` +
    `${((100 * flagged) / counted.length).toFixed(1)}% (${flagged} of ${counted.length}) of the texts it was ` +
    `chosen on (alpha ${gate.alpha})`
  );
}

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

// The map's smoothing and what the folds said of it: the held-out ECE is the honest one (the
// table's mapped ECE is on the texts the map was fitted on).
function smoothingLine(s: CalibrationFile['figures']['map_smoothing']): string {
  if (!s) return '';
  const chosen = s.cv.find((c) => c.min_block === s.min_block);
  const plain = s.cv.find((c) => c.min_block === 1);
  const f = (v: number | undefined): string => (v === undefined ? '?' : v.toFixed(4));
  return (
    `confidence map: blocks of >= ${s.min_block} texts, chosen by ${s.folds}-fold cross-validation on this split ` +
    `(held-out Brier ${f(chosen?.brier)}, ECE ${f(chosen?.ece)}; plain isotonic ${f(plain?.brier)}, ${f(plain?.ece)})`
  );
}
