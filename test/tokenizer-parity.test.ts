// bertgate's tokenizer against the pinned Python `tokenizers` on the golden corpus
// (python -m bertgate_export.tokenizer_corpus): 2,000 texts and 600 pairs, in English,
// German, Turkish, CJK, emoji, accents, control and zero-width characters, whitespace-only
// and 10,000-character texts, for cased, uncased and Turkish-uncased WordPiece, under every
// truncation strategy and side. Ids, type ids, truncation flags, errors and padded masks.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';

import { TextTokenizer, type TruncationSide, type TruncationStrategy } from '../lib/tokenizer.js';
import { FIXTURES } from './helpers.js';

type Expected = { ids: number[]; type_ids: number[]; truncated: boolean } | { error: string };

interface Golden {
  max_length: number;
  texts: string[];
  pairs: Array<[string, string]>;
  tokenizers: Record<
    string,
    {
      singles: Record<string, Expected[]>;
      pairs: Record<string, Expected[]>;
      padded: Array<{ start: number; ids: number[][]; attention_mask: number[][] }>;
    }
  >;
}

const DIR = join(FIXTURES, 'tokenizers');
const golden: Golden = JSON.parse(await readFile(join(DIR, 'tokenizer-parity.json'), 'utf8')) as Golden;

function settings(key: string): { strategy: TruncationStrategy; side: TruncationSide } {
  const [strategy, side] = key.split('/') as [TruncationStrategy, TruncationSide];
  return { strategy, side };
}

function load(name: string, key: string): Promise<TextTokenizer> {
  return TextTokenizer.load(join(DIR, name, 'tokenizer.json'), {
    maxLength: golden.max_length,
    padToMultipleOf: 1,
    ...settings(key),
  });
}

describe('tokenizer parity with Python tokenizers', () => {
  before(() => {
    assert.ok(golden.texts.length >= 2000, `${golden.texts.length} texts`);
    assert.ok(golden.texts.some((t) => t.length === 10_000));
  });

  for (const [name, expected] of Object.entries(golden.tokenizers)) {
    describe(name, () => {
      for (const [key, want] of Object.entries(expected.singles)) {
        it(`${golden.texts.length} texts, truncation ${key}`, async () => {
          const tokenizer = await load(name, key);
          const got = await tokenizer.encode(golden.texts);
          got.forEach((g, i) => {
            const w = want[i] as Expected;
            assert.ok(!('error' in w), `Python failed on text ${i}`);
            assert.deepEqual(
              { ids: g.ids, type_ids: g.typeIds ?? g.ids.map(() => 0), truncated: g.truncated },
              w,
              `text ${i}: ${JSON.stringify(golden.texts[i]?.slice(0, 80))}`,
            );
          });
        });
      }

      for (const [key, want] of Object.entries(expected.pairs)) {
        it(`${golden.pairs.length} pairs, truncation ${key}`, async () => {
          const tokenizer = await load(name, key);
          // One call per pair, so that a pair HF refuses fails alone, as in Python.
          const got = await Promise.allSettled(golden.pairs.map((pair) => tokenizer.encode([pair])));
          got.forEach((g, i) => {
            const w = want[i] as Expected;
            if ('error' in w) {
              assert.equal(g.status, 'rejected', `pair ${i}: Python refused (${w.error}), bertgate did not`);
              return;
            }
            assert.equal(g.status, 'fulfilled', `pair ${i}: ${g.status === 'rejected' ? String(g.reason) : ''}`);
            const e = (g as PromiseFulfilledResult<Awaited<ReturnType<TextTokenizer['encode']>>>).value[0];
            assert.ok(e?.typeIds, 'a pair always carries its type ids');
            assert.deepEqual({ ids: e?.ids, type_ids: e?.typeIds, truncated: e?.truncated }, w, `pair ${i}`);
          });
        });
      }

      it('pads batches to their longest row with the same ids and attention mask', async () => {
        const tokenizer = await load(name, 'longest_first/right');
        for (const batch of expected.padded) {
          const rows = batch.ids.length;
          const padded = tokenizer.pad(await tokenizer.encode(golden.texts.slice(batch.start, batch.start + rows)));
          const seqLen = padded.seqLen;
          assert.equal(seqLen, batch.ids[0]?.length);
          for (let r = 0; r < rows; r++) {
            assert.deepEqual(Array.from(padded.ids.subarray(r * seqLen, (r + 1) * seqLen)), batch.ids[r]);
            assert.deepEqual(Array.from(padded.mask.subarray(r * seqLen, (r + 1) * seqLen)), batch.attention_mask[r]);
          }
        }
      });
    });
  }
});
