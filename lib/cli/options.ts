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

/** A decimal number ("0.6", "-1", ".5"): Number() alone would also take "0x2", "1e0" and " 1". */
function number(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[+-]?(\d+(\.\d*)?|\.\d+)$/.test(value))
    throw new InvalidArgumentError(`Expected --${flag} to be a decimal number, got ${JSON.stringify(value)}`);
  return Number(value);
}

/** A count (digits only); its range is the Classifier's option check, which names the option. */
function count(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value))
    throw new InvalidArgumentError(
      `Expected --${flag} to be a whole number (digits only), got ${JSON.stringify(value)}`,
    );
  return Number(value);
}

/** --device: one device, or a comma list of CUDA devices (cuda:0,cuda:1), no item empty. */
function devices(value: string | undefined): Device | Device[] | undefined {
  if (value === undefined || !value.includes(',')) return value as Device | undefined;
  const items = value.split(',');
  const empty = items.findIndex((d) => d.trim() === '');
  if (empty >= 0) {
    throw new InvalidArgumentError(
      `Expected --device to be a device or a comma list of CUDA devices (cuda:0,cuda:1), got ` +
        `${JSON.stringify(value)}: item ${empty + 1} is empty`,
    );
  }
  return items as Device[];
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
  set('device', devices(values.device));
  set('replicas', values.replicas === undefined ? undefined : integer('replicas', values.replicas, 1, 1, MAX_REPLICAS));
  set('dtype', values.dtype as DType | undefined);
  set('temperature', number('temperature', values.temperature));
  set('otherLabel', values['other-label']);
  set('topK', count('top-k', values['top-k']));
  set('threads', count('threads', values.threads));
  set('maxBatchSize', count('batch-size', values['batch-size']));
  set('maxBatchTokens', count('max-batch-tokens', values['max-batch-tokens']));
  set('padToMultipleOf', count('pad-to-multiple-of', values['pad-to-multiple-of']));
  set('maxDelayMs', number('max-delay-ms', values['max-delay-ms']));
  set('maxQueue', count('max-queue', values['max-queue']));
  set('batchesInFlight', count('batches-in-flight', values['batches-in-flight']));
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
