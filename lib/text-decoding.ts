/**
 * The one rule for turning bytes into text, wherever bertgate reads them (a caller's
 * Uint8Array, a request body, stdin, a data file): UTF-8, decoded strictly (an invalid byte is
 * an error, never replaced with U+FFFD), and one leading byte order mark dropped, since Windows
 * tools write one by default and it is an encoding mark, not text. A mark past the start is
 * text (U+FEFF) and kept.
 */

const dropBom = new TextDecoder('utf-8', { fatal: true });
const keepBom = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Bytes that are not UTF-8: `offset` is where the first ill-formed sequence starts. */
export class InvalidUtf8Error extends Error {
  readonly offset: number;
  constructor(offset: number) {
    super(`invalid UTF-8 at byte offset ${offset}`);
    this.name = 'InvalidUtf8Error';
    this.offset = offset;
  }
}

/**
 * @param atStart whether `bytes` begin a text or stream (where a byte order mark is dropped);
 *   false for a later line of one
 * @throws {InvalidUtf8Error} naming where the bytes stop being UTF-8; callers report it as
 *   their own typed error, naming the text, line or body it was
 */
export function decodeUtf8(bytes: Uint8Array, atStart = true): string {
  try {
    return (atStart ? dropBom : keepBom).decode(bytes);
  } catch {
    throw new InvalidUtf8Error(firstInvalid(bytes));
  }
}

/**
 * The offset of the first ill-formed sequence (Unicode's table 3-7 of well-formed UTF-8: no
 * overlong forms, surrogates or code points past U+10FFFF, and no sequence cut short).
 * Only called once the decoder has refused the bytes, so the fast path stays native (and the
 * loop always returns from inside).
 */
function firstInvalid(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const lead = bytes[i] as number;
    let continuation: number;
    let low = 0x80;
    let high = 0xbf;
    if (lead < 0x80) continuation = 0;
    else if (lead >= 0xc2 && lead <= 0xdf) continuation = 1;
    else if (lead >= 0xe0 && lead <= 0xef) {
      continuation = 2;
      if (lead === 0xe0) low = 0xa0;
      if (lead === 0xed) high = 0x9f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      continuation = 3;
      if (lead === 0xf0) low = 0x90;
      if (lead === 0xf4) high = 0x8f;
    } else return i;
    for (let k = 1; k <= continuation; k++) {
      const byte = bytes[i + k];
      if (byte === undefined || byte < (k === 1 ? low : 0x80) || byte > (k === 1 ? high : 0xbf)) return i;
    }
    i += continuation + 1;
  }
  return bytes.length;
}
