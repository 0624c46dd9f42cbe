/** The last N latencies, for percentiles without unbounded memory. */
export class LatencyWindow {
  readonly #samples: Float64Array;
  #next = 0;
  #count = 0;
  #max = 0;

  constructor(size = 10_000) {
    this.#samples = new Float64Array(size);
  }

  add(ms: number): void {
    this.#samples[this.#next] = ms;
    this.#next = (this.#next + 1) % this.#samples.length;
    this.#count = Math.min(this.#count + 1, this.#samples.length);
    this.#max = Math.max(this.#max, ms);
  }

  /** Nearest-rank percentiles of the window; the max is over all time. */
  summary(): { p50: number; p90: number; p99: number; max: number; count: number } {
    const sorted = this.#samples.slice(0, this.#count).sort();
    const at = (p: number): number => (sorted.length === 0 ? 0 : (sorted[Math.ceil(p * sorted.length) - 1] as number));
    return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: this.#max, count: this.#count };
  }
}
