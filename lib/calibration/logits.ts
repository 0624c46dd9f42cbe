/** Logits, or served probabilities, of many texts through a classifier, in chunks, reporting progress. */

import type { Classifier } from '../classifier.js';

const CHUNK = 512;

/** `call` over the texts CHUNK at a time, its rows in order. */
async function inChunks<T>(
  texts: readonly string[],
  call: (chunk: string[]) => Promise<T[]>,
  onProgress?: (done: number, total: number) => void,
): Promise<T[]> {
  const out: T[] = [];
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
 * What the classifier serves for each text, from its fused fp32 pass at its temperature, as
 * decisions carry it: the max probability (0 for a text with invalid logits) and the gate's
 * score (NaN without a gate, or for such a text). Thresholds are chosen among these values.
 */
export async function servedScores(
  classifier: Classifier<string, string>,
  texts: readonly string[],
  onProgress?: (done: number, total: number) => void,
): Promise<{ maxProbability: Float64Array; ood: Float64Array }> {
  const decisions = await inChunks(texts, (chunk) => classifier.classify(chunk), onProgress);
  return {
    maxProbability: Float64Array.from(decisions, (d) => d.probability),
    ood: Float64Array.from(decisions, (d) => d.scores?.ood ?? Number.NaN),
  };
}
