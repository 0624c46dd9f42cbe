/**
 * How smooth the confidence map is: the smallest block its isotonic fit may keep (lib/
 * confidence-map.ts says why blocks of a few texts follow noise), chosen by cross-validation on
 * the calibration split, so no other data takes part in it.
 */

import { applyConfidenceMap, fitConfidenceMap } from '../confidence-map.js';
import { ece, type RowScores } from './metrics.js';

/** The block sizes tried: 1 is plain isotonic regression. */
export const MIN_BLOCKS = [1, 10, 25, 50, 100, 200, 400] as const;

/** The fewest blocks a size must leave room for in a fold's fit to be tried. */
export const MIN_KNOTS = 20;

export interface Smoothing {
  minBlock: number;
  folds: number;
  /** Held-out Brier score and ECE of each block size tried, averaged over the folds (none tried: empty). */
  cv: Array<{ minBlock: number; brier: number; ece: number }>;
}

/**
 * The block size with the lowest held-out Brier score over `folds` folds (row k of `rows` in
 * fold k mod folds). Brier is a proper score: it rewards calibration and ranking both, where
 * ECE alone is noisy and blind to ranking; ECE is recorded beside it. `raw[k]` is row k's
 * served max probability, what the map reads.
 *
 * Only sizes that leave room for MIN_KNOTS blocks in a fold's fit are tried, and a tie goes to
 * the smaller block: on a small split every large size pools everything into one block, whose
 * flat map gives every text the same confidence, and thresholds chosen by rank could then rank
 * nothing (calibrate would find no threshold, or accept everything).
 */
export function chooseSmoothing(rows: readonly RowScores[], raw: readonly number[], folds = 5, bins = 15): Smoothing {
  const fitSize = Math.floor((rows.length * (folds - 1)) / folds);
  const sizes = MIN_BLOCKS.filter((m) => m > 1 && m * MIN_KNOTS <= fitSize);
  if (sizes.length === 0) return { minBlock: 1, folds, cv: [] };
  const cv = [1, ...sizes].map((minBlock) => {
    let brier = 0;
    let calibrationError = 0;
    for (let f = 0; f < folds; f++) {
      const fit = rows.map((_, k) => k).filter((k) => k % folds !== f);
      const held = rows.map((_, k) => k).filter((k) => k % folds === f);
      const map = fitConfidenceMap(
        fit.map((k) => raw[k] as number),
        fit.map((k) => (rows[k] as RowScores).correct),
        minBlock,
      );
      const mapped = held.map((k) => ({
        ...(rows[k] as RowScores),
        maxProbability: applyConfidenceMap(map, raw[k] as number),
      }));
      brier += mapped.reduce((s, r) => s + (r.maxProbability - (r.correct ? 1 : 0)) ** 2, 0) / Math.max(1, held.length);
      calibrationError += ece(mapped, bins);
    }
    return { minBlock, brier: brier / folds, ece: calibrationError / folds };
  });
  let best = cv[0] as Smoothing['cv'][number];
  for (const c of cv) if (c.brier < best.brier) best = c;
  return { minBlock: best.minBlock, folds, cv };
}
