// lib/calibration/gate.ts on its own: the eigen-solver, the fit's whitening, the score and the
// split-conformal threshold, on inputs whose answers are known by hand.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { conformalThreshold, fitGate, gateFitUsable, gateScore, symmetricEigen } from '../lib/calibration/gate.js';
import { mulberry32 } from '../lib/seeded-random.js';

describe('gate math', () => {
  it('symmetricEigen: A v = lambda v, orthonormal vectors, on a known matrix', () => {
    const a = Float64Array.from([4, 1, 0, 1, 3, 1, 0, 1, 2]);
    const { values, vectors } = symmetricEigen(a, 3);
    const sorted = [...values].sort((x, y) => x - y);
    // The characteristic polynomial of this matrix has roots 3 and 3 +- sqrt(3).
    [3 - Math.sqrt(3), 3, 3 + Math.sqrt(3)].forEach((want, i) =>
      assert.ok(Math.abs((sorted[i] as number) - want) < 1e-9),
    );
    for (let e = 0; e < 3; e++) {
      for (let i = 0; i < 3; i++) {
        let av = 0;
        for (let j = 0; j < 3; j++) av += (a[i * 3 + j] as number) * (vectors[e * 3 + j] as number);
        assert.ok(Math.abs(av - (values[e] as number) * (vectors[e * 3 + i] as number)) < 1e-9);
      }
      for (let f = 0; f < 3; f++) {
        let dot = 0;
        for (let j = 0; j < 3; j++) dot += (vectors[e * 3 + j] as number) * (vectors[f * 3 + j] as number);
        assert.ok(Math.abs(dot - (e === f ? 1 : 0)) < 1e-9);
      }
    }
  });

  it('fitGate whitens: in each kept direction the training texts vary by about 1 around their centre', () => {
    const random = mulberry32(7);
    const width = 6;
    const scales = [3, 2, 1, 0.5, 0.1, 0.05];
    const features: number[][] = [];
    const labels: number[] = [];
    for (let i = 0; i < 4000; i++) {
      const c = i % 2;
      labels.push(c);
      features.push(scales.map((s, j) => (j === 0 ? c * 10 : 0) + s * (random() - 0.5) * Math.sqrt(12)));
    }
    const fit = fitGate(features, labels, 2, 2);
    assert.equal(fit.dim, 2);
    assert.ok(gateFitUsable(fit));
    // The two directions of least within-class variance are the last two axes.
    for (let r = 0; r < 2; r++) {
      const row = Array.from(fit.projection.subarray(r * width, (r + 1) * width)).map(Math.abs);
      assert.ok(
        Math.max(row[0] as number, row[1] as number, row[2] as number, row[3] as number) < 1e-2 * Math.max(...row),
      );
    }
    const mean = features.reduce((s, f) => s + gateScore(fit, f), 0) / features.length;
    assert.ok(Math.abs(mean - 2) < 0.2, `mean squared distance ${mean}, expected about dim = 2`);
  });

  it('gateScore: the squared distance to the nearest centre; NaN features give NaN', () => {
    const gate = {
      dim: 2,
      width: 2,
      projection: Float32Array.from([1, 0, 0, 1]),
      centres: Float32Array.from([0, 0, 10, 0]),
    };
    assert.equal(gateScore(gate, [3, 4]), 25);
    assert.equal(gateScore(gate, [9, 1]), 2);
    assert.ok(Number.isNaN(gateScore(gate, [Number.NaN, 0])));
  });

  it('conformalThreshold: the ceil((1 - alpha)(n + 1))-th smallest, or Infinity when n is too small', () => {
    const scores = Array.from({ length: 19 }, (_, i) => 19 - i); // 19 .. 1, unsorted order on purpose
    assert.equal(conformalThreshold(scores, 0.1), 18);
    assert.equal(conformalThreshold(scores, 0.5), 10);
    assert.equal(conformalThreshold([1, 2, 3, 4, 5], 0.1), Number.POSITIVE_INFINITY);
  });

  it('a fit on features with no spread is not usable', () => {
    const same = Array.from({ length: 50 }, () => [0.5, 0.5, 0.5]);
    assert.equal(
      gateFitUsable(
        fitGate(
          same,
          same.map(() => 0),
          2,
          2,
        ),
      ),
      false,
    );
  });
});
