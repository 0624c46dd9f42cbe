// bertgate classify: texts from the arguments or stdin, one JSON decision per line out.

import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';

import { Classifier } from '../classifier.js';
import { InvalidArgumentError } from '../errors.js';
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

async function* stdinChunks(): AsyncGenerator<string[]> {
  let chunk: string[] = [];
  let number = 0;
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    number++;
    if (line.trim() === '') continue;
    chunk.push(textOfLine(line, number));
    if (chunk.length === CHUNK) {
      yield chunk;
      chunk = [];
    }
  }
  if (chunk.length > 0) yield chunk;
}

export async function classifyCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: MODEL_FLAGS, allowPositionals: true, strict: true });
  const { bundle, options } = classifierOptions(values);
  const classifier = await Classifier.load(bundle, options);
  try {
    const chunks = positionals.length > 0 ? [positionals] : stdinChunks();
    for await (const texts of chunks) {
      const decisions = await classifier.classify(texts);
      process.stdout.write(decisions.map((d) => JSON.stringify(d)).join('\n') + '\n');
    }
  } finally {
    await classifier.close();
  }
  return 0;
}
