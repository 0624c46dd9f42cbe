/**
 * calibration.json and gate.bin, the two files calibrate writes into a bundle: their schema,
 * their limits, reading and writing. The one owner of both formats: bundle.ts reads through
 * here, the calibrate command writes through here.
 *
 * gate.bin is bound to the calibration.json beside it by its SHA-256 (recorded in "gate"), so
 * another calibration's gate.bin of the same size is refused, not served. Both are written to
 * a temporary name and renamed into place, gate.bin first: an interrupted write leaves either
 * the old pair, or a new gate.bin the old calibration.json's digest refuses; never a mix served.
 */

import { createHash, randomBytes } from 'node:crypto';
import { lstat, rename, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';

import { readBundleBytes, readBundleJson } from '../bundle-io.js';
import { isConfidenceMap, type ConfidenceMap } from '../confidence-map.js';
import { DRIFT_BINS, type DriftReference } from '../drift.js';
import { BundleError } from '../errors.js';
import { isPlainObject, temperatureProblem } from '../validate.js';
import { GATE_MAX_THRESHOLD, GATE_MAX_VALUE, type GateFit } from './gate.js';
import type { Guarantee } from './thresholds.js';

export const CALIBRATION_FILE = 'calibration.json';
export const GATE_FILE = 'gate.bin';

export interface Figures {
  accuracy: number;
  nll: number;
  brier: number;
  ece: number;
  mce: number;
}

/** calibration.json as calibrate writes it. */
export interface CalibrationFile {
  format: 1;
  temperature: number;
  /** The thresholds apply to the max probability through `map`. */
  score: 'calibrated_max_probability';
  map: ConfidenceMap;
  threshold: number;
  /** Per label; null: no threshold was certified, the label is never accepted. */
  thresholds?: Record<string, number | null>;
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
    | {
        kind: 'coverage';
        /** The share accepted, which may exceed the one asked for where many texts share a confidence. */
        coverage: number;
        requested: number;
        n: number;
      };
  figures: {
    before: Figures;
    after: Figures;
    /** ECE and MCE of the confidence the map gives (what the thresholds are on). */
    mapped: { ece: number; mce: number };
    /**
     * The map's smallest block, chosen by cross-validation on this split (calibration/
     * smoothing.ts), with each size's held-out Brier score and ECE. Absent from files written
     * before it existed, whose maps pooled without a floor.
     */
    map_smoothing?: { min_block: number; folds: number; cv: Array<{ min_block: number; brier: number; ece: number }> };
    aurc: number;
    e_aurc: number;
    bins: number;
  };
  data: { file: string; sha256: string; n: number };
  /**
   * The model.pt this calibration was fitted on, by SHA-256: its temperature, thresholds and gate
   * are that model's, and a bundle whose model.pt is another refuses them. Absent from files
   * written before it existed, which load unchecked.
   */
  model?: { file: 'model.pt'; sha256: string };
  created: string;
  /** The out-of-distribution gate, when calibrate fitted one (its numbers in gate.bin). */
  gate?: GateRecord;
  /** For the drift alarm (lib/drift.ts): the calibration texts' served max probabilities, counted by bin. */
  drift: { score: 'served_max_probability'; bins: number; counts: number[] };
}

export interface GateRecord {
  kind: 'mahalanobis';
  directions: string;
  dim: number;
  width: number;
  alpha: number;
  /** Among the engine's fp32 scores of the calibration texts: a served score above it is flagged. */
  threshold: number;
  file: typeof GATE_FILE;
  /** Of gate.bin: binds it to this calibration. */
  sha256: string;
  fitted_on: string;
  thresholded_on: number;
  guarantee: string;
}

/** An out-of-distribution gate as a loaded bundle holds it. */
export interface Gate {
  dim: number;
  width: number;
  /** A text whose score is above this is flagged (gatePasses in decision.ts). */
  threshold: number;
  /** At most this share of in-distribution texts is flagged. */
  alpha: number;
  /** [dim, width] then [classes, dim], from gate.bin. */
  projection: Float32Array;
  centres: Float32Array;
}

/** What a loaded bundle takes from calibration.json (and gate.bin). */
export interface Calibration {
  temperature?: number;
  /** The top-label confidence map the thresholds apply through (calibrated_max_probability). */
  map?: ConfidenceMap;
  threshold?: number;
  /** Per label; null: the label is never accepted (calibrate certified no threshold for it). */
  thresholds?: ReadonlyMap<string, number | null>;
  /** What `bertgate calibrate` recorded about the threshold: kept as written, for reporting. */
  guarantee?: Record<string, unknown>;
  /** The calibration texts' served scores, which the drift alarm compares live texts with. */
  drift?: DriftReference;
  /** The out-of-distribution gate, its numbers read from gate.bin. */
  gate?: Gate;
  /** gate.bin's SHA-256 as calibration.json records it. */
  gateSha256?: string;
  /** The SHA-256 of the model.pt it was fitted on, where calibration.json records it. */
  modelSha256?: string;
}

const SHA256 = /^[0-9a-f]{64}$/;

/** calibrate's guarantee nests per_label -> label -> figures. */
const GUARANTEE_DEPTH = 4;

/** Whether a parsed JSON value nests at most `levels` objects or arrays deep. */
function shallow(value: unknown, levels: number): boolean {
  if (typeof value !== 'object' || value === null) return true;
  if (levels === 0) return false;
  return Object.values(value).every((v) => shallow(v, levels - 1));
}

function fail(field: string | undefined, message: string): never {
  throw new BundleError(CALIBRATION_FILE, field, `${CALIBRATION_FILE}: ${message}`);
}

const isShare = (x: unknown): x is number => typeof x === 'number' && x >= 0 && x <= 1;

function parseThresholds(per: unknown, labels: readonly string[]): Map<string, number | null> {
  if (!isPlainObject(per)) fail('thresholds', '"thresholds" must map labels to numbers');
  const out = new Map<string, number | null>();
  for (const [label, q] of Object.entries(per)) {
    if (!labels.includes(label)) {
      fail('thresholds', `"thresholds" names ${JSON.stringify(label)}, which is not a label of this model`);
    }
    if (q !== null && !isShare(q)) {
      fail(
        'thresholds',
        `"thresholds.${label}" must be a number in [0, 1], or null (never accepted), got ${JSON.stringify(q)}`,
      );
    }
    out.set(label, q);
  }
  return out;
}

function parseGate(g: unknown): { gate: Gate; sha256: string } {
  const positive = (x: unknown): x is number => Number.isInteger(x) && (x as number) > 0 && (x as number) <= 65536;
  if (
    !isPlainObject(g) ||
    g['kind'] !== 'mahalanobis' ||
    !positive(g['dim']) ||
    !positive(g['width']) ||
    // A squared distance: a negative threshold would flag every text, one past fp32's range none.
    !(typeof g['threshold'] === 'number' && g['threshold'] >= 0 && g['threshold'] <= GATE_MAX_THRESHOLD) ||
    !(typeof g['alpha'] === 'number' && g['alpha'] > 0 && g['alpha'] < 1) ||
    g['file'] !== GATE_FILE ||
    typeof g['sha256'] !== 'string' ||
    !SHA256.test(g['sha256'])
  ) {
    fail(
      'gate',
      `"gate" must be calibrate's { kind: "mahalanobis", dim, width, threshold (a distance from 0 to the largest fp32), ` +
        `alpha (in (0, 1)), file: "${GATE_FILE}", sha256 (of ${GATE_FILE}) }; re-run bertgate calibrate to write one`,
    );
  }
  // The numbers arrive from gate.bin in readCalibration.
  return {
    gate: {
      dim: g['dim'] as number,
      width: g['width'] as number,
      threshold: g['threshold'] as number,
      alpha: g['alpha'] as number,
      projection: new Float32Array(0),
      centres: new Float32Array(0),
    },
    sha256: g['sha256'] as string,
  };
}

function parseDrift(value: Record<string, unknown>, coverage: unknown): DriftReference {
  const drift = value['drift'];
  const counts = isPlainObject(drift) ? drift['counts'] : undefined;
  const countsOk =
    Array.isArray(counts) &&
    counts.length === DRIFT_BINS &&
    counts.every((x) => Number.isSafeInteger(x) && (x as number) >= 0) &&
    Number.isSafeInteger((counts as number[]).reduce((s, x) => s + x, 0)) &&
    counts.some((x) => (x as number) > 0);
  if (!countsOk || !isShare(coverage)) {
    fail(
      'drift',
      `"drift" must hold "counts", the calibration texts' max probabilities counted in ${DRIFT_BINS} bins ` +
        `(whole numbers summing to at most ${Number.MAX_SAFE_INTEGER}), beside a guarantee with its "coverage" (in [0, 1])`,
    );
  }
  const data = value['data'];
  const sha = isPlainObject(data) && typeof data['sha256'] === 'string' ? data['sha256'] : 'unknown';
  return { counts: counts as number[], coverage, id: `${sha}@${String(value['created'] ?? '')}` };
}

/** calibration.json's content, checked against the model's labels (its gate's numbers not yet read). */
export function parseCalibration(value: unknown, labels: readonly string[]): Calibration {
  if (!isPlainObject(value)) fail(undefined, 'must hold a JSON object');
  const calibration: Calibration = {};
  if (value['format'] !== undefined && value['format'] !== 1) {
    fail('format', `"format" ${JSON.stringify(value['format'])} is not one this version reads (1)`);
  }
  const score = value['score'];
  if (score !== undefined && score !== 'max_probability' && score !== 'calibrated_max_probability') {
    fail(
      'score',
      `"score" ${JSON.stringify(score)} is not supported; thresholds apply to "max_probability" ` +
        'or "calibrated_max_probability"',
    );
  }
  if (score === 'calibrated_max_probability') {
    // Without its map the thresholds would apply to another scale: never silently.
    if (!isConfidenceMap(value['map'])) {
      fail(
        'map',
        '"score" is "calibrated_max_probability", so "map" must be its isotonic map ' +
          '({ kind: "isotonic", x, y }: knots increasing in [0, 1], values in [0, 1])',
      );
    }
    calibration.map = value['map'];
  }
  const t = value['temperature'];
  if (t !== undefined) {
    const problem = temperatureProblem(t);
    if (problem) fail('temperature', `"temperature" must be ${problem}, got ${JSON.stringify(t)}`);
    calibration.temperature = t as number;
  }
  const p = value['threshold'];
  if (p !== undefined) {
    if (!isShare(p)) fail('threshold', `"threshold" must be a number in [0, 1], got ${JSON.stringify(p)}`);
    calibration.threshold = p;
  }
  if (value['thresholds'] !== undefined) calibration.thresholds = parseThresholds(value['thresholds'], labels);
  const guarantee = value['guarantee'];
  if (guarantee !== undefined) {
    // Reported as written (info.guarantee, /stats): an object of calibrate's shape, not a
    // structure so deep that serialising it overflows the stack.
    if (!isPlainObject(guarantee) || !shallow(guarantee, GUARANTEE_DEPTH)) {
      fail(
        'guarantee',
        `"guarantee" must be an object nested at most ${GUARANTEE_DEPTH} levels deep, as calibrate writes it`,
      );
    }
    if (guarantee['coverage'] !== undefined && !isShare(guarantee['coverage'])) {
      fail('guarantee', `"guarantee.coverage" must be a share in [0, 1], got ${JSON.stringify(guarantee['coverage'])}`);
    }
    calibration.guarantee = guarantee;
  }
  if (value['gate'] !== undefined) {
    const { gate, sha256 } = parseGate(value['gate']);
    calibration.gate = gate;
    calibration.gateSha256 = sha256;
  }
  if (value['drift'] !== undefined) calibration.drift = parseDrift(value, calibration.guarantee?.['coverage']);
  const model = value['model'];
  if (model !== undefined) {
    if (
      !isPlainObject(model) ||
      model['file'] !== 'model.pt' ||
      typeof model['sha256'] !== 'string' ||
      !SHA256.test(model['sha256'])
    ) {
      fail(
        'model',
        `"model" must be { "file": "model.pt", "sha256": its SHA-256 in lowercase hex }, as calibrate writes it`,
      );
    }
    calibration.modelSha256 = model['sha256'] as string;
  }
  return calibration;
}

/**
 * A bundle's calibration.json, or null without one. `gate: false`: gate.bin is not read (the
 * gate's projection and centres stay empty), so a caller that turned the gate off does not
 * depend on that file. `featureWidth`: the width bundle.json says model.pt returns, if it says.
 * `modelSha256`: the bundle's model.pt digest (null: not known without hashing, which the
 * caller skips), compared with the one calibrate recorded before anything of the gate is
 * checked, since another model's gate would fail those checks with the wrong advice.
 */
export async function readCalibration(
  dir: string,
  labels: readonly string[],
  options: {
    gate: boolean;
    featureWidth: number | null | undefined;
    modelSha256: () => Promise<{ sha256: string; from: string } | null>;
  },
): Promise<Calibration | null> {
  const value = await readBundleJson(dir, CALIBRATION_FILE, false);
  if (value === null) return null;
  const calibration = parseCalibration(value, labels);
  if (calibration.modelSha256 !== undefined) {
    const actual = await options.modelSha256();
    if (actual !== null && actual.sha256 !== calibration.modelSha256) {
      throw new BundleError(
        CALIBRATION_FILE,
        'model',
        `${join(dir, CALIBRATION_FILE)} was fitted on a model.pt with SHA-256 ${calibration.modelSha256}, but this ` +
          `bundle's model.pt has ${actual.sha256} (${actual.from}): its temperature, thresholds and gate belong to ` +
          'another model; calibrate this one (bertgate calibrate), or restore its own calibration.json and gate.bin',
      );
    }
  }
  if (calibration.gate && options.gate) {
    await readGate(dir, calibration.gate, calibration.gateSha256 as string, labels.length, options.featureWidth);
  }
  return calibration;
}

/**
 * gate.bin: the gate's projection [dim, width] then its class centres [classes, dim], fp32
 * little-endian, as calibrate wrote them; checked against calibration.json and bundle.json.
 */
async function readGate(
  dir: string,
  gate: Gate,
  sha256: string,
  classes: number,
  featureWidth: number | null | undefined,
): Promise<void> {
  const path = join(dir, GATE_FILE);
  const bytes = await readBundleBytes(dir, GATE_FILE, false);
  if (bytes === null) {
    throw new BundleError(
      GATE_FILE,
      undefined,
      `${CALIBRATION_FILE} has an out-of-distribution gate, but ${path} is missing`,
    );
  }
  const { dim, width } = gate;
  const expected = (dim * width + classes * dim) * 4;
  if (bytes.length !== expected) {
    throw new BundleError(
      GATE_FILE,
      undefined,
      `${GATE_FILE} is ${bytes.length} bytes; a gate of ${dim} directions over ${width}-wide features for ${classes} labels is ${expected}`,
    );
  }
  const actual = createHash('sha256').update(bytes).digest('hex');
  if (actual !== sha256) {
    throw new BundleError(
      GATE_FILE,
      undefined,
      `${path} has SHA-256 ${actual}, but ${CALIBRATION_FILE} "gate" says ${sha256}: it is another calibration's ` +
        'gate (or was changed); re-run bertgate calibrate',
    );
  }
  const floats = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  // Non-finite numbers, or ones so large that the engine's fp32 products and squares could
  // overflow (GATE_MAX_VALUE).
  const bad = floats.findIndex((x) => !(Math.abs(x) <= GATE_MAX_VALUE));
  if (bad >= 0) {
    throw new BundleError(
      GATE_FILE,
      undefined,
      `${path} holds ${Number.isFinite(floats[bad]) ? 'a number too large for the gate' : 'a non-finite number'} ` +
        `(${floats[bad]} at float ${bad}): a ${GATE_FILE} calibrate wrote holds none beyond ${GATE_MAX_VALUE}`,
    );
  }
  gate.projection = floats.subarray(0, dim * width);
  gate.centres = floats.subarray(dim * width);
  if (featureWidth !== undefined && featureWidth !== width) {
    throw new BundleError(
      CALIBRATION_FILE,
      'gate',
      `${CALIBRATION_FILE} has an out-of-distribution gate fitted on ${width}-wide features, but ` +
        'bundle.json says model.pt returns ' +
        (featureWidth === null ? 'no features (export it with --features)' : `${featureWidth}-wide features`),
    );
  }
}

/**
 * That calibrate can write its files into `dir`: each of calibration.json and gate.bin absent
 * or a regular file. Checked before the passes over the data, not found out after them.
 */
export async function assertWritable(dir: string): Promise<void> {
  for (const file of [CALIBRATION_FILE, GATE_FILE]) {
    const path = join(dir, file);
    const info = await lstat(path).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return null;
      throw new BundleError(file, undefined, `${path} cannot be written: ${error.message}`, { cause: error });
    });
    if (info !== null && !info.isFile()) {
      throw new BundleError(
        file,
        undefined,
        `${path} is not a regular file: calibrate writes ${CALIBRATION_FILE} and ${GATE_FILE} there; remove it, or give --out`,
      );
    }
  }
}

/** gate.bin's bytes: the projection, then the centres, fp32 little-endian. */
function gateBytes(fit: GateFit): Buffer {
  const floats = new Float32Array(fit.projection.length + fit.centres.length);
  floats.set(fit.projection);
  floats.set(fit.centres, fit.projection.length);
  return Buffer.from(floats.buffer);
}

async function writeAtomically(path: string, data: Buffer | string): Promise<void> {
  const temporary = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(temporary, data);
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw new BundleError(basename(path), undefined, `${path} could not be written: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/**
 * Writes calibration.json (and gate.bin, with the gate's fit, its digest recorded in
 * `file.gate`) into `dir`. Without a gate, an earlier calibration's gate.bin is removed.
 */
export async function writeCalibration(
  dir: string,
  file: Omit<CalibrationFile, 'gate'>,
  gate?: { record: Omit<GateRecord, 'sha256' | 'file'>; fit: GateFit },
): Promise<void> {
  let content: CalibrationFile = file;
  if (gate) {
    const bytes = gateBytes(gate.fit);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    content = { ...file, gate: { ...gate.record, file: GATE_FILE, sha256 } };
    await writeAtomically(join(dir, GATE_FILE), bytes);
  }
  await writeAtomically(join(dir, CALIBRATION_FILE), JSON.stringify(content, null, 2) + '\n');
  // A gate of an earlier calibration would not fit this one (and nothing reads it now).
  if (!gate) {
    await rm(join(dir, GATE_FILE), { force: true }).catch((error: Error) => {
      throw new BundleError(GATE_FILE, undefined, `${join(dir, GATE_FILE)} could not be removed: ${error.message}`, {
        cause: error,
      });
    });
  }
}
