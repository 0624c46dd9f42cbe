/**
 * Text to token ids with the bundle's own tokenizer.json, through HF's Rust `tokenizers`
 * (npm): the same core as the Python library, so ids, type ids and truncation match it
 * exactly (test/tokenizer-parity.test.ts checks a 2,000-text golden corpus). Encoding runs
 * on the libuv pool, never on the JS thread. Sequences are truncated to the model's maximum
 * length the way HF truncates, special tokens kept, and each encoding says whether anything
 * was cut.
 */

import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';

import { BundleError, InvalidArgumentError } from './errors.js';
import { decodeUtf8 } from './text-decoding.js';

type TokenizersModule = typeof import('tokenizers');
type HfTokenizer = InstanceType<TokenizersModule['Tokenizer']>;
type HfEncoding = Awaited<ReturnType<HfTokenizer['encode']>>;

let tokenizers: Promise<TokenizersModule> | undefined;

function loadTokenizers(): Promise<TokenizersModule> {
  // By default the binding fans each encodeBatch out over a rayon pool of every core, on top
  // of the libuv thread that called it, which competes with inference and the event loop.
  // Serial encoding on the calling pool thread instead makes parallelism explicit: large
  // lists are split below, at most one part per core (docs/benchmarks.md, "Tokenizer", has
  // the figures against Python). The user's setting wins.
  process.env['TOKENIZERS_PARALLELISM'] ??= 'false';
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
  /** Batches are padded to a multiple of this (at most maxLength); 1: to their longest row. */
  padToMultipleOf: number;
}

/** One input: a text, or a text pair (type ids 0 and 1, as for sentence-pair tasks). */
export type TokenizerInput = string | readonly [string, string];

export interface Encoded {
  ids: number[];
  /** null: all zeros (a single text under a template that gives it type 0 throughout). */
  typeIds: number[] | null;
  truncated: boolean;
}

/** Token arrays for one forward pass, right-padded to the batch's padded length. */
export interface PaddedBatch {
  /** [3, rows, seqLen]: ids, then the attention mask, then the type ids; what the engine takes. */
  tokens: Int32Array;
  /** Views of `tokens`, [rows * seqLen] each. */
  ids: Int32Array;
  mask: Int32Array;
  typeIds: Int32Array;
  rows: number;
  seqLen: number;
}

// Parts a long list is split into: one per core, within the libuv pool's default 4 threads;
// and the fewest texts a part is worth creating for.
const PARALLEL_PARTS = Math.max(1, Math.min(4, availableParallelism()));
const MIN_PART = 32;

const STRATEGY = { longest_first: 'LongestFirst', only_first: 'OnlyFirst', only_second: 'OnlySecond' } as const;
// The binding wants the strategy as its enum's name but the direction in lower case (its
// TruncationDirection values, 'Right'/'Left', are refused).
const SIDE = { right: 'right', left: 'left' } as const;

export class TextTokenizer {
  readonly vocabSize: number;
  readonly options: Readonly<TokenizerOptions>;
  readonly padId: number;
  readonly #tokenizer: HfTokenizer;
  readonly #singlesTypeZero: boolean;

  private constructor(tokenizer: HfTokenizer, options: TokenizerOptions, singlesTypeZero: boolean) {
    this.#tokenizer = tokenizer;
    this.options = options;
    this.vocabSize = tokenizer.getVocabSize(true);
    this.padId = tokenizer.tokenToId('[PAD]') ?? 0;
    this.#singlesTypeZero = singlesTypeZero;
  }

  // Reading arrays out of an encoding is serial work on the JS thread (per 5,000 texts: ids
  // 34 ms, type ids 32 ms, overflow 10 ms, against ~280 ms of parallel encoding), so only
  // what can differ is read.
  #toEncoded(e: HfEncoding, single: boolean): Encoded {
    const ids = e.getIds();
    return {
      ids,
      typeIds: single && this.#singlesTypeZero ? null : e.getTypeIds(),
      // Only a sequence at the limit can have been cut.
      truncated: ids.length >= this.options.maxLength && e.getOverflowing().length > 0,
    };
  }

  static async load(path: string, options: TokenizerOptions): Promise<TextTokenizer> {
    const { Tokenizer } = await loadTokenizers();
    let tokenizer: HfTokenizer;
    try {
      // Strict UTF-8 (text-decoding.ts): a bad byte is an error, not a U+FFFD token.
      tokenizer = Tokenizer.fromString(decodeUtf8(await readFile(path)));
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
    // A single text's type ids come from the post-processor's template alone, not from the
    // text: one probe tells whether they are all zero.
    const probe = await tokenizer.encode('a b');
    return new TextTokenizer(
      tokenizer,
      options,
      probe.getTypeIds().every((t) => t === 0),
    );
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
        out[i] = this.#tokenizer.encode(input[0], input[1]).then(
          (e) => this.#toEncoded(e, false),
          (e: unknown) => this.#failed(e, i),
        );
      }
    });
    if (singles.length > 0) {
      // A long list is cut into a few parts encoded at once, each one task on the libuv pool,
      // so a large call tokenizes on every core.
      const parts = Math.min(PARALLEL_PARTS, Math.ceil(singles.length / MIN_PART));
      const size = Math.ceil(singles.length / parts);
      let encodings: HfEncoding[];
      try {
        const done = await Promise.all(
          Array.from({ length: parts }, (_, p) => this.#tokenizer.encodeBatch(singles.slice(p * size, (p + 1) * size))),
        );
        encodings = done.flat();
      } catch (error) {
        throw this.#failed(error, undefined);
      }
      encodings.forEach((e, k) => (out[singleAt[k] as number] = this.#toEncoded(e, true)));
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

  /**
   * The length a batch whose longest row has `longest` tokens is padded to: rounded up to
   * padToMultipleOf, never past maxLength. Buckets make shapes repeat, so a GPU's fused
   * kernels and graph specialisations are reused (the batcher budgets with it too).
   */
  paddedLength(longest: number): number {
    const m = this.options.padToMultipleOf;
    return Math.min(Math.max(this.options.maxLength, longest), Math.ceil(Math.max(longest, 1) / m) * m);
  }

  pad(rows: readonly Encoded[]): PaddedBatch {
    const seqLen = this.paddedLength(rows.reduce((longest, r) => Math.max(longest, r.ids.length), 1));
    const size = rows.length * seqLen;
    const tokens = new Int32Array(3 * size);
    const ids = tokens.subarray(0, size).fill(this.padId);
    const mask = tokens.subarray(size, 2 * size);
    const typeIds = tokens.subarray(2 * size);
    rows.forEach((row, r) => {
      const offset = r * seqLen;
      ids.set(row.ids, offset);
      mask.fill(1, offset, offset + row.ids.length);
      if (row.typeIds) typeIds.set(row.typeIds, offset);
    });
    return { tokens, ids, mask, typeIds, rows: rows.length, seqLen };
  }
}
