// The benchmarks' texts: the `text` of each line of a JSON-lines file, gzipped or not (the
// Debian splits under data/debian are gzipped).

import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';

export async function readTexts(file: string): Promise<string[]> {
  const raw = await readFile(file);
  return (file.endsWith('.gz') ? gunzipSync(raw) : raw)
    .toString('utf8')
    .trim()
    .split('\n')
    .map((line) => (JSON.parse(line) as { text: string }).text);
}
