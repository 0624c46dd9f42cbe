/**
 * Argument checks with exact messages, in the form
 *   Expected the "threshold" option to be a number in [0, 1], got NaN
 * Everything the native side receives has passed through here first.
 */

import { InvalidArgumentError } from './errors.js';

/** A short, safe rendering of a value for an error message. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN' : String(value);
  if (typeof value === 'string')
    return value.length > 40 ? `a string of ${value.length} characters` : JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (value instanceof Uint8Array) return `a ${value.constructor.name} of ${value.length} bytes`;
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'object')
    return value.constructor?.name ? `an instance of ${value.constructor.name}` : 'an object';
  return typeof value;
}

export function invalid(what: string, expected: string, actual: unknown): InvalidArgumentError {
  return new InvalidArgumentError(`Expected ${what} to be ${expected}, got ${describe(actual)}`);
}

export function option(name: string): string {
  return `the "${name}" option`;
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function probability(what: string, value: unknown): number {
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) throw invalid(what, 'a number in [0, 1]', value);
  return value;
}

export function positiveFinite(what: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw invalid(what, 'a finite number greater than 0', value);
  }
  return value;
}

/**
 * The temperatures served: the engine divides fp32 logits by the temperature, so it must be a
 * normal fp32 number, and z / T must stay finite for any logits a model gives (|z| < 1e34).
 * calibrate fits one in [0.05, 20]; far outside this range softmax is one-hot or uniform.
 */
export const TEMPERATURE_MIN = 1e-4;
export const TEMPERATURE_MAX = 1e4;

/** What a temperature must be, where `value` is not one; undefined where it is. */
export function temperatureProblem(value: unknown): string | undefined {
  return typeof value === 'number' && value >= TEMPERATURE_MIN && value <= TEMPERATURE_MAX
    ? undefined
    : `a number in [${TEMPERATURE_MIN}, ${TEMPERATURE_MAX}]`;
}

export function integerIn(what: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(what, `an integer in [${min}, ${max}]`, value);
  }
  return value;
}

export function oneOf<T extends string>(what: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalid(what, `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`, value);
  }
  return value as T;
}

/** Rejects option keys nobody reads, so a typo ("treshold") is an error, not a silent default. */
export function knownKeys(what: string, value: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw new InvalidArgumentError(`Unknown option "${key}" in ${what}; known options: ${allowed.join(', ')}`);
    }
  }
}
