// bertgate classify: texts from the arguments or stdin, one JSON decision per line out.
//
// stdin follows the library's rule for bytes: UTF-8, decoded strictly (invalid bytes are an
// error, never replaced with U+FFFD). Every error about a text names where it came from: the
// stdin line (counting blank ones) or the argument, not its place in a chunk.

import { parseArgs } from 'node:util';

import { Classifier } from '../classifier.js';
import { InvalidArgumentError } from '../errors.js';
import { InvalidUtf8Error, decodeUtf8 } from '../text-decoding.js';
import { MODEL_FLAGS, classifierOptions } from './options.js';

// Lines are classified in chunks, so a long stdin stream is neither held whole in memory
// nor sent to the model one text at a time.
const CHUNK = 256;

function textOfLine(line: string, number: number): string {
  if (!line.startsWith('{')) return line;
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return line; // plain text that happens to start with a brace
  }
  const text = (parsed as { text?: unknown }).text;
  if (typeof text !== 'string')
    throw new InvalidArgumentError(`stdin line ${number}: a JSON line needs a string "text" field`);
  return text;
}

/**
 * stdin split into lines at LF (a CR before it is dropped), numbered from 1, decoded by the
 * one UTF-8 rule (text-decoding.ts: a byte order mark is dropped at the start of the stream),
 * in time linear in its size: each chunk is searched once, and a line's parts are joined once,
 * when it ends. A line longer than `maxLineBytes` is an error as soon as it gets there, not
 * after it has been read whole.
 */
async function* stdinLines(maxLineBytes: number): AsyncGenerator<{ line: string; number: number }> {
  let parts: Buffer[] = [];
  let pendingBytes = 0;
  let number = 0;
  const decode = (bytes: Buffer): string => {
    number++;
    const end = bytes.length > 0 && bytes[bytes.length - 1] === 0x0d ? bytes.length - 1 : bytes.length;
    try {
      return decodeUtf8(bytes.subarray(0, end), number === 1);
    } catch (error) {
      throw new InvalidArgumentError(
        `stdin line ${number}: expected UTF-8 text, got bytes that are not valid UTF-8 ` +
          `(from byte ${(error as InvalidUtf8Error).offset + 1} of the line)`,
      );
    }
  };
  const take = (tail: Buffer): Buffer => {
    const line = parts.length === 0 ? tail : Buffer.concat([...parts, tail]);
    parts = [];
    pendingBytes = 0;
    return line;
  };
  for await (const data of process.stdin as AsyncIterable<Buffer>) {
    let start = 0;
    for (let lf = data.indexOf(0x0a); lf !== -1; lf = data.indexOf(0x0a, start)) {
      if (pendingBytes + lf - start > maxLineBytes) break;
      yield { line: decode(take(data.subarray(start, lf))), number };
      start = lf + 1;
    }
    if (pendingBytes + data.length - start > maxLineBytes) {
      throw new InvalidArgumentError(
        `stdin line ${number + 1} is longer than ${maxLineBytes} bytes, more than a text of at most maxTextLength characters can take`,
      );
    }
    if (start < data.length) {
      parts.push(data.subarray(start));
      pendingBytes += data.length - start;
    }
  }
  if (pendingBytes > 0) yield { line: decode(take(Buffer.alloc(0))), number };
}

interface Chunk {
  texts: string[];
  /** Where each text came from, as an error names it. */
  origins: string[];
}

async function* stdinChunks(maxLineBytes: number): AsyncGenerator<Chunk> {
  let chunk: Chunk = { texts: [], origins: [] };
  for await (const { line, number } of stdinLines(maxLineBytes)) {
    if (line.trim() === '') continue;
    chunk.texts.push(textOfLine(line, number));
    chunk.origins.push(`stdin line ${number}`);
    if (chunk.texts.length === CHUNK) {
      yield chunk;
      chunk = { texts: [], origins: [] };
    }
  }
  if (chunk.texts.length > 0) yield chunk;
}

/** The library names a text by its index in the call (`texts[i]`); the user knows its origin. */
function renamed(error: unknown, origins: readonly string[]): unknown {
  if (!(error instanceof InvalidArgumentError)) return error;
  const message = error.message.replace(/\btexts\[(\d+)\]/g, (all, i: string) => origins[Number(i)] ?? all);
  return message === error.message ? error : new InvalidArgumentError(message, { cause: error });
}

export async function classifyCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: MODEL_FLAGS, allowPositionals: true, strict: true });
  const { bundle, options } = classifierOptions(values);
  const classifier = await Classifier.load(bundle, options);
  try {
    const chunks: AsyncIterable<Chunk> | Chunk[] =
      positionals.length > 0
        ? [{ texts: positionals, origins: positionals.map((_, i) => `argument ${i + 1}`) }]
        : // A JSONL line may spell each character as a 12-byte escaped surrogate pair, plus its keys.
          stdinChunks(12 * classifier.info.maxTextLength + 4096);
    for await (const { texts, origins } of chunks) {
      const decisions = await classifier.classify(texts).catch((error: unknown) => {
        throw renamed(error, origins);
      });
      process.stdout.write(decisions.map((d) => JSON.stringify(d)).join('\n') + '\n');
    }
  } finally {
    await classifier.close();
  }
  return 0;
}
