// The one UTF-8 rule (lib/text-decoding.ts): strict, one leading byte order mark dropped, the
// first bad byte named; and the library's bytes following it.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { normaliseTexts } from '../lib/inputs.js';
import { mulberry32 } from '../lib/seeded-random.js';
import { InvalidUtf8Error, decodeUtf8 } from '../lib/text-decoding.js';

const BOM = [0xef, 0xbb, 0xbf];

function offsetOf(bytes: Uint8Array): number | undefined {
  try {
    decodeUtf8(bytes);
    return undefined;
  } catch (error) {
    assert.ok(error instanceof InvalidUtf8Error);
    return error.offset;
  }
}

/** A character of one to four UTF-8 bytes, never a surrogate. */
function character(random: () => number): string {
  const top = [0x7f, 0x7ff, 0xffff, 0x10ffff][Math.floor(random() * 4)] as number;
  const code = Math.floor(random() * (top + 1));
  return String.fromCodePoint(code >= 0xd800 && code <= 0xdfff ? code - 0x800 : code);
}

describe('decodeUtf8', () => {
  it('drops one leading byte order mark, and only at the start of a text', () => {
    assert.equal(decodeUtf8(new Uint8Array([...BOM, 0x61])), 'a');
    assert.equal(decodeUtf8(new Uint8Array([...BOM, ...BOM, 0x61])), '\uFEFFa');
    assert.equal(decodeUtf8(new Uint8Array([0x61, ...BOM])), 'a\uFEFF');
    assert.equal(decodeUtf8(new Uint8Array([...BOM, 0x61]), false), '\uFEFFa');
  });

  it('refuses invalid bytes, naming where the first ill-formed sequence starts', () => {
    const cases: Array<[string, number[], number]> = [
      ['a stray continuation byte', [0x61, 0x62, 0x80], 2],
      ['0xff', [0x61, 0xff, 0xfe], 1],
      ['an overlong form', [0x61, 0xc0, 0xaf], 1],
      ['an overlong three-byte form', [0xe0, 0x80, 0xaf], 0],
      ['a surrogate', [0x61, 0xed, 0xa0, 0x80], 1],
      ['a code point past U+10FFFF', [0xf4, 0x90, 0x80, 0x80], 0],
      ['a sequence cut short', [0x61, 0xc3, 0x28], 1],
      ['a sequence cut short at the end', [0x61, 0x62, 0xe2, 0x82], 2],
      ['a bad byte after a byte order mark', [...BOM, 0x61, 0xff], 4],
    ];
    for (const [name, bytes, offset] of cases) {
      assert.equal(offsetOf(new Uint8Array(bytes)), offset, name);
    }
    assert.throws(() => decodeUtf8(new Uint8Array([0x61, 0xff])), {
      name: 'InvalidUtf8Error',
      message: 'invalid UTF-8 at byte offset 1',
    });
  });

  it('agrees with the platform decoder on random bytes, and everything before the offset decodes', () => {
    const random = mulberry32(19);
    const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
    let refused = 0;
    for (let n = 0; n < 5000; n++) {
      // Mostly valid multi-byte text with a few random bytes spliced in.
      const text = Buffer.from(Array.from({ length: 1 + Math.floor(random() * 12) }, () => character(random)).join(''));
      if (random() < 0.7) text[Math.floor(random() * text.length)] = Math.floor(random() * 256);
      let valid = true;
      try {
        strict.decode(text);
      } catch {
        valid = false;
      }
      const offset = offsetOf(text);
      assert.equal(offset === undefined, valid, `${text.toString('hex')}`);
      if (offset !== undefined) {
        refused++;
        assert.doesNotThrow(() => strict.decode(text.subarray(0, offset)), `${text.toString('hex')} at ${offset}`);
      }
    }
    assert.ok(refused > 1000, `${refused} of 5000 refused: the random bytes test the refusals`);
  });
});

describe('the library follows it', () => {
  it('drops a leading byte order mark from a Uint8Array text, as classify and serve do', () => {
    const { inputs } = normaliseTexts([new Uint8Array([...BOM, 0x61]), Buffer.from('b')], 100);
    assert.deepEqual(inputs, ['a', 'b']);
  });

  it('keeps U+FEFF at the start of a string: a string is text already, not bytes', () => {
    assert.deepEqual(normaliseTexts('\uFEFFa', 100).inputs, ['\uFEFFa']);
  });
});
