/**
 * The out-of-distribution gate calibrate fits on the pooled features of labelled texts: a
 * Mahalanobis distance to the nearest class centre (class means, one within-class covariance
 * shared by the classes: Lee et al. 2018), in the DIM directions of that covariance with the
 * least variance, whitened. Those directions are where in-distribution texts hardly vary and
 * texts of other topics do (Kamoi & Kobayashi 2020 found the smallest principal components
 * carry most of the distance's power); keeping DIM of them, not all, is what lets the gate's
 * numbers (a DIM x width projection and the class centres, fp32) fit the 15 MB bundle.
 *
 * The threshold is split-conformal: fitted on one part of the texts, the gate scores the
 * other part, and the threshold is the ceil((1 - alpha)(n + 1))-th smallest of those n
 * scores. For a new text exchangeable with them, P(score > threshold) <= alpha: at most a
 * share alpha of in-distribution texts is flagged (Vovk et al. 2005; Angelopoulos & Bates 2021).
 *
 * The engine computes the score in the forward pass (native/engine/ood_gate.cpp); this file
 * fits it and computes the same score in float64 for calibrate and evaluate.
 */

export interface GateFit {
  /** Directions kept. */
  dim: number;
  width: number;
  /** [dim, width], row-major: whitened directions, so distance is |projection (f - mean)|^2. */
  projection: Float32Array;
  /** [classes, dim]: the class means, projected. */
  centres: Float32Array;
}

/**
 * Eigenvalues and eigenvectors of a symmetric n x n matrix (row-major), by cyclic Jacobi
 * rotations. Returns the eigenvalues and the eigenvectors as the rows of `vectors`.
 */
export function symmetricEigen(matrix: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(matrix);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += (a[p * n + q] as number) ** 2;
    if (off < 1e-22) break;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q] as number;
        if (Math.abs(apq) < 1e-300) continue;
        const app = a[p * n + p] as number;
        const aqq = a[q * n + q] as number;
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p] as number;
          const akq = a[k * n + q] as number;
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k] as number;
          const aqk = a[q * n + k] as number;
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vpk = v[p * n + k] as number;
          const vqk = v[q * n + k] as number;
          v[p * n + k] = c * vpk - s * vqk;
          v[q * n + k] = s * vpk + c * vqk;
        }
      }
    }
  }
  return { values: Float64Array.from({ length: n }, (_, i) => a[i * n + i] as number), vectors: v };
}

/**
 * Fits the gate on features (rows of `width`) and their true labels (at least one). Classes
 * without a text get no centre of their own. `dim` directions of least variance.
 */
export function fitGate(features: ArrayLike<number>[], labels: number[], classes: number, dim: number): GateFit {
  const width = (features[0] as ArrayLike<number>).length;
  const means = new Float64Array(classes * width);
  const counts = new Float64Array(classes);
  features.forEach((f, i) => {
    const c = labels[i] as number;
    counts[c] = (counts[c] as number) + 1;
    for (let j = 0; j < width; j++) means[c * width + j] = (means[c * width + j] as number) + (f[j] as number);
  });
  for (let c = 0; c < classes; c++) {
    for (let j = 0; j < width; j++)
      means[c * width + j] = (means[c * width + j] as number) / Math.max(1, counts[c] as number);
  }
  // Within-class covariance, with a small ridge so no direction has zero variance.
  const cov = new Float64Array(width * width);
  const centred = new Float64Array(width);
  features.forEach((f, i) => {
    const c = labels[i] as number;
    for (let j = 0; j < width; j++) centred[j] = (f[j] as number) - (means[c * width + j] as number);
    for (let j = 0; j < width; j++) {
      const x = centred[j] as number;
      if (x === 0) continue;
      for (let k = j; k < width; k++) cov[j * width + k] = (cov[j * width + k] as number) + x * (centred[k] as number);
    }
  });
  let trace = 0;
  for (let j = 0; j < width; j++) {
    for (let k = j; k < width; k++) {
      const value = (cov[j * width + k] as number) / features.length;
      cov[j * width + k] = value;
      cov[k * width + j] = value;
    }
    trace += cov[j * width + j] as number;
  }
  for (let j = 0; j < width; j++) cov[j * width + j] = (cov[j * width + j] as number) + (1e-6 * trace) / width;

  const { values, vectors } = symmetricEigen(cov, width);
  const order = Array.from({ length: width }, (_, i) => i).sort(
    (a, b) => (values[a] as number) - (values[b] as number),
  );
  const kept = order.slice(0, Math.min(dim, width));
  const projection = new Float32Array(kept.length * width);
  kept.forEach((e, r) => {
    const scale = 1 / Math.sqrt(values[e] as number);
    for (let j = 0; j < width; j++) projection[r * width + j] = (vectors[e * width + j] as number) * scale;
  });
  const centres = new Float32Array(classes * kept.length);
  // A class with no text has no centre of its own; it takes a seen class's, which leaves every
  // nearest distance as it was. (A far-away sentinel would overflow to Infinity in fp32, and
  // Infinity - Infinity is NaN.)
  const seen = Array.from(counts).findIndex((n) => n > 0);
  for (let c = 0; c < classes; c++) {
    const from = counts[c] ? c : seen;
    for (let r = 0; r < kept.length; r++) {
      let sum = 0;
      for (let j = 0; j < width; j++)
        sum += (projection[r * width + j] as number) * (means[from * width + j] as number);
      centres[c * kept.length + r] = sum;
    }
  }
  return { dim: kept.length, width, projection, centres };
}

/**
 * The largest magnitude a gate's numbers may have (gate.bin, or a fit). BERT's pooled features
 * are a tanh, within [-1, 1]; with them the engine's fp32 products, squares and sums stay finite
 * (4,096 directions over 4,096-wide features: at most ~7e34). A fitted gate's numbers are
 * whitened directions and centres, far below (the default model's: 15; a random-weight fixture's:
 * ~1e6); a fit on features with no spread (one text, or identical ones) divides by ~0.
 */
export const GATE_MAX_VALUE = 1e12;

/** The largest finite fp32: a gate threshold above it could never be passed by an fp32 score. */
export const GATE_MAX_THRESHOLD = 3.4028234663852886e38;

/** Whether every number of the fit is finite and within GATE_MAX_VALUE. */
export function gateFitUsable(fit: GateFit): boolean {
  const ok = (x: number): boolean => Math.abs(x) <= GATE_MAX_VALUE;
  return fit.projection.every(ok) && fit.centres.every(ok);
}

/** The gate's score of one feature vector, in float64: the engine computes the same in fp32. */
export function gateScore(gate: GateFit, f: ArrayLike<number>): number {
  const { dim, width, projection, centres } = gate;
  const z = new Float64Array(dim);
  for (let r = 0; r < dim; r++) {
    let sum = 0;
    for (let j = 0; j < width; j++) sum += (projection[r * width + j] as number) * (f[j] as number);
    z[r] = sum;
  }
  let best = Number.POSITIVE_INFINITY;
  const classes = centres.length / dim;
  for (let c = 0; c < classes; c++) {
    let d = 0;
    for (let r = 0; r < dim; r++) d += ((z[r] as number) - (centres[c * dim + r] as number)) ** 2;
    if (d < best) best = d;
  }
  return Number.isNaN(z[0] as number) ? Number.NaN : best;
}

/** The split-conformal threshold: the ceil((1 - alpha)(n + 1))-th smallest score; Infinity when n is too small. */
export function conformalThreshold(scores: number[], alpha: number): number {
  const sorted = [...scores].sort((a, b) => a - b);
  const rank = Math.ceil((1 - alpha) * (sorted.length + 1));
  return rank > sorted.length ? Number.POSITIVE_INFINITY : (sorted[rank - 1] as number);
}
