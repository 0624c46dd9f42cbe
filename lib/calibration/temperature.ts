/**
 * Temperature scaling (Guo et al. 2017): the T > 0 minimising the mean negative log-likelihood
 * of softmax(z / T). As a function of beta = 1 / T the NLL is convex (a log-sum-exp minus a
 * linear term), so a golden-section search over beta finds the one minimum.
 */

import { finiteRow, type Predictions } from './metrics.js';

/** Mean NLL of softmax(beta * z) at the true labels, over the rows whose logits are all finite. */
export function nllAtBeta(p: Predictions, beta: number): number {
  let total = 0;
  let n = 0;
  p.logits.forEach((z, i) => {
    if (!finiteRow(z)) return; // invalid: no probabilities to fit (see metrics.ts)
    n++;
    let m = -Infinity;
    for (let k = 0; k < z.length; k++) m = Math.max(m, beta * (z[k] as number));
    let s = 0;
    for (let k = 0; k < z.length; k++) s += Math.exp(beta * (z[k] as number) - m);
    total += m + Math.log(s) - beta * (z[p.labels[i] as number] as number);
  });
  return total / n;
}

/** The fitted temperature, searched over T in [0.05, 20]. */
export function fitTemperature(p: Predictions): number {
  let lo = 1 / 20;
  let hi = 1 / 0.05;
  const ratio = (Math.sqrt(5) - 1) / 2;
  let a = hi - ratio * (hi - lo);
  let b = lo + ratio * (hi - lo);
  let fa = nllAtBeta(p, a);
  let fb = nllAtBeta(p, b);
  while (hi - lo > 1e-6) {
    if (fa < fb) {
      hi = b;
      b = a;
      fb = fa;
      a = hi - ratio * (hi - lo);
      fa = nllAtBeta(p, a);
    } else {
      lo = a;
      a = b;
      fa = fb;
      b = lo + ratio * (hi - lo);
      fb = nllAtBeta(p, b);
    }
  }
  return 1 / ((lo + hi) / 2);
}
