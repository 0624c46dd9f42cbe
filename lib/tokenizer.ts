/**
 * Text to token ids with the bundle's own tokenizer.json, through HF's Rust `tokenizers`
 * (npm), which encodes off the JS thread and matches the Python library's ids. Sequences
 * are truncated to the model's maximum length the way HF truncates (the special tokens
 * survive), and each encoding says whether anything was cut.
 */

import { readFile } from 'node:fs/promises';

import { BundleError } from './errors.js';

type TokenizersModule = typeof import('tokenizers');
type HfTokenizer = InstanceType<TokenizersModule['Tokenizer']>;

let tokenizers: Promise<TokenizersModule> | undefined;

function loadTokenizers(): Promise<TokenizersModule> {
  // tokenizers' encodeBatch fans out over a rayon pool sized to every core by default, which
  // competes with inference and the event loop; one thread unless the user chose otherwise.
  process.env['RAYON_NUM_THREADS'] ??= '1';
  tokenizers ??= import('tokenizers');
  return tokenizers;
}

export interface Encoded {
  ids: number[];
  typeIds: number[];
  truncated: boolean;
}

/** Token arrays for one forward pass, right-padded to the longest row. */
export interface PaddedBatch {
  ids: Int32Array;
  mask: Uint8Array;
  typeIds: Uint8Array;
  rows: number;
  seqLen: number;
}

export class TextTokenizer {
  readonly vocabSize: number;
  readonly maxLength: number;
  readonly padId: number;
  readonly #tokenizer: HfTokenizer;

  private constructor(tokenizer: HfTokenizer, maxLength: number) {
    this.#tokenizer = tokenizer;
    this.maxLength = maxLength;
    this.vocabSize = tokenizer.getVocabSize(true);
    this.padId = tokenizer.tokenToId('[PAD]') ?? 0;
  }

  static async load(path: string, maxLength: number): Promise<TextTokenizer> {
    const { Tokenizer } = await loadTokenizers();
    let tokenizer: HfTokenizer;
    try {
      tokenizer = Tokenizer.fromString(await readFile(path, 'utf8'));
    } catch (error) {
      throw new BundleError(
        'tokenizer.json',
        undefined,
        `${path} is not a usable tokenizer: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
    // The padding a tokenizer.json may carry is the caller's business here: batches are
    // padded to their own longest row below.
    tokenizer.disablePadding();
    tokenizer.setTruncation(maxLength);
    return new TextTokenizer(tokenizer, maxLength);
  }

  async encode(texts: readonly string[]): Promise<Encoded[]> {
    const encodings = await this.#tokenizer.encodeBatch([...texts]);
    return encodings.map((e) => ({
      ids: e.getIds(),
      typeIds: e.getTypeIds(),
      truncated: e.getOverflowing().length > 0,
    }));
  }

  pad(rows: readonly Encoded[]): PaddedBatch {
    const seqLen = rows.reduce((longest, r) => Math.max(longest, r.ids.length), 1);
    const ids = new Int32Array(rows.length * seqLen).fill(this.padId);
    const mask = new Uint8Array(rows.length * seqLen);
    const typeIds = new Uint8Array(rows.length * seqLen);
    rows.forEach((row, r) => {
      const offset = r * seqLen;
      ids.set(row.ids, offset);
      mask.fill(1, offset, offset + row.ids.length);
      typeIds.set(row.typeIds, offset);
    });
    return { ids, mask, typeIds, rows: rows.length, seqLen };
  }
}
