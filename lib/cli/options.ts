// Command-line flags to Classifier options; shared by the commands that load a model.

import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { PACKAGE_ROOT } from '../binding.js';
import type { ClassifierOptions, Device, DType } from '../classifier.js';
import { InvalidArgumentError } from '../errors.js';

/** The model `npm run demo` and `bertgate classify` use when no --model is given. */
export const DEFAULT_BUNDLE = join(PACKAGE_ROOT, 'models', 'default');

export const MODEL_FLAGS = {
  model: { type: 'string' },
  threshold: { type: 'string' },
  device: { type: 'string' },
  dtype: { type: 'string' },
  temperature: { type: 'string' },
  'other-label': { type: 'string' },
  'top-k': { type: 'string' },
  threads: { type: 'string' },
  'batch-size': { type: 'string' },
} as const;

function number(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || Number.isNaN(n))
    throw new InvalidArgumentError(`Expected --${flag} to be a number, got ${JSON.stringify(value)}`);
  return n;
}

type Values = ReturnType<typeof parseArgs<{ options: typeof MODEL_FLAGS; allowPositionals: true }>>['values'];

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
  set('device', values.device as Device | undefined);
  set('dtype', values.dtype as DType | undefined);
  set('temperature', number('temperature', values.temperature));
  set('otherLabel', values['other-label']);
  set('topK', number('top-k', values['top-k']));
  set('threads', number('threads', values.threads));
  set('maxBatchSize', number('batch-size', values['batch-size']));
  return { bundle: values.model ?? DEFAULT_BUNDLE, options };
}
