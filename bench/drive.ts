// Closed-loop load: `concurrency` clients, each sending its next text as soon as its last answer
// came, until `requests` texts were sent; latency per call and the event loop's worst gap while it
// ran. The batching and replicas benchmarks drive the classifier the same way.

import { watchLoop } from './native.js';

export interface Run {
  textsPerS: number;
  p50: number;
  p99: number;
  worstGapMs: number;
}

export function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? 0 : (sorted[Math.ceil(p * sorted.length) - 1] as number);
}

/** `requests` single-text calls from `concurrency` closed-loop clients, over `texts` in turn. */
export async function drive(
  texts: readonly string[],
  requests: number,
  concurrency: number,
  call: (text: string) => Promise<unknown>,
): Promise<Run> {
  const latencies: number[] = [];
  let next = 0;
  const stopWatching = watchLoop();
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < requests) {
        const text = texts[next++ % texts.length] as string;
        const t0 = performance.now();
        await call(text);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const elapsed = performance.now() - start;
  const worstGapMs = stopWatching();
  latencies.sort((a, b) => a - b);
  return {
    textsPerS: (requests * 1000) / elapsed,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    worstGapMs,
  };
}
