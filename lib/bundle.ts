/**
 * A model bundle on disk (see DESIGN.md, "The model bundle"): read, checked against itself,
 * and later against what the loaded model reports. Every error names the file and field.
 */

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

import type { NativeModelInfo } from './binding.js';
import { PACKAGE_ROOT } from './runtime/package-root.js';
import { GATE_MAX_THRESHOLD, GATE_MAX_VALUE } from './calibration/gate.js';
import { isConfidenceMap, type ConfidenceMap } from './confidence-map.js';
import { DRIFT_BINS, type DriftReference } from './drift.js';
import { BundleError } from './errors.js';
import { isPlainObject } from './validate.js';

/**
 * The bundled default model (Debian package descriptions into 50 sections): what
 * `Classifier.load()` loads without a path, and what the CLI uses without --model.
 */
export const DEFAULT_MODEL = join(PACKAGE_ROOT, 'models', 'default');

export const BUNDLE_FILES = {
  model: 'model.pt',
  config: 'config.json',
  tokenizer: 'tokenizer.json',
  tokenizerConfig: 'tokenizer_config.json',
  calibration: 'calibration.json',
  gate: 'gate.bin',
  manifest: 'bundle.json',
} as const;

export interface Calibration {
  temperature?: number;
  /** The top-label confidence map the thresholds apply through (calibrated_max_probability). */
  map?: ConfidenceMap;
  threshold?: number;
  /** null: the label is never accepted (calibrate certified no threshold for it). */
  thresholds?: Record<string, number | null>;
  /** What `bertgate calibrate` recorded about the threshold: kept as written, for reporting. */
  guarantee?: Record<string, unknown>;
  /** The calibration texts' served scores, which the drift alarm compares live texts with. */
  drift?: DriftReference;
  /** The out-of-distribution gate calibrate fitted (lib/calibration/gate.ts), its numbers read from gate.bin. */
  gate?: Gate;
}

/** An out-of-distribution gate as a bundle holds it. */
export interface Gate {
  dim: number;
  width: number;
  /** A text whose score is above this is flagged. */
  threshold: number;
  /** At most this share of in-distribution texts is flagged. */
  alpha: number;
  /** [dim, width] then [classes, dim], from gate.bin. */
  projection: Float32Array;
  centres: Float32Array;
}

/** Written by the export tool: where the bundle came from. */
export interface Manifest {
  random_weights?: boolean;
  [key: string]: unknown;
}

export interface Bundle {
  dir: string;
  modelPath: string;
  tokenizerPath: string;
  /** Index i holds id2label[i]. */
  labels: string[];
  /** Longest token sequence the model accepts (tokenizer truncates to it). */
  maxLength: number;
  vocabSize: number;
  typeVocabSize: number;
  calibration: Calibration | null;
  manifest: Manifest | null;
  /** What bundle.json says of the weights: 'int8' for dynamic int8 Linear layers (CPU only), else null. */
  quantization: 'int8' | null;
}

async function readJson(dir: string, file: string, required: boolean): Promise<unknown> {
  const path = join(dir, file);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' && !required) return null;
    throw new BundleError(file, undefined, `${path} could not be read: ${(error as Error).message}`, { cause: error });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new BundleError(file, undefined, `${path} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
}

function positiveInteger(file: string, object: Record<string, unknown>, field: string, fallback?: number): number {
  const value = object[field] ?? fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new BundleError(file, field, `${file}: "${field}" must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return value;
}

function readLabels(config: Record<string, unknown>): string[] {
  const file = BUNDLE_FILES.config;
  const id2label = config['id2label'];
  if (!isPlainObject(id2label)) {
    throw new BundleError(file, 'id2label', `${file}: "id2label" must be an object mapping "0".."n-1" to label names`);
  }
  const n = Object.keys(id2label).length;
  const labels: string[] = [];
  for (let i = 0; i < n; i++) {
    const label = id2label[String(i)];
    if (typeof label !== 'string' || label.length === 0) {
      throw new BundleError(file, 'id2label', `${file}: "id2label" has no non-empty label for id ${i}`);
    }
    labels.push(label);
  }
  const seen = new Set<string>();
  for (const label of labels) {
    if (seen.has(label))
      throw new BundleError(file, 'id2label', `${file}: "id2label" names ${JSON.stringify(label)} twice`);
    seen.add(label);
  }
  if (labels.length < 2) throw new BundleError(file, 'id2label', `${file}: "id2label" must name at least 2 labels`);
  if (config['num_labels'] !== undefined && config['num_labels'] !== labels.length) {
    throw new BundleError(
      file,
      'num_labels',
      `${file}: "num_labels" is ${JSON.stringify(config['num_labels'])} but "id2label" names ${labels.length} labels`,
    );
  }
  return labels;
}

function readCalibration(value: unknown, labels: readonly string[]): Calibration | null {
  if (value === null) return null;
  const file = BUNDLE_FILES.calibration;
  if (!isPlainObject(value)) throw new BundleError(file, undefined, `${file} must hold a JSON object`);
  const calibration: Calibration = {};
  const score = value['score'];
  if (score !== undefined && score !== 'max_probability' && score !== 'calibrated_max_probability') {
    throw new BundleError(
      file,
      'score',
      `${file}: "score" ${JSON.stringify(score)} is not supported; thresholds apply to "max_probability" ` +
        'or "calibrated_max_probability"',
    );
  }
  if (score === 'calibrated_max_probability') {
    // Without its map the thresholds would apply to another scale: never silently.
    if (!isConfidenceMap(value['map'])) {
      throw new BundleError(
        file,
        'map',
        `${file}: "score" is "calibrated_max_probability", so "map" must be its isotonic map ` +
          '({ kind: "isotonic", x, y }: knots increasing in [0, 1], values in [0, 1])',
      );
    }
    calibration.map = value['map'];
  }
  const t = value['temperature'];
  if (t !== undefined) {
    if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0) {
      throw new BundleError(
        file,
        'temperature',
        `${file}: "temperature" must be a finite number > 0, got ${JSON.stringify(t)}`,
      );
    }
    calibration.temperature = t;
  }
  const p = value['threshold'];
  if (p !== undefined) {
    if (typeof p !== 'number' || !(p >= 0 && p <= 1)) {
      throw new BundleError(
        file,
        'threshold',
        `${file}: "threshold" must be a number in [0, 1], got ${JSON.stringify(p)}`,
      );
    }
    calibration.threshold = p;
  }
  const per = value['thresholds'];
  if (per !== undefined) {
    if (!isPlainObject(per))
      throw new BundleError(file, 'thresholds', `${file}: "thresholds" must map labels to numbers`);
    for (const [label, q] of Object.entries(per)) {
      if (!labels.includes(label)) {
        throw new BundleError(
          file,
          'thresholds',
          `${file}: "thresholds" names ${JSON.stringify(label)}, which is not a label of this model`,
        );
      }
      if (q !== null && (typeof q !== 'number' || !(q >= 0 && q <= 1))) {
        throw new BundleError(
          file,
          'thresholds',
          `${file}: "thresholds.${label}" must be a number in [0, 1], or null (never accepted), got ${JSON.stringify(q)}`,
        );
      }
    }
    calibration.thresholds = per as Record<string, number | null>;
  }
  if (isPlainObject(value['guarantee'])) calibration.guarantee = value['guarantee'];
  const gate = value['gate'];
  if (gate !== undefined) {
    const g = gate as Record<string, unknown>;
    const positive = (x: unknown): x is number => Number.isInteger(x) && (x as number) > 0;
    if (
      !isPlainObject(gate) ||
      g['kind'] !== 'mahalanobis' ||
      !positive(g['dim']) ||
      !positive(g['width']) ||
      // A squared distance: a negative threshold would flag every text, one past fp32's range none.
      !(typeof g['threshold'] === 'number' && g['threshold'] >= 0 && g['threshold'] <= GATE_MAX_THRESHOLD) ||
      !(typeof g['alpha'] === 'number' && g['alpha'] > 0 && g['alpha'] < 1) ||
      g['file'] !== BUNDLE_FILES.gate
    ) {
      throw new BundleError(
        file,
        'gate',
        `${file}: "gate" must be calibrate's { kind: "mahalanobis", dim, width, threshold (a distance from 0 to the largest fp32), ` +
          `alpha (in (0, 1)), file: "${BUNDLE_FILES.gate}" }`,
      );
    }
    // The numbers arrive from gate.bin in readBundle.
    calibration.gate = {
      dim: g['dim'] as number,
      width: g['width'] as number,
      threshold: g['threshold'] as number,
      alpha: g['alpha'] as number,
      projection: new Float32Array(0),
      centres: new Float32Array(0),
    };
  }
  const drift = value['drift'];
  if (drift !== undefined) {
    const counts = isPlainObject(drift) ? drift['counts'] : undefined;
    const guarantee = calibration.guarantee;
    const coverage = guarantee?.['coverage'];
    const data = value['data'];
    if (
      !Array.isArray(counts) ||
      counts.length !== DRIFT_BINS ||
      !counts.every((x) => Number.isInteger(x) && (x as number) >= 0) ||
      !counts.some((x) => (x as number) > 0) ||
      typeof coverage !== 'number'
    ) {
      throw new BundleError(
        file,
        'drift',
        `${file}: "drift" must hold "counts", the calibration texts' max probabilities counted in ${DRIFT_BINS} ` +
          'bins, beside a guarantee with its "coverage"',
      );
    }
    const sha = isPlainObject(data) && typeof data['sha256'] === 'string' ? data['sha256'] : 'unknown';
    calibration.drift = { counts, coverage, id: `${sha}@${String(value['created'] ?? '')}` };
  }
  return calibration;
}

/**
 * Reads and checks a bundle. `{ gate: false }`: gate.bin is not read (the gate's projection and
 * centres stay empty), so a caller that turned the gate off does not depend on that file.
 */
export async function readBundle(dir: string, options: { gate?: boolean } = {}): Promise<Bundle> {
  const modelPath = join(dir, BUNDLE_FILES.model);
  const tokenizerPath = join(dir, BUNDLE_FILES.tokenizer);
  for (const [file, path] of [
    [BUNDLE_FILES.model, modelPath],
    [BUNDLE_FILES.tokenizer, tokenizerPath],
  ] as const) {
    try {
      await access(path);
    } catch {
      throw new BundleError(file, undefined, `the bundle at ${dir} has no ${file}`);
    }
  }
  const config = await readJson(dir, BUNDLE_FILES.config, true);
  if (!isPlainObject(config))
    throw new BundleError(BUNDLE_FILES.config, undefined, `${BUNDLE_FILES.config} must hold a JSON object`);
  const labels = readLabels(config);
  const maxPositions = positiveInteger(BUNDLE_FILES.config, config, 'max_position_embeddings');

  // The tokenizer may declare a shorter limit (model_max_length); HF uses a huge sentinel
  // for "none", so only a value below the position table counts.
  const tokenizerConfig = await readJson(dir, BUNDLE_FILES.tokenizerConfig, false);
  const declared = isPlainObject(tokenizerConfig) ? tokenizerConfig['model_max_length'] : undefined;
  const maxLength = typeof declared === 'number' && declared > 0 && declared < maxPositions ? declared : maxPositions;

  const manifest = await readJson(dir, BUNDLE_FILES.manifest, false);
  const calibration = readCalibration(await readJson(dir, BUNDLE_FILES.calibration, false), labels);
  // With the gate off its description stays (the guarantee was the combined rule's), its numbers unread.
  if (calibration?.gate && options.gate !== false) await readGate(dir, calibration.gate, labels.length, manifest);
  return {
    quantization: readQuantization(manifest),
    dir,
    modelPath,
    tokenizerPath,
    labels,
    maxLength,
    vocabSize: positiveInteger(BUNDLE_FILES.config, config, 'vocab_size'),
    typeVocabSize: positiveInteger(BUNDLE_FILES.config, config, 'type_vocab_size', 2),
    calibration,
    manifest: isPlainObject(manifest) ? (manifest as Manifest) : null,
  };
}

/**
 * gate.bin: the gate's projection [dim, width] then its class centres [classes, dim], fp32
 * little-endian, as calibrate wrote them; checked against calibration.json and bundle.json.
 */
async function readGate(dir: string, gate: Gate, classes: number, manifest: unknown): Promise<void> {
  const file = BUNDLE_FILES.gate;
  const path = join(dir, file);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch {
    throw new BundleError(
      file,
      undefined,
      `${BUNDLE_FILES.calibration} has an out-of-distribution gate, but ${path} is missing`,
    );
  }
  const { dim, width } = gate;
  const expected = (dim * width + classes * dim) * 4;
  if (bytes.length !== expected) {
    throw new BundleError(
      file,
      undefined,
      `${file} is ${bytes.length} bytes; a gate of ${dim} directions over ${width}-wide features for ${classes} labels is ${expected}`,
    );
  }
  const floats = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  // Non-finite numbers, or ones so large that the engine's fp32 products and squares could
  // overflow (GATE_MAX_VALUE).
  const bad = floats.findIndex((x) => !(Math.abs(x) <= GATE_MAX_VALUE));
  if (bad >= 0) {
    throw new BundleError(
      file,
      undefined,
      `${path} holds ${Number.isFinite(floats[bad]) ? 'a number too large for the gate' : 'a non-finite number'} ` +
        `(${floats[bad]} at float ${bad}): a gate.bin calibrate wrote holds none beyond ${GATE_MAX_VALUE}`,
    );
  }
  gate.projection = floats.subarray(0, dim * width);
  gate.centres = floats.subarray(dim * width);
  const outputs = isPlainObject(manifest) ? manifest['outputs'] : undefined;
  const featureWidth = isPlainObject(outputs) ? outputs['features'] : undefined;
  if (isPlainObject(manifest) && featureWidth !== width) {
    throw new BundleError(
      BUNDLE_FILES.calibration,
      'gate',
      `${BUNDLE_FILES.calibration} has an out-of-distribution gate fitted on ${width}-wide features, but ` +
        `${BUNDLE_FILES.manifest} says model.pt returns ` +
        (featureWidth === undefined
          ? 'no features (export it with --features)'
          : `${String(featureWidth)}-wide features`),
    );
  }
}

/** bundle.json "quantization": null (or absent) for float weights, the exporter's int8 record otherwise. */
function readQuantization(manifest: unknown): 'int8' | null {
  const q = isPlainObject(manifest) ? manifest['quantization'] : undefined;
  if (q === undefined || q === null) return null;
  if (
    isPlainObject(q) &&
    q['layers'] === 'Linear' &&
    typeof q['scheme'] === 'string' &&
    q['scheme'].startsWith('dynamic int8')
  )
    return 'int8';
  throw new BundleError(
    BUNDLE_FILES.manifest,
    'quantization',
    `${BUNDLE_FILES.manifest} "quantization" is ${JSON.stringify(q)}; expected null or the export tool's dynamic int8 record`,
  );
}

/** The bundle against the weights actually loaded and the tokenizer actually read. */
export function checkAgainstModel(bundle: Bundle, model: NativeModelInfo, tokenizerVocabSize: number): void {
  const { config, model: modelFile, tokenizer, manifest } = BUNDLE_FILES;
  if (model.quantized !== (bundle.quantization === 'int8')) {
    // Calibration, the device check and the exporter's parity all go by what bundle.json says.
    throw new BundleError(
      manifest,
      'quantization',
      bundle.manifest === null
        ? `${modelFile} holds quantized (int8) layers, but the bundle at ${bundle.dir} has no ${manifest} to say so ` +
            '(the export tool writes one with --quantize int8)'
        : `${manifest} says the weights are ${bundle.quantization === 'int8' ? 'dynamic int8' : 'not quantized'}, but ` +
            `${modelFile} ${model.quantized ? 'holds quantized (int8) layers' : 'holds no quantized layer'}`,
    );
  }
  if (model.numLabels !== bundle.labels.length) {
    throw new BundleError(
      config,
      'id2label',
      `${config} "id2label" names ${bundle.labels.length} labels, but ${modelFile} outputs ${model.numLabels} logits per text`,
    );
  }
  if (model.vocabRows >= 0 && model.vocabRows !== bundle.vocabSize) {
    throw new BundleError(
      config,
      'vocab_size',
      `${config} "vocab_size" is ${bundle.vocabSize}, but ${modelFile} has ${model.vocabRows} word embeddings`,
    );
  }
  if (model.typeVocabRows >= 0 && model.typeVocabRows !== bundle.typeVocabSize) {
    // A pair's second text has type id 1: past a one-row table it would fail inside the model.
    throw new BundleError(
      config,
      'type_vocab_size',
      `${config} "type_vocab_size" is ${bundle.typeVocabSize}, but ${modelFile} has ${model.typeVocabRows} token type embeddings`,
    );
  }
  if (model.positionRows >= 0 && model.positionRows < bundle.maxLength) {
    throw new BundleError(
      config,
      'max_position_embeddings',
      `${config} allows ${bundle.maxLength} tokens, but ${modelFile} has only ${model.positionRows} position embeddings`,
    );
  }
  const rows = model.vocabRows >= 0 ? model.vocabRows : bundle.vocabSize;
  if (tokenizerVocabSize > rows) {
    // An id past the embedding table would fail inside the model (on CUDA, fatally).
    throw new BundleError(
      tokenizer,
      'model.vocab',
      `${tokenizer} has ${tokenizerVocabSize} tokens, but the model has only ${rows} word embeddings`,
    );
  }
}

/**
 * The files bundle.json seals (its "files": name -> { bytes, sha256 }, written by the export
 * tool) against what is on disk. A TorchScript archive stores its tensors unchecked, so a
 * corrupted model.pt would otherwise load as a silently different model. Hashing goes in 1 MB
 * steps, so the event loop keeps turning (about 0.3 s per 100 MB here). Bundles without
 * "files" (older exports, hand-made ones) are not checked.
 */
export async function verifyFiles(bundle: Bundle): Promise<void> {
  const files = bundle.manifest?.['files'];
  if (files === undefined) return;
  const { manifest } = BUNDLE_FILES;
  if (!isPlainObject(files)) {
    throw new BundleError(manifest, 'files', `${manifest} "files" must be an object of { bytes, sha256 } by file name`);
  }
  const sealed = Object.values(BUNDLE_FILES) as string[];
  await Promise.all(
    Object.entries(files).map(async ([name, entry]) => {
      // Only the bundle's own files, by bare name: bundle.json cannot point outside the bundle.
      if (!sealed.includes(name) || name === manifest) {
        throw new BundleError(
          manifest,
          'files',
          `${manifest} "files" names ${JSON.stringify(name)}, not a bundle file`,
        );
      }
      const e = isPlainObject(entry) ? entry : {};
      const { bytes, sha256 } = e as { bytes?: unknown; sha256?: unknown };
      if (typeof bytes !== 'number' || typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sha256)) {
        throw new BundleError(manifest, 'files', `${manifest} "files"."${name}" must be { bytes, sha256 }`);
      }
      const path = join(bundle.dir, name);
      const size = await stat(path).then(
        (s) => s.size,
        () => -1,
      );
      const hint = 'the file is corrupt or was replaced; re-export the bundle, or restore the file';
      if (size < 0) throw new BundleError(name, undefined, `${path} is sealed in ${manifest} but missing`);
      if (size !== bytes) {
        throw new BundleError(name, undefined, `${path} has ${size} bytes, but ${manifest} says ${bytes}: ${hint}`);
      }
      const actual = await sha256Of(path);
      if (actual !== sha256) {
        throw new BundleError(
          name,
          undefined,
          `${path} has SHA-256 ${actual}, but ${manifest} says ${sha256}: ${hint}`,
        );
      }
    }),
  );
}

async function sha256Of(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
