/**
 * What a caller may pass as texts, checked and normalised before anything else sees them:
 * strings (well-formed Unicode), UTF-8 bytes (decoded by the one rule of text-decoding.ts), and
 * `{ text, pair }` for sentence-pair models; at most `maxTextLength` UTF-16 units each.
 *
 * Reading a caller's value can run the caller's code (a getter, a Proxy trap) or fail (a
 * revoked Proxy): such a failure is the input's fault, reported as InvalidArgumentError
 * naming the input, with the original error as its cause.
 */

import { BertgateError, InvalidArgumentError } from './errors.js';
import { decodeUtf8 } from './text-decoding.js';
import type { TokenizerInput } from './tokenizer.js';
import { invalid } from './validate.js';

/** A text as a string or its UTF-8 bytes (checked: invalid UTF-8 is an error, never replaced). */
export type Text = string | Uint8Array;
/** Two texts classified together, as sentence-pair models take them (type ids 0 and 1). */
export interface TextPair {
  text: Text;
  pair: Text;
}
export type TextInput = Text | TextPair;

const TEXT = 'a string, a Uint8Array of UTF-8, or { text, pair }';
const MEMBER = 'a string or a Uint8Array of UTF-8';

/** Runs `read` (which touches the caller's value); a failure there is `name`'s fault. */
function reading<T>(name: string, read: () => T): T {
  try {
    return read();
  } catch (error) {
    if (error instanceof BertgateError) throw error;
    const detail = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    throw new InvalidArgumentError(`Reading ${name} failed (${detail})`, { cause: error });
  }
}

/** `text` (one text or pair) or `texts[i]`, as the tokenizer takes them. */
export function normaliseTexts(input: unknown, maxTextLength: number): { single: boolean; inputs: TokenizerInput[] } {
  // Only a revoked Proxy makes Array.isArray throw; it is not an array, so it is named as a text.
  const single = !reading('text', () => Array.isArray(input));
  if (single) return { single, inputs: [normaliseOne(input, 'text', maxTextLength)] };
  const list = input as readonly unknown[];
  const length = reading('texts', () => list.length);
  if (length === 0) throw new InvalidArgumentError('Expected texts to be a non-empty array, got an empty array');
  const inputs: TokenizerInput[] = new Array(length);
  // An index loop, not map: map skips the holes of a sparse array, which would reach the
  // tokenizer as undefined.
  for (let i = 0; i < length; i++) {
    const name = `texts[${i}]`;
    inputs[i] = normaliseOne(
      reading(name, () => list[i]),
      name,
      maxTextLength,
    );
  }
  return { single, inputs };
}

function normaliseOne(item: unknown, name: string, maxTextLength: number): TokenizerInput {
  const pair = reading(name, () => {
    if (typeof item !== 'object' || item === null || item instanceof Uint8Array || Array.isArray(item)) return null;
    const keys = Object.keys(item);
    if (keys.length !== 2 || !('text' in item) || !('pair' in item)) return null;
    return { text: (item as TextPair).text, pair: (item as TextPair).pair };
  });
  if (pair) {
    return [
      normaliseText(pair.text, `${name}.text`, maxTextLength, MEMBER),
      normaliseText(pair.pair, `${name}.pair`, maxTextLength, MEMBER),
    ] as const;
  }
  return normaliseText(item, name, maxTextLength, TEXT);
}

function normaliseText(item: unknown, name: string, maxTextLength: number, expected: string): string {
  if (typeof item === 'string') return checkText(item, name, maxTextLength);
  if (!reading(name, () => item instanceof Uint8Array)) throw reading(name, () => invalid(name, expected, item));
  let text: string;
  try {
    text = decodeUtf8(item as Uint8Array);
  } catch {
    throw new InvalidArgumentError(`Expected ${name} to be valid UTF-8, got bytes that are not`);
  }
  return checkText(text, name, maxTextLength);
}

/**
 * A string as the model takes texts: well-formed Unicode, at most `maxTextLength` UTF-16
 * units. Data files hold their texts to it too, naming the file's line.
 * @throws {InvalidArgumentError} naming `name`
 */
export function checkText(text: string, name: string, maxTextLength: number): string {
  if (!text.isWellFormed()) {
    throw new InvalidArgumentError(
      `Expected ${name} to be well-formed Unicode, got a string with an unpaired surrogate`,
    );
  }
  if (text.length > maxTextLength) {
    throw new InvalidArgumentError(
      `Expected ${name} to be at most ${maxTextLength} characters (the "maxTextLength" option), got ${text.length}`,
    );
  }
  return text;
}
