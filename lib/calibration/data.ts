/** Labelled examples for calibrate and evaluate: JSONL of {"text", "label"}, optionally gzipped. */

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';

import { DataError, InvalidArgumentError } from '../errors.js';
import { checkText } from '../inputs.js';
import { InvalidUtf8Error, decodeUtf8 } from '../text-decoding.js';

/**
 * The most bytes a data file may hold (inflated, for .gz): 1 GiB. The file is held whole in
 * memory, as its examples are for the passes over them, so a gzip bomb must stop inflating at
 * a limit rather than take the machine's memory. 1 GiB is millions of texts, more than a
 * calibration pass through a BERT model gets through in hours: no real data set meets it.
 */
export const MAX_DATA_BYTES = 2 ** 30;

export interface Example {
  text: string;
  label: string;
  /** Its line in the file, from 1 (blank lines count), so that an error about it can name it. */
  line: number;
}

export interface LabelledData {
  file: string;
  examples: Example[];
  /** Of the file's bytes as stored (compressed or not): says which data a calibration used. */
  sha256: string;
}

export interface ReadOptions {
  /**
   * The classifier's "maxTextLength": a longer text is refused here, by its line, before any
   * pass over the data (which could only name its index in a chunk).
   */
  maxTextLength?: number;
  /** MAX_DATA_BYTES unless given. */
  maxBytes?: number;
}

/**
 * Every text is held to the classifier's rule for texts (well-formed Unicode; at most
 * `options.maxTextLength` characters when given) and refused by its line.
 * @param labels when given, every example's label must be one of them
 */
export async function readLabelled(
  file: string,
  labels?: readonly string[],
  options: ReadOptions = {},
): Promise<LabelledData> {
  return readJsonl(file, labels, true, options);
}

/**
 * Texts with or without a label (`{"text"}` lines; a "label" is allowed and ignored): the
 * out-of-distribution sets of `evaluate --ood`, which have no label of the model's.
 */
export async function readTexts(file: string, options: ReadOptions = {}): Promise<string[]> {
  return (await readJsonl(file, undefined, false, options)).examples.map((e) => e.text);
}

/** The file's bytes as stored, and as JSONL (inflated for .gz), at most `maxBytes` of them. */
async function readBytes(file: string, maxBytes: number): Promise<{ stored: Buffer; jsonl: Buffer }> {
  let stored: Buffer;
  try {
    stored = await readFile(file);
  } catch (error) {
    throw new DataError(file, undefined, `${file} could not be read: ${(error as Error).message}`);
  }
  if (!file.endsWith('.gz')) {
    if (stored.length > maxBytes)
      throw new DataError(file, undefined, `${file} holds more than ${maxBytes} bytes, the most a data file may hold`);
    return { stored, jsonl: stored };
  }
  try {
    return { stored, jsonl: await promisify(gunzip)(stored, { maxOutputLength: maxBytes }) };
  } catch (error) {
    const { code, message } = error as NodeJS.ErrnoException;
    if (code === 'ERR_BUFFER_TOO_LARGE') {
      throw new DataError(
        file,
        undefined,
        `${file} inflates to more than ${maxBytes} bytes, the most a data file may hold`,
      );
    }
    throw new DataError(
      file,
      undefined,
      `${file} could not be decompressed (a truncated or damaged gzip file): ${message}`,
    );
  }
}

async function readJsonl(
  file: string,
  labels: readonly string[] | undefined,
  labelled: boolean,
  options: ReadOptions,
): Promise<LabelledData> {
  const { stored, jsonl } = await readBytes(file, options.maxBytes ?? MAX_DATA_BYTES);
  const sha256 = createHash('sha256').update(stored).digest('hex');
  const known = labels ? new Set(labels) : undefined;
  const maxTextLength = options.maxTextLength ?? Infinity;
  const examples: Example[] = [];
  // Line by line, so a bad byte is named by its line, and no string holds the whole file (V8's
  // strings stop at half a gigabyte).
  for (let start = 0, line = 1; start < jsonl.length; line++) {
    const lf = jsonl.indexOf(0x0a, start);
    const end = lf === -1 ? jsonl.length : lf;
    let text: string;
    try {
      text = decodeUtf8(jsonl.subarray(start, end), line === 1);
    } catch (error) {
      throw new DataError(
        file,
        line,
        `${file} line ${line} is not valid UTF-8 (from byte ${(error as InvalidUtf8Error).offset + 1} of the line)`,
      );
    }
    start = end + 1;
    if (text.trim() === '') continue;
    const example = parseLine(file, line, text, labelled, known);
    try {
      checkText(example.text, `${file} line ${line}`, maxTextLength);
    } catch (error) {
      if (!(error instanceof InvalidArgumentError)) throw error;
      throw new DataError(file, line, error.message);
    }
    examples.push(example);
  }
  if (examples.length === 0)
    throw new DataError(file, undefined, `${file} holds no ${labelled ? 'examples' : 'texts'}`);
  return { file, examples, sha256 };
}

function parseLine(
  file: string,
  line: number,
  text: string,
  labelled: boolean,
  known: ReadonlySet<string> | undefined,
): Example {
  let row: unknown;
  try {
    row = JSON.parse(text);
  } catch (error) {
    throw new DataError(file, line, `${file} line ${line} is not valid JSON: ${(error as Error).message}`);
  }
  const { text: t, label } = (row ?? {}) as { text?: unknown; label?: unknown };
  if (typeof t !== 'string' || (labelled && typeof label !== 'string')) {
    throw new DataError(
      file,
      line,
      `${file} line ${line}: expected {"text": string${labelled ? ', "label": string' : ''}}`,
    );
  }
  if (known && !known.has(label as string)) {
    throw new DataError(
      file,
      line,
      `${file} line ${line}: label ${JSON.stringify(label)} is not one of the model's labels`,
    );
  }
  return { text: t, label: typeof label === 'string' ? label : '', line };
}
