/** Logits of many texts through a classifier, in chunks, reporting progress. */

import type { Classifier } from '../classifier.js';

const CHUNK = 512;

export async function logitsOf(
  classifier: Classifier<string, string>,
  texts: readonly string[],
  onProgress?: (done: number, total: number) => void,
): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (let start = 0; start < texts.length; start += CHUNK) {
    out.push(...(await classifier.logits(texts.slice(start, start + CHUNK))));
    onProgress?.(out.length, texts.length);
  }
  return out;
}
