/** Labelled examples for calibrate and evaluate: JSONL of {"text", "label"}, optionally gzipped. */

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';

import { DataError } from '../errors.js';

export interface Example {
  text: string;
  label: string;
}

export interface LabelledData {
  file: string;
  examples: Example[];
  /** Of the file's bytes as stored (compressed or not): says which data a calibration used. */
  sha256: string;
}

/**
 * @param labels when given, every example's label must be one of them
 */
export async function readLabelled(file: string, labels?: readonly string[]): Promise<LabelledData> {
  return readJsonl(file, labels, true);
}

/**
 * Texts with or without a label (`{"text"}` lines; a "label" is allowed and ignored): the
 * out-of-distribution sets of `evaluate --ood`, which have no label of the model's.
 */
export async function readTexts(file: string): Promise<string[]> {
  return (await readJsonl(file, undefined, false)).examples.map((e) => e.text);
}

async function readJsonl(
  file: string,
  labels: readonly string[] | undefined,
  labelled: boolean,
): Promise<LabelledData> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (error) {
    throw new DataError(file, undefined, `${file} could not be read: ${(error as Error).message}`);
  }
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const text = (file.endsWith('.gz') ? await promisify(gunzip)(bytes) : bytes).toString('utf8');
  const known = labels ? new Set(labels) : undefined;
  const examples: Example[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (error) {
      throw new DataError(file, i + 1, `${file} line ${i + 1} is not valid JSON: ${(error as Error).message}`);
    }
    const { text: t, label } = (row ?? {}) as { text?: unknown; label?: unknown };
    if (typeof t !== 'string' || (labelled && typeof label !== 'string')) {
      throw new DataError(
        file,
        i + 1,
        `${file} line ${i + 1}: expected {"text": string${labelled ? ', "label": string' : ''}}`,
      );
    }
    if (known && !known.has(label as string)) {
      throw new DataError(
        file,
        i + 1,
        `${file} line ${i + 1}: label ${JSON.stringify(label)} is not one of the model's labels`,
      );
    }
    examples.push({ text: t, label: typeof label === 'string' ? label : '' });
  });
  if (examples.length === 0)
    throw new DataError(file, undefined, `${file} holds no ${labelled ? 'examples' : 'texts'}`);
  return { file, examples, sha256 };
}
