/**
 * Whether the texts a classifier sees still look like its calibration set: the condition every
 * guarantee calibrate writes depends on. Change-point detection on a conformal test martingale,
 * after Vovk et al. ("Conformal test martingales for change-point detection", 2021):
 *
 * 1. Each text's score (the max probability the classifier serves, 0 for invalid logits) gets
 *    a smoothed conformal p-value: its rank among the calibration scores and every score seen
 *    since, ties broken at random. While the stream is exchangeable with the calibration set,
 *    these p-values are independent and uniform on [0, 1].
 * 2. Bets on them, each 1 + e g(p) with g of mean 0 under uniform p: on the rank itself
 *    (g = 2p - 1: texts less or more confident than calibration's, a new topic or a stream
 *    narrowed to easy labels), and on acceptance (g steps where the calibrated share of texts
 *    is accepted: the acceptance rate moving, what "Other" depends on). Stakes e of +-1/16 to
 *    +-1/2 in each family, all in a uniform mixture: a mild shift wins with a small stake where
 *    a large one loses (the expected log gain e mu - e^2 var / 2 is negative for e > 2 mu / var).
 * 3. The Shiryaev-Roberts statistic of the mixture: the sum, over every past text, of what the
 *    bets won since it, R(n) = (R(n-1) + 1) * bet(n). It stays awake with uptime (old losses
 *    are forgotten, unlike a product since the start), and while the stream is exchangeable
 *    R(n) - n is a martingale. So with the alarm at R >= A = 1000 / alpha, the average run
 *    length between false alarms is at least A texts, and by Doob's inequality a false alarm
 *    within the first n texts after a start or reset has probability at most n / A: alpha
 *    per 1,000 texts (default 0.01: at least 100,000 texts between false alarms).
 *
 * Beside it, the mixture's test martingale since the start (no longer the alarm: by Ville it
 * reaches 1/x with probability at most x, but after a long calm stretch it is slow to rise),
 * and the share of recent texts accepted against the coverage calibrate measured.
 *
 * Scores are ranked in a Fenwick tree over 4,096 bins of logit(p) on [-20, 20] (resolution
 * where confidences crowd near 1; within a bin the random tie-break keeps the p-value exact):
 * O(log bins) per text, and nothing is allocated per text.
 */

import { DriftStateError } from './errors.js';

export const DRIFT_BINS = 4096;
const LOGIT_RANGE = 20;
/** Texts over which the recent acceptance rate is taken. */
export const ACCEPTANCE_WINDOW = 1000;
/** alpha is the false-alarm probability per this many exchangeable texts. */
const ALARM_PERIOD = 1000;
/** The version of driftState()'s format; earlier states (no version) watched another statistic. */
const STATE_VERSION = 2;

const STAKES = [1 / 16, 1 / 8, 1 / 4, 1 / 2, -1 / 16, -1 / 8, -1 / 4, -1 / 2];
/** Each bet: which g (0: the rank, 1: acceptance) and its stake; uniform prior weights. */
const BETS = [...STAKES.map((stake) => ({ family: 0, stake })), ...STAKES.map((stake) => ({ family: 1, stake }))];
const FAMILY = Uint8Array.from(BETS, (b) => b.family);
const STAKE = Float64Array.from(BETS, (b) => b.stake);
const LOG_BETS = Math.log(16);

/** log(exp(z) + 1), without overflow. */
function softplus(z: number): number {
  return z > 30 ? z + Math.log1p(Math.exp(-z)) : Math.log1p(Math.exp(z));
}

/** log(mean(exp(xs))): the log of a mixture's mean, from its members' logs. */
function logMean(xs: Float64Array): number {
  let top = Number.NEGATIVE_INFINITY;
  for (const x of xs) if (x > top) top = x;
  let sum = 0;
  for (const x of xs) sum += Math.exp(x - top);
  return top + Math.log(sum) - LOG_BETS;
}

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
  /** The Shiryaev-Roberts statistic: the evidence of a change since any past text. */
  statistic: number;
  /** The alarm level of `statistic`, 1000 / alpha: the average run length between false alarms is at least this. */
  threshold: number;
  /** The test martingale since the start or reset (not the alarm; it reaches 1/x with probability at most x). */
  martingale: number;
  /** The largest value the martingale reached. */
  peak: number;
  /** The false-alarm probability per 1,000 exchangeable texts. */
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
  version: 2;
  calibration: string;
  alpha: number;
  texts: number;
  /** Bin counts of the scores seen since the start (the calibration's are rebuilt from it). */
  seen: number[];
  /**
   * Per bet (16: the rank stakes, then the acceptance stakes), log(R + 1) of its Shiryaev-Roberts
   * statistic R: kept as logs, no bet underflows to 0 however long a drift or a calm goes on.
   */
  logStatistics: number[];
  /** Per bet, the log of its product since the start: the martingale is their mean. */
  logProducts: number[];
  /** The natural log of the martingale's peak. */
  logPeak: number;
  alarmAt: number | null;
  recent: number[];
}

/** The bin counts of scores, as calibration.json stores them (4,096 integers, not 9,000 floats). */
export function driftCounts(scores: Iterable<number>): number[] {
  const counts = new Array<number>(DRIFT_BINS).fill(0);
  for (const s of scores) counts[bin(s)] = (counts[bin(s)] as number) + 1;
  return counts;
}

/** A value from its log, capped at the largest double: Infinity would print as null in JSON. */
function fromLog(log: number): number {
  return Math.min(Math.exp(log), Number.MAX_VALUE);
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

/** The largest a bet with this stake can hold after n texts: the sum of (1 + |e|)^j for j = 1..n, as a log. */
function logStatisticBound(stake: number, n: number): number {
  const up = Math.log1p(Math.abs(stake));
  // log((1 + e)^n - 1) + log(1 + e) - log(e), without overflowing for large n.
  const grown = n * up;
  return (grown > 30 ? grown : Math.log(Math.expm1(grown))) + up - Math.log(Math.abs(stake));
}

export class DriftMonitor {
  readonly alpha: number;
  readonly threshold: number;
  readonly reference: DriftReference;
  readonly #random: () => number;
  /** Where the acceptance bets step: the p-value above which the calibrated share of texts lies. */
  readonly #step: number;
  readonly #stepScale: number;
  /** log(threshold + 1): the alarm, on the stored log of the statistic plus one. */
  readonly #logAlarm: number;
  #counts = new Counts();
  #seen = new Float64Array(DRIFT_BINS);
  // Per bet, log(R + 1) of its Shiryaev-Roberts statistic and the log of its product since the
  // start: logs, so that no bet underflows to 0 and stays there (a lost bet would leave the
  // martingale below what its bets guarantee, and a saved state no restore could accept).
  readonly #logStatistics = new Float64Array(BETS.length);
  readonly #logProducts = new Float64Array(BETS.length);
  /** log(mean R + 1): the mixture's statistic plus one. */
  #logStatistic = 0;
  #logPeak = 0;
  #texts = 0;
  #alarmAt: number | null = null;
  readonly #recent = new Uint8Array(ACCEPTANCE_WINDOW);
  #accepted = 0;

  constructor(reference: DriftReference, alpha: number, random: () => number = Math.random) {
    if (!(alpha > 0 && alpha < 1)) throw new RangeError(`alpha must be in (0, 1), got ${alpha}`);
    if (!(reference.coverage >= 0 && reference.coverage <= 1)) {
      throw new RangeError(`the drift reference's coverage must be in [0, 1], got ${reference.coverage}`);
    }
    let total = 0;
    for (let b = 0; b < DRIFT_BINS; b++) total += reference.counts[b] as number;
    if (reference.counts.length !== DRIFT_BINS || !(total >= 1 && Number.isSafeInteger(total))) {
      throw new RangeError(
        `the drift reference must count the calibration texts in ${DRIFT_BINS} bins (a total of 1 to 2^53 - 1), got ${total}`,
      );
    }
    this.alpha = alpha;
    this.threshold = ALARM_PERIOD / alpha;
    this.#logAlarm = Math.log1p(this.threshold);
    this.reference = reference;
    this.#random = random;
    this.#step = 1 - reference.coverage;
    this.#stepScale = Math.max(this.#step, reference.coverage);
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
    this.#logStatistics.fill(0);
    this.#logProducts.fill(0);
    this.#logStatistic = 0;
    this.#logPeak = 0;
    this.#texts = 0;
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

    const rank = 2 * p - 1;
    const acceptance = ((p > this.#step ? 1 : 0) - this.reference.coverage) / this.#stepScale;
    for (let i = 0; i < BETS.length; i++) {
      const logBet = Math.log1p((STAKE[i] as number) * (FAMILY[i] === 0 ? rank : acceptance));
      // R(n) = (R(n-1) + 1) * bet(n), and the stored log(R(n) + 1).
      this.#logStatistics[i] = softplus((this.#logStatistics[i] as number) + logBet);
      this.#logProducts[i] = (this.#logProducts[i] as number) + logBet;
    }
    this.#logStatistic = logMean(this.#logStatistics);
    const logM = logMean(this.#logProducts);
    if (logM > this.#logPeak) this.#logPeak = logM;

    const slot = this.#texts % ACCEPTANCE_WINDOW;
    this.#accepted += (accepted ? 1 : 0) - (this.#recent[slot] as number);
    this.#recent[slot] = accepted ? 1 : 0;
    this.#texts++;

    if (this.#alarmAt === null && this.#logStatistic >= this.#logAlarm) {
      this.#alarmAt = this.#texts;
      return true;
    }
    return false;
  }

  /** The mixture's statistic: the mean over the bets of R, from the mean of R + 1. */
  #statistic(): number {
    return this.#logStatistic > 30 ? fromLog(this.#logStatistic) : Math.expm1(this.#logStatistic);
  }

  stats(): DriftStats {
    const window = Math.min(this.#texts, ACCEPTANCE_WINDOW);
    return {
      texts: this.#texts,
      statistic: this.#statistic(),
      threshold: this.threshold,
      martingale: fromLog(logMean(this.#logProducts)),
      peak: fromLog(this.#logPeak),
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
      version: STATE_VERSION,
      calibration: this.reference.id,
      alpha: this.alpha,
      texts: this.#texts,
      seen: Array.from(this.#seen),
      logStatistics: Array.from(this.#logStatistics),
      logProducts: Array.from(this.#logProducts),
      logPeak: this.#logPeak,
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
    if ((state as { version?: unknown }).version !== STATE_VERSION) {
      throw new DriftStateError(
        (state as { version?: unknown }).version === undefined
          ? 'the drift state was saved by an earlier bertgate, whose alarm watched the martingale since the start; ' +
              'it cannot be continued by the change-point alarm: start afresh (do not restore it)'
          : `the drift state has version ${String((state as { version?: unknown }).version)}; this bertgate reads version ${STATE_VERSION}`,
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
    const problem = this.#impossible(state);
    if (problem !== undefined) {
      throw new DriftStateError(`the drift state is malformed: ${problem}; it is not what driftState() writes`);
    }
    this.reset();
    state.seen.forEach((count, b) => {
      if (count > 0) this.#counts.add(b, count);
      this.#seen[b] = count;
    });
    state.logStatistics.forEach((x, i) => (this.#logStatistics[i] = x));
    state.logProducts.forEach((x, i) => (this.#logProducts[i] = x));
    this.#logStatistic = logMean(this.#logStatistics);
    this.#logPeak = state.logPeak;
    this.#texts = state.texts;
    this.#alarmAt = state.alarmAt;
    // Lay the recent acceptances back so that the next text overwrites the oldest.
    const start = state.texts > ACCEPTANCE_WINDOW ? state.texts % ACCEPTANCE_WINDOW : 0;
    state.recent.forEach((r, i) => (this.#recent[(start + i) % ACCEPTANCE_WINDOW] = r));
    this.#accepted = state.recent.reduce<number>((a, b) => a + b, 0);
  }

  /**
   * What no run of driftState() can hold, or undefined: a restored state that lies would switch
   * the alarm off for good (a martingale sunk deeper than its bets can lose) or set it off for
   * nothing (a statistic past the alarm level with no alarm).
   */
  #impossible(state: DriftState): string | undefined {
    const n = state.texts;
    if (!Number.isSafeInteger(n) || n < 0) return `texts is ${String(n)}, not a count`;
    const finite = (xs: unknown, length: number): xs is number[] =>
      Array.isArray(xs) &&
      xs.length === length &&
      xs.every((x) => typeof x === 'number' && Number.isFinite(x) && x >= 0);
    if (!finite(state.seen, DRIFT_BINS) || !state.seen.every(Number.isInteger)) {
      return `seen must be ${DRIFT_BINS} whole counts`;
    }
    const seen = state.seen.reduce((a, b) => a + b, 0);
    if (seen !== n) return `seen counts ${seen} texts, texts says ${n}`;
    const logs = (xs: unknown): xs is number[] =>
      Array.isArray(xs) && xs.length === BETS.length && xs.every((x) => typeof x === 'number' && Number.isFinite(x));
    if (!logs(state.logStatistics)) return `logStatistics must be ${BETS.length} finite numbers`;
    if (!logs(state.logProducts)) return `logProducts must be ${BETS.length} finite numbers`;
    const logPeak = state.logPeak;
    if (typeof logPeak !== 'number' || !Number.isFinite(logPeak)) return `logPeak ${String(logPeak)} is not a number`;
    if (n === 0) {
      // Nothing observed: the state of a fresh start, exactly.
      if (![...state.logStatistics, ...state.logProducts, logPeak].every((x) => x === 0) || state.alarmAt !== null) {
        return 'a state with no texts must be a fresh start (every log 0, no alarm)';
      }
    }
    for (let i = 0; i < BETS.length && n > 0; i++) {
      const stake = Math.abs(STAKE[i] as number);
      const logProduct = state.logProducts[i] as number;
      // Each text's bet lies in [1 - |e|, 1 + |e|].
      const [low, high] = [n * Math.log1p(-stake), n * Math.log1p(stake)];
      if (!(logProduct >= low - 1e-6 * n && logProduct <= high + 1e-6 * n)) {
        return `logProducts[${i}] ${logProduct} is outside what its bet allows after ${n} texts [${low}, ${high}]`;
      }
      // R is at least the last text's bet and at most the sum of every bet won since every past
      // text; and, the sum including the start, at least the product since the start.
      const logS = state.logStatistics[i] as number;
      const lowS = Math.max(Math.log(2 - stake), logProduct);
      const highS = softplus(logStatisticBound(stake, n));
      if (!(logS >= lowS - 1e-6 * n && logS <= highS + 1e-6 * n)) {
        return `logStatistics[${i}] ${logS} is outside what its bet allows after ${n} texts [${lowS}, ${highS}]`;
      }
    }
    const logM = logMean(Float64Array.from(state.logProducts));
    const highest = n * Math.log1p(Math.max(...STAKES.map(Math.abs)));
    if (!(logPeak >= Math.max(0, logM) - 1e-9 && logPeak <= highest + 1e-9)) {
      return `logPeak ${logPeak} is below the martingale's log ${logM} (or 0) or above what the bets allow`;
    }
    const logStatistic = logMean(Float64Array.from(state.logStatistics));
    const at = state.alarmAt;
    if (at === null) {
      if (logStatistic >= this.#logAlarm) {
        return `the statistic (log of it plus one: ${logStatistic}) is past the alarm level ${this.threshold} with no alarm`;
      }
    } else if (!(Number.isInteger(at) && at >= 1 && at <= n)) {
      return `alarmAt ${String(at)} is not a text between 1 and ${n}`;
    }
    if (
      !Array.isArray(state.recent) ||
      state.recent.length !== Math.min(n, ACCEPTANCE_WINDOW) ||
      !state.recent.every((r) => r === 0 || r === 1)
    ) {
      return `recent must hold the last ${Math.min(n, ACCEPTANCE_WINDOW)} acceptances as 0 or 1`;
    }
    return undefined;
  }
}
