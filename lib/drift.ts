/**
 * Whether the texts a classifier sees still look like its calibration set: the condition every
 * guarantee calibrate writes depends on. A conformal test martingale, after Vovk et al.
 * ("Testing exchangeability on-line", 2003; "Conformal test martingales for change-point
 * detection", 2021):
 *
 * 1. Each text's score (the max probability the classifier serves, 0 for invalid logits) gets
 *    a smoothed conformal p-value: its rank among the calibration scores and every score seen
 *    since, ties broken at random. While the stream is exchangeable with the calibration set,
 *    these p-values are independent and uniform on [0, 1].
 * 2. A test martingale bets on them: the Simple Jumper, a mixture of the betting functions
 *    1 + e (p - 1/2) for e in {-1, 0, 1} that lets a small share J of its wealth jump between
 *    them at each step, so that it is never far from the best of them since the last change
 *    (a plain product would first lose for thousands of texts before it could win). It bets
 *    both ways: texts less confident than calibration (new topics, noise) and more confident
 *    (a stream narrowed to a few easy labels).
 * 3. The alarm: its value reaching 1 / alpha. By Ville's inequality, over an unbounded stream
 *    of exchangeable texts this happens with probability at most alpha, ever.
 *
 * Scores are ranked in a Fenwick tree over 4,096 bins of logit(p) on [-20, 20] (resolution
 * where confidences crowd near 1; within a bin the random tie-break keeps the p-value exact):
 * O(log bins) per text, and nothing is allocated per text. Beside it, the share of recent texts
 * accepted against the coverage calibrate measured.
 */

import { DriftStateError } from './errors.js';

export const DRIFT_BINS = 4096;
const LOGIT_RANGE = 20;
const JUMP = 0.01;
const BETS = [-1, 0, 1] as const;
/** The largest stake: a text can cost the martingale at most this half of its value. */
const MAX_BET = Math.max(...BETS.map(Math.abs));
/** Texts over which the recent acceptance rate is taken. */
export const ACCEPTANCE_WINDOW = 1000;

export interface DriftReference {
  /** The calibration texts' served max probabilities, counted by bin (driftCounts). */
  counts: ArrayLike<number>;
  /** The share of calibration texts the thresholds accept. */
  coverage: number;
  /** Identifies the calibration: a saved state is restored only against the same one. */
  id: string;
}

export interface DriftStats {
  /** Texts observed since the start (or the last reset). */
  texts: number;
  /** The test martingale's current value; an alarm at 1 / alpha. */
  martingale: number;
  /** The largest value it reached. */
  peak: number;
  alpha: number;
  alarm: boolean;
  /** The text (1-based, since the start or reset) at which the alarm went off. */
  alarmAt: number | null;
  acceptance: {
    /** Share of the last `window` texts (or fewer, at the start) accepted. */
    recent: number;
    window: number;
    /** What calibrate measured on its data. */
    calibrated: number;
  };
}

/** Everything needed to carry a monitor across a restart; restored only against the same calibration. */
export interface DriftState {
  calibration: string;
  alpha: number;
  texts: number;
  /** Bin counts of the scores seen since the start (the calibration's are rebuilt from it). */
  seen: number[];
  weights: number[];
  logScale: number;
  peak: number;
  alarmAt: number | null;
  recent: number[];
}

/** The bin counts of scores, as calibration.json stores them (4,096 integers, not 9,000 floats). */
export function driftCounts(scores: Iterable<number>): number[] {
  const counts = new Array<number>(DRIFT_BINS).fill(0);
  for (const s of scores) counts[bin(s)] = (counts[bin(s)] as number) + 1;
  return counts;
}

/** The martingale's value, capped at the largest double: Infinity would print as null in JSON. */
function martingale(logScale: number): number {
  return Math.min(Math.exp(logScale), Number.MAX_VALUE);
}

function bin(score: number): number {
  const p = Math.min(Math.max(score, 1e-12), 1 - 1e-12);
  const logit = Math.log(p / (1 - p));
  const b = Math.floor(((logit + LOGIT_RANGE) / (2 * LOGIT_RANGE)) * DRIFT_BINS);
  return Math.min(DRIFT_BINS - 1, Math.max(0, b));
}

/** A Fenwick tree of counts by bin: add and prefix sums in O(log bins). */
class Counts {
  readonly #tree = new Float64Array(DRIFT_BINS + 1);
  readonly #bins = new Float64Array(DRIFT_BINS);
  total = 0;

  add(b: number, count = 1): void {
    this.#bins[b] = (this.#bins[b] as number) + count;
    this.total += count;
    for (let i = b + 1; i <= DRIFT_BINS; i += i & -i) this.#tree[i] = (this.#tree[i] as number) + count;
  }

  /** Count of bins strictly below b. */
  below(b: number): number {
    let sum = 0;
    for (let i = b; i > 0; i -= i & -i) sum += this.#tree[i] as number;
    return sum;
  }

  at(b: number): number {
    return this.#bins[b] as number;
  }
}

export class DriftMonitor {
  readonly alpha: number;
  readonly reference: DriftReference;
  readonly #random: () => number;
  #counts = new Counts();
  #seen = new Float64Array(DRIFT_BINS);
  // The jumper's wealth per bet, kept summing to 1 and scaled by exp(#logScale): no overflow
  // however long the stream.
  #weights = new Float64Array(BETS.length);
  #logScale = 0;
  #texts = 0;
  #peak = 1;
  #alarmAt: number | null = null;
  readonly #recent = new Uint8Array(ACCEPTANCE_WINDOW);
  #accepted = 0;

  constructor(reference: DriftReference, alpha: number, random: () => number = Math.random) {
    if (!(alpha > 0 && alpha < 1)) throw new RangeError(`alpha must be in (0, 1), got ${alpha}`);
    this.alpha = alpha;
    this.reference = reference;
    this.#random = random;
    this.reset();
  }

  /** Back to the calibration alone: after re-calibrating, or once a drift was dealt with. */
  reset(): void {
    this.#counts = new Counts();
    for (let b = 0; b < DRIFT_BINS; b++) {
      const count = this.reference.counts[b] as number;
      if (count > 0) this.#counts.add(b, count);
    }
    this.#seen.fill(0);
    this.#weights.fill(1 / BETS.length);
    this.#logScale = 0;
    this.#texts = 0;
    this.#peak = 1;
    this.#alarmAt = null;
    this.#recent.fill(0);
    this.#accepted = 0;
  }

  /** One text's score and whether it was accepted; true when this text set the alarm off. */
  observe(score: number, accepted: boolean): boolean {
    const b = bin(Number.isFinite(score) ? score : 0);
    this.#counts.add(b);
    this.#seen[b] = (this.#seen[b] as number) + 1;
    // Smoothed conformal p-value of this text among all so far (itself included).
    const p = (this.#counts.below(b) + this.#random() * this.#counts.at(b)) / this.#counts.total;

    let total = 0;
    for (let i = 0; i < BETS.length; i++) total += this.#weights[i] as number;
    let next = 0;
    for (let i = 0; i < BETS.length; i++) {
      const w =
        ((1 - JUMP) * (this.#weights[i] as number) + (JUMP * total) / BETS.length) *
        (1 + (BETS[i] as number) * (p - 0.5));
      this.#weights[i] = w;
      next += w;
    }
    for (let i = 0; i < BETS.length; i++) this.#weights[i] = (this.#weights[i] as number) / next;
    this.#logScale += Math.log(next / total);

    const slot = this.#texts % ACCEPTANCE_WINDOW;
    this.#accepted += (accepted ? 1 : 0) - (this.#recent[slot] as number);
    this.#recent[slot] = accepted ? 1 : 0;
    this.#texts++;

    const value = martingale(this.#logScale);
    if (value > this.#peak) this.#peak = value;
    if (this.#alarmAt === null && this.#logScale >= Math.log(1 / this.alpha)) {
      this.#alarmAt = this.#texts;
      return true;
    }
    return false;
  }

  stats(): DriftStats {
    const window = Math.min(this.#texts, ACCEPTANCE_WINDOW);
    return {
      texts: this.#texts,
      martingale: martingale(this.#logScale),
      peak: this.#peak,
      alpha: this.alpha,
      alarm: this.#alarmAt !== null,
      alarmAt: this.#alarmAt,
      acceptance: {
        recent: window === 0 ? Number.NaN : this.#accepted / window,
        window,
        calibrated: this.reference.coverage,
      },
    };
  }

  state(): DriftState {
    return {
      calibration: this.reference.id,
      alpha: this.alpha,
      texts: this.#texts,
      seen: Array.from(this.#seen),
      weights: Array.from(this.#weights),
      logScale: this.#logScale,
      peak: this.#peak,
      alarmAt: this.#alarmAt,
      // Oldest first.
      recent: Array.from({ length: Math.min(this.#texts, ACCEPTANCE_WINDOW) }, (_, i) => {
        const start = this.#texts > ACCEPTANCE_WINDOW ? this.#texts % ACCEPTANCE_WINDOW : 0;
        return this.#recent[(start + i) % ACCEPTANCE_WINDOW] as number;
      }),
    };
  }

  /** Continues from a saved state; throws DriftStateError naming what disagrees. */
  restore(state: DriftState): void {
    if (typeof state !== 'object' || state === null || Array.isArray(state)) {
      throw new DriftStateError(
        `a drift state is an object from driftState(), got ${state === null ? 'null' : typeof state}`,
      );
    }
    if (state.calibration !== this.reference.id) {
      throw new DriftStateError(
        `the drift state was saved against calibration ${state.calibration}; this classifier's is ${this.reference.id}`,
      );
    }
    if (state.alpha !== this.alpha) {
      throw new DriftStateError(`the drift state was saved with alpha ${state.alpha}; this monitor has ${this.alpha}`);
    }
    const counts = (xs: unknown, n: number): xs is number[] =>
      Array.isArray(xs) && xs.length === n && xs.every((x) => typeof x === 'number' && Number.isFinite(x) && x >= 0);
    if (
      !counts(state.seen, DRIFT_BINS) ||
      !state.seen.every(Number.isInteger) ||
      !counts(state.weights, BETS.length) ||
      // Weights that sum to 0 or overflow would make every later bet NaN: an alarm that never fires.
      !(state.weights.reduce((a, b) => a + b, 0) > 0 && Number.isFinite(state.weights.reduce((a, b) => a + b, 0))) ||
      typeof state.peak !== 'number' ||
      !(state.peak >= 1 && state.peak <= Number.MAX_VALUE) ||
      !Number.isSafeInteger(state.texts) ||
      // What a run of driftState() can hold: a martingale no lower than every bet lost, below
      // the alarm level unless the alarm went off, and a peak at least where it is now.
      !(state.logScale >= state.texts * (Math.log(1 - MAX_BET / 2) - 1e-9)) ||
      (state.alarmAt === null && !(state.logScale < Math.log(1 / this.alpha))) ||
      !(state.peak >= martingale(state.logScale) * (1 - 1e-9)) ||
      !(
        state.alarmAt === null ||
        (Number.isInteger(state.alarmAt) && state.alarmAt >= 1 && state.alarmAt <= state.texts)
      ) ||
      !Number.isInteger(state.texts) ||
      state.seen.reduce((a, b) => a + b, 0) !== state.texts ||
      !Number.isFinite(state.logScale) ||
      !Array.isArray(state.recent) ||
      state.recent.length !== Math.min(state.texts, ACCEPTANCE_WINDOW) ||
      !state.recent.every((r) => r === 0 || r === 1)
    ) {
      throw new DriftStateError(
        'the drift state is malformed (its counts, weights, peak, alarmAt or recent acceptances are not what driftState() writes)',
      );
    }
    this.reset();
    state.seen.forEach((count, b) => {
      if (count > 0) this.#counts.add(b, count);
      this.#seen[b] = count;
    });
    const sum = state.weights.reduce((a, b) => a + b, 0);
    state.weights.forEach((w, i) => (this.#weights[i] = w / sum));
    this.#logScale = state.logScale;
    this.#texts = state.texts;
    this.#peak = state.peak;
    this.#alarmAt = state.alarmAt;
    // Lay the recent acceptances back so that the next text overwrites the oldest.
    const start = state.texts > ACCEPTANCE_WINDOW ? state.texts % ACCEPTANCE_WINDOW : 0;
    state.recent.forEach((r, i) => (this.#recent[(start + i) % ACCEPTANCE_WINDOW] = r));
    this.#accepted = state.recent.reduce<number>((a, b) => a + b, 0);
  }
}
