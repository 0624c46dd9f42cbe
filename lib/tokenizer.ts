/**
 * Text to token ids with the bundle's own tokenizer.json, through HF's Rust `tokenizers`
 * (npm): the same core as the Python library, so ids, type ids and truncation match it
 * exactly (test/tokenizer-parity.test.ts checks a 2,000-text golden corpus). Encoding runs
 * on the libuv pool, never on the JS thread. Sequences are truncated to the model's maximum
 * length the way HF truncates, special tokens kept, and each encoding says whether anything
 * was cut.
 */

import { readFile } from 'node:fs/promises';

import { BundleError, InvalidArgumentError } from './errors.js';

type TokenizersModule = typeof import('tokenizers');
type HfTokenizer = InstanceType<TokenizersModule['Tokenizer']>;
type HfEncoding = Awaited<ReturnType<HfTokenizer['encode']>>;

let tokenizers: Promise<TokenizersModule> | undefined;

function loadTokenizers(): Promise<TokenizersModule> {
  // tokenizers' encodeBatch fans out over a rayon pool sized to every core by default, which
  // competes with inference and the event loop; one thread unless the user chose otherwise.
  process.env['RAYON_NUM_THREADS'] ??= '1';
  tokenizers ??= import('tokenizers');
  return tokenizers;
}

/** HF's truncation strategies, by their Python names. */
export type TruncationStrategy = 'longest_first' | 'only_first' | 'only_second';
export type TruncationSide = 'right' | 'left';

export interface TokenizerOptions {
  maxLength: number;
  strategy: TruncationStrategy;
  side: TruncationSide;
}

/** One input: a text, or a text pair (type ids 0 and 1, as for sentence-pair tasks). */
export type TokenizerInput = string | readonly [string, string];

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

const STRATEGY = { longest_first: 'LongestFirst', only_first: 'OnlyFirst', only_second: 'OnlySecond' } as const;
// The binding wants the strategy as its enum's name but the direction in lower case (its
// TruncationDirection values, 'Right'/'Left', are refused).
const SIDE = { right: 'right', left: 'left' } as const;

function toEncoded(e: HfEncoding): Encoded {
  return { ids: e.getIds(), typeIds: e.getTypeIds(), truncated: e.getOverflowing().length > 0 };
}

export class TextTokenizer {
  readonly vocabSize: number;
  readonly options: Readonly<TokenizerOptions>;
  readonly padId: number;
  readonly #tokenizer: HfTokenizer;

  private constructor(tokenizer: HfTokenizer, options: TokenizerOptions) {
    this.#tokenizer = tokenizer;
    this.options = options;
    this.vocabSize = tokenizer.getVocabSize(true);
    this.padId = tokenizer.tokenToId('[PAD]') ?? 0;
  }

  static async load(path: string, options: TokenizerOptions): Promise<TextTokenizer> {
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
    tokenizer.setTruncation(options.maxLength, {
      strategy: STRATEGY[options.strategy] as never,
      direction: SIDE[options.side],
    });
    return new TextTokenizer(tokenizer, options);
  }

  /**
   * Encodes in input order. Single texts go through one batch call; pairs, which the npm
   * binding's batch call does not take, one call each (all in flight at once).
   * @throws {InvalidArgumentError} when HF cannot truncate an input as configured
   *   (e.g. 'only_second' for a single text that is too long)
   */
  async encode(inputs: readonly TokenizerInput[]): Promise<Encoded[]> {
    const singles: string[] = [];
    const singleAt: number[] = [];
    const out: Array<Promise<Encoded> | Encoded> = new Array(inputs.length);
    inputs.forEach((input, i) => {
      if (typeof input === 'string') {
        singles.push(input);
        singleAt.push(i);
      } else {
        out[i] = this.#tokenizer.encode(input[0], input[1]).then(toEncoded, (e: unknown) => this.#failed(e, i));
      }
    });
    if (singles.length > 0) {
      let encodings: HfEncoding[];
      try {
        encodings = await this.#tokenizer.encodeBatch(singles);
      } catch (error) {
        throw this.#failed(error, undefined);
      }
      encodings.forEach((e, k) => (out[singleAt[k] as number] = toEncoded(e)));
    }
    return Promise.all(out);
  }

  #failed(error: unknown, index: number | undefined): never {
    const where = index === undefined ? 'a text' : `texts[${index}]`;
    const { strategy, side, maxLength } = this.options;
    throw new InvalidArgumentError(
      `The tokenizer cannot encode ${where} with truncation "${strategy}" (${side}, ${maxLength} tokens): ${(error as Error).message}`,
    );
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
