/** Logits, or served probabilities, of many texts through a classifier, in chunks, reporting progress. */

import type { Classifier } from '../classifier.js';

const CHUNK = 512;

/** `call` over the texts CHUNK at a time, its rows in order. */
async function inChunks(
  texts: readonly string[],
  call: (chunk: string[]) => Promise<Float32Array[]>,
  onProgress?: (done: number, total: number) => void,
): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (let start = 0; start < texts.length; start += CHUNK) {
    out.push(...(await call(texts.slice(start, start + CHUNK))));
    onProgress?.(out.length, texts.length);
  }
  return out;
}

export function logitsOf(
  classifier: Classifier<string, string>,
  texts: readonly string[],
  onProgress?: (done: number, total: number) => void,
): Promise<Float32Array[]> {
  return inChunks(texts, (chunk) => classifier.logits(chunk), onProgress);
}

/** The pooled features of many texts (the model must return them), in chunks, reporting progress. */
export function featuresOf(
  classifier: Classifier<string, string>,
  texts: readonly string[],
  onProgress?: (done: number, total: number) => void,
): Promise<Float32Array[]> {
  return inChunks(texts, (chunk) => classifier.features(chunk), onProgress);
}

/**
 * The max probability the classifier serves for each text (its fused fp32 pass at its
 * temperature, as decisions carry it; 0 for a text with invalid logits).
 */
export async function servedMaxProbability(
  classifier: Classifier<string, string>,
  texts: readonly string[],
  onProgress?: (done: number, total: number) => void,
): Promise<Float64Array> {
  const out = new Float64Array(texts.length);
  for (let start = 0; start < texts.length; start += CHUNK) {
    const decisions = await classifier.classify(texts.slice(start, start + CHUNK));
    decisions.forEach((d, i) => (out[start + i] = d.probability));
    onProgress?.(Math.min(texts.length, start + CHUNK), texts.length);
  }
  return out;
}
