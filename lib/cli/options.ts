// Command-line flags to Classifier options; shared by the commands that load a model.

import { parseArgs } from 'node:util';

import { DEFAULT_MODEL } from '../bundle.js';
import { MAX_REPLICAS, type ClassifierOptions, type Device, type DType } from '../options.js';
import { InvalidArgumentError } from '../errors.js';

/** The model `npm run demo` and `bertgate classify` use when no --model is given. */
export const DEFAULT_BUNDLE = DEFAULT_MODEL;

/**
 * Where and how the model runs: every command that loads one takes these (calibrate too,
 * which fits its own temperature and thresholds, so it takes no decision flags).
 */
export const RUNTIME_FLAGS = {
  model: { type: 'string' },
  device: { type: 'string' },
  replicas: { type: 'string' },
  dtype: { type: 'string' },
  threads: { type: 'string' },
  'batch-size': { type: 'string' },
  'max-batch-tokens': { type: 'string' },
  'pad-to-multiple-of': { type: 'string' },
  'max-delay-ms': { type: 'string' },
  'max-queue': { type: 'string' },
  'batches-in-flight': { type: 'string' },
  fifo: { type: 'boolean' },
} as const;

/** RUNTIME_FLAGS and how decisions are made: classify, serve, evaluate. */
export const MODEL_FLAGS = {
  ...RUNTIME_FLAGS,
  threshold: { type: 'string' },
  temperature: { type: 'string' },
  'other-label': { type: 'string' },
  'top-k': { type: 'string' },
} as const;

function number(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || Number.isNaN(n))
    throw new InvalidArgumentError(`Expected --${flag} to be a number, got ${JSON.stringify(value)}`);
  return n;
}

type Values = Partial<ReturnType<typeof parseArgs<{ options: typeof MODEL_FLAGS; allowPositionals: true }>>['values']>;

/** Only the flags given become options, so the Classifier's own defaults and checks apply. */
export function classifierOptions(values: Values): { bundle: string; options: ClassifierOptions<string, string> } {
  const options: ClassifierOptions<string, string> = {};
  const set = <K extends keyof ClassifierOptions<string, string>>(
    key: K,
    value: ClassifierOptions<string, string>[K] | undefined,
  ) => {
    if (value !== undefined) options[key] = value;
  };
  set('threshold', number('threshold', values.threshold));
  // A comma list of CUDA devices (--device cuda:0,cuda:1): one replica set across them.
  set(
    'device',
    values.device?.includes(',') ? (values.device.split(',') as Device[]) : (values.device as Device | undefined),
  );
  set('replicas', values.replicas === undefined ? undefined : integer('replicas', values.replicas, 1, 1, MAX_REPLICAS));
  set('dtype', values.dtype as DType | undefined);
  set('temperature', number('temperature', values.temperature));
  set('otherLabel', values['other-label']);
  set('topK', number('top-k', values['top-k']));
  set('threads', number('threads', values.threads));
  set('maxBatchSize', number('batch-size', values['batch-size']));
  set('maxBatchTokens', number('max-batch-tokens', values['max-batch-tokens']));
  set('padToMultipleOf', number('pad-to-multiple-of', values['pad-to-multiple-of']));
  set('maxDelayMs', number('max-delay-ms', values['max-delay-ms']));
  set('maxQueue', number('max-queue', values['max-queue']));
  set('batchesInFlight', number('batches-in-flight', values['batches-in-flight']));
  if (values.fifo) options.lengthAware = false;
  return { bundle: values.model ?? DEFAULT_BUNDLE, options };
}

/** A whole-number flag within [min, max], or its fallback when absent: exact messages, before any model loads. */
export function integer(flag: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  // Digits only: Number() would also take "0x10", "1e3" and " 3".
  if (!/^\d+$/.test(value) || !Number.isInteger(n) || n < min || n > max)
    throw new InvalidArgumentError(
      `Expected --${flag} to be a whole number in [${min}, ${max}], got ${JSON.stringify(value)}`,
    );
  return n;
}
