/**
 * A model bundle on disk (see DESIGN.md, "The model bundle"): read, checked against itself,
 * and later against what the loaded model reports. Every error names the file and field.
 */

import { join } from 'node:path';

import type { NativeModelInfo } from './binding.js';
import { bundleFileSha256, readBundleJson, regularFileSize } from './bundle-io.js';
import { CALIBRATION_FILE, GATE_FILE, readCalibration, type Calibration } from './calibration/file.js';
import { PACKAGE_ROOT } from './runtime/package-root.js';
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
  calibration: CALIBRATION_FILE,
  gate: GATE_FILE,
  manifest: 'bundle.json',
} as const;

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
  /** What bundle.json says of the weights: 'int8' for int8 Linear layers (CPU only), else null. */
  quantization: 'int8' | null;
  /** int8: the operator its record names (an older record, torch.ao's); checked against the model's. */
  int8Op: Int8Op | null;
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

/** config.json "problem_type": bertgate serves one label per text, from a softmax over the logits. */
function checkProblemType(config: Record<string, unknown>): void {
  const kind = config['problem_type'];
  if (kind === undefined || kind === null || kind === 'single_label_classification') return;
  throw new BundleError(
    BUNDLE_FILES.config,
    'problem_type',
    `${BUNDLE_FILES.config}: "problem_type" is ${JSON.stringify(kind)}; bertgate serves single-label ` +
      'classification (one label per text, a softmax over the logits), which is not what this model computes',
  );
}

/**
 * The token limit: the position table's, or tokenizer_config.json's "model_max_length" where
 * that is a shorter whole number of at least 3 ([CLS] a token [SEP]). HF writes a huge sentinel
 * (1e30) for "none", so a value at or past the table counts as none; anything else is an error,
 * not a limit that would cut every text to nothing.
 */
function tokenLimit(tokenizerConfig: unknown, maxPositions: number): number {
  const file = BUNDLE_FILES.tokenizerConfig;
  if (tokenizerConfig !== null && !isPlainObject(tokenizerConfig)) {
    throw new BundleError(file, undefined, `${file} must hold a JSON object`);
  }
  const declared = tokenizerConfig?.['model_max_length'];
  if (declared === undefined || declared === null) return maxPositions;
  if (typeof declared === 'number' && declared >= maxPositions) return maxPositions;
  if (typeof declared !== 'number' || !Number.isInteger(declared) || declared < 3) {
    throw new BundleError(
      file,
      'model_max_length',
      `${file}: "model_max_length" must be a whole number of tokens, at least 3, got ${JSON.stringify(declared)}`,
    );
  }
  return declared;
}

/**
 * Reads and checks a bundle. `{ gate: false }`: gate.bin is not read (the gate's projection and
 * centres stay empty), so a caller that turned the gate off does not depend on that file.
 * `{ calibration: false }`: neither is calibration.json (calibrate, fitting a new one).
 * `{ verify: true }`: the files bundle.json seals are hashed against it first (the classifier's
 * `verify` option), and an unsealed model.pt is hashed to check calibration.json's binding.
 */
export async function readBundle(
  dir: string,
  options: { gate?: boolean; calibration?: boolean; verify?: boolean } = {},
): Promise<Bundle> {
  // Every file a regular one, before anything opens one (libtorch would block on a FIFO too).
  for (const file of Object.values(BUNDLE_FILES)) {
    const size = await regularFileSize(dir, file);
    if (size === null && (file === BUNDLE_FILES.model || file === BUNDLE_FILES.tokenizer)) {
      throw new BundleError(file, undefined, `the bundle at ${dir} has no ${file}`);
    }
  }
  const config = await readBundleJson(dir, BUNDLE_FILES.config, true);
  if (!isPlainObject(config))
    throw new BundleError(BUNDLE_FILES.config, undefined, `${BUNDLE_FILES.config} must hold a JSON object`);
  const labels = readLabels(config);
  checkProblemType(config);
  const maxPositions = positiveInteger(BUNDLE_FILES.config, config, 'max_position_embeddings');
  const maxLength = tokenLimit(await readBundleJson(dir, BUNDLE_FILES.tokenizerConfig, false), maxPositions);

  const manifest = await readBundleJson(dir, BUNDLE_FILES.manifest, false);
  if (manifest !== null && !isPlainObject(manifest)) {
    // Counted as absent, its seal would be skipped.
    throw new BundleError(BUNDLE_FILES.manifest, undefined, `${BUNDLE_FILES.manifest} must hold a JSON object`);
  }
  // The seals first: a file that is not what bundle.json says is named as such, before any
  // check that trusts the seal (calibration.json's binding to model.pt) could blame another file.
  if (options.verify) await verifySeals(dir, manifest as Manifest | null);
  const outputs = manifest?.['outputs'];
  const features = isPlainObject(outputs) ? outputs['features'] : undefined;
  const calibration =
    options.calibration === false
      ? null
      : await readCalibration(dir, labels, {
          // With the gate off its description stays (the guarantee was the combined rule's), its numbers unread.
          gate: options.gate !== false,
          featureWidth: manifest === null ? undefined : typeof features === 'number' ? features : null,
          modelSha256: () => modelSha256(dir, manifest as Manifest | null, options.verify === true),
        });
  const int8Op = readQuantization(manifest);
  return {
    quantization: int8Op === null ? null : 'int8',
    int8Op,
    dir,
    modelPath: join(dir, BUNDLE_FILES.model),
    tokenizerPath: join(dir, BUNDLE_FILES.tokenizer),
    labels,
    maxLength,
    vocabSize: positiveInteger(BUNDLE_FILES.config, config, 'vocab_size'),
    typeVocabSize: positiveInteger(BUNDLE_FILES.config, config, 'type_vocab_size', 2),
    calibration,
    manifest: manifest as Manifest | null,
  };
}

/** The operator of today's int8 bundles (python/bertgate_export/int8_linear.py), and torch.ao's before it. */
const INT8_OP = 'bertgate::linear_int8';
const TORCH_AO_OP = 'quantized::linear_dynamic';
type Int8Op = typeof INT8_OP | typeof TORCH_AO_OP;
/** The only weight range bertgate::linear_int8 takes (native/engine/int8_linear.h). */
const INT8_WEIGHT_LEVELS = 64;

/**
 * bundle.json "quantization": null (or absent) for float weights, else the exporter's int8 record,
 * read as the operator it names: today's ("op": "bertgate::linear_int8", "weight_levels" 64 where
 * given) or the torch.ao record of bundles exported before it (a "scheme" of "dynamic int8 ...",
 * with no "op" or with "quantized::linear_dynamic"), which still load. A refusal names the field.
 */
function readQuantization(manifest: unknown): Int8Op | null {
  const q = isPlainObject(manifest) ? manifest['quantization'] : undefined;
  if (q === undefined || q === null) return null;
  const refuse = (field: string, value: unknown, expected: string): never => {
    throw new BundleError(
      BUNDLE_FILES.manifest,
      'quantization',
      `${BUNDLE_FILES.manifest} "${field}" is ${JSON.stringify(value) ?? 'undefined'}; expected ${expected}`,
    );
  };
  if (!isPlainObject(q)) return refuse('quantization', q, "null or the export tool's int8 record (an object)");
  if (q['layers'] !== 'Linear') return refuse('quantization.layers', q['layers'], '"Linear"');
  const op = q['op'];
  const scheme = q['scheme'];
  if (op === undefined || op === TORCH_AO_OP) {
    if (typeof scheme === 'string' && scheme.startsWith('dynamic int8')) return TORCH_AO_OP;
    return refuse(
      'quantization.op',
      op,
      `"${INT8_OP}", or, for a bundle exported before it, no op and a "scheme" of "dynamic int8 ..."`,
    );
  }
  if (op !== INT8_OP) return refuse('quantization.op', op, `"${INT8_OP}" (or "${TORCH_AO_OP}" in older bundles)`);
  const levels = q['weight_levels'];
  if (levels !== undefined && levels !== INT8_WEIGHT_LEVELS) {
    return refuse('quantization.weight_levels', levels, `${INT8_WEIGHT_LEVELS}, the only range ${INT8_OP} takes`);
  }
  return INT8_OP;
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
        : `${manifest} says the weights are ${bundle.quantization === 'int8' ? 'int8' : 'not quantized'}, but ` +
            `${modelFile} ${model.quantized ? 'holds quantized (int8) layers' : 'holds no quantized layer'}`,
    );
  }
  if (bundle.int8Op !== null && model.int8Op !== bundle.int8Op) {
    // Both int8: the record's family decides what the exporter promised (the weight range, 8 bits everywhere).
    throw new BundleError(
      manifest,
      'quantization',
      `${manifest} records ${bundle.int8Op} int8 layers, but ${modelFile} runs ${model.int8Op}`,
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
async function verifySeals(dir: string, bundleManifest: Manifest | null): Promise<void> {
  const files = bundleManifest?.['files'];
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
      const path = join(dir, name);
      const size = await regularFileSize(dir, name);
      const hint = 'the file is corrupt or was replaced; re-export the bundle, or restore the file';
      if (size === null) throw new BundleError(name, undefined, `${path} is sealed in ${manifest} but missing`);
      if (size !== bytes) {
        throw new BundleError(name, undefined, `${path} has ${size} bytes, but ${manifest} says ${bytes}: ${hint}`);
      }
      const actual = await bundleFileSha256(dir, name);
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

/**
 * model.pt's SHA-256, which calibration.json records to bind itself to one model: bundle.json's
 * seal where it has one (checked against the file first when `hashUnsealed`, i.e. `verify`, is
 * on), else the file's own digest, hashed only when `hashUnsealed` (`verify: false` skips
 * hashing, as it skips the seals: null then, and the binding goes unchecked).
 */
export async function modelSha256(
  dir: string,
  manifest: Manifest | null,
  hashUnsealed: boolean,
): Promise<{ sha256: string; from: 'sealed in bundle.json' | 'hashed' } | null> {
  const files = manifest?.['files'];
  const sealed =
    isPlainObject(files) && isPlainObject(files[BUNDLE_FILES.model]) ? files[BUNDLE_FILES.model] : undefined;
  const digest = (sealed as { sha256?: unknown } | undefined)?.sha256;
  if (typeof digest === 'string' && /^[0-9a-f]{64}$/.test(digest))
    return { sha256: digest, from: 'sealed in bundle.json' };
  return hashUnsealed ? { sha256: await bundleFileSha256(dir, BUNDLE_FILES.model), from: 'hashed' } : null;
}
