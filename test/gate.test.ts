// The out-of-distribution gate, end to end: calibrate fits it on a bundle that returns its
// features (format 2), the classifier flags texts past its threshold as 'out-of-distribution'
// in the same pass, at most alpha of new in-distribution texts are flagged, evaluate reports
// it, and every way of pairing a gate with a model that cannot serve it is a typed error.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFile, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { gateScore } from '../lib/calibration/gate.js';
import { BundleError, Classifier, InvalidArgumentError } from '../lib/index.js';
import { bertgate, bundle, calibrateCli, copyBundle, labelledLines, modelLabels, wordTexts } from './helpers.js';

describe('the out-of-distribution gate', () => {
  let copy: { dir: string; cleanup: () => Promise<void> };
  let data: string;
  let calibrateOut: string;
  const ALPHA = 0.1;

  before(async () => {
    copy = await copyBundle('labels7-features');
    const calibration = wordTexts(1600, 42);
    const { best, labels } = await modelLabels(copy.dir, calibration);
    data = join(copy.dir, 'labelled.jsonl');
    await writeFile(
      data,
      labelledLines(calibration, (i) => (i % 10 === 0 ? labels[(i / 10) % labels.length] : best[i]) as string),
    );
    const r = await calibrateCli(copy.dir, data, {
      'target-accuracy': '0.8',
      delta: '0.1',
      'gate-alpha': String(ALPHA),
      'gate-dim': '16',
    });
    assert.equal(r.code, 0, r.stderr);
    calibrateOut = r.stdout;
  });
  after(() => copy.cleanup());

  it('is written beside calibration.json and loaded with it', async () => {
    const calibration = JSON.parse(await readFile(join(copy.dir, 'calibration.json'), 'utf8'));
    assert.equal(calibration.gate.kind, 'mahalanobis');
    assert.equal(calibration.gate.dim, 16);
    assert.equal(calibration.gate.width, 48);
    assert.equal(calibration.gate.thresholded_on, 800); // the odd lines; the even ones fitted it
    assert.match(calibration.guarantee.method, /the guarantee is the combined rule's/);
    const manifest = JSON.parse(await readFile(join(copy.dir, 'bundle.json'), 'utf8'));
    assert.deepEqual(calibration.model, { file: 'model.pt', sha256: manifest.files['model.pt'].sha256 });
    // calibrate says what it fitted: directions kept, where, the threshold and what it flags.
    const said =
      /gate: 16 of 48 directions of the features, fitted on .*labelled\.jsonl, its even-numbered examples \(800 texts\); threshold (\S+) flags [\d.]+% \((\d+) of 800\)/.exec(
        calibrateOut,
      );
    assert.ok(said, calibrateOut);
    assert.equal(said[1], (calibration.gate.threshold as number).toPrecision(6));
    assert.ok(Number(said[2]) <= ALPHA * 800, `${said[2]} of 800 flagged at alpha ${ALPHA}`);
    const clf = await Classifier.load(copy.dir);
    try {
      assert.deepEqual(clf.info.gate, { alpha: ALPHA, threshold: calibration.gate.threshold, dim: 16 });
    } finally {
      await clf.close();
    }
  });

  it('has its threshold among the scores the engine serves, and flags exactly the texts above it', async () => {
    // Fitted on fp32 served scores, the threshold is one of them: a calibration text at the
    // threshold passes at run time exactly as it was counted (a float64 threshold would not be
    // an fp32 value at all).
    const calibration = JSON.parse(await readFile(join(copy.dir, 'calibration.json'), 'utf8'));
    const lines = (await readFile(data, 'utf8')).trim().split('\n');
    const all = lines.map((l) => (JSON.parse(l) as { text: string }).text);
    const odd = all.filter((_, i) => i % 2 === 1);
    const clf = await Classifier.load(copy.dir);
    try {
      // Served as calibrate served them: every line, in its chunks of 512, so in the same batches.
      // On an Intel CPU MKL's fp32 kernels round a row differently with the batch it runs in, so
      // the odd lines sent alone moved some scores off the threshold (an AMD CPU's path did not).
      const every: Awaited<ReturnType<typeof clf.classify>> = [];
      for (let i = 0; i < all.length; i += 512) every.push(...(await clf.classify(all.slice(i, i + 512))));
      const decisions = every.filter((_, i) => i % 2 === 1);
      const served = decisions.map((d) => d.scores?.ood as number);
      const threshold = calibration.gate.threshold as number;
      assert.equal(Math.fround(threshold), threshold);
      assert.ok(served.includes(threshold), `${threshold} is not a served score`);
      const rank = Math.ceil((1 - ALPHA) * (odd.length + 1));
      assert.equal(served.filter((s) => s <= threshold).length, rank);
      const flagged = decisions.filter((d) => !d.accepted && d.reason === 'out-of-distribution').length;
      assert.equal(flagged, odd.length - rank);
    } finally {
      await clf.close();
    }
  });

  it("records gate.bin's digest, and refuses another calibration's gate.bin of the same size", async () => {
    const calibration = JSON.parse(await readFile(join(copy.dir, 'calibration.json'), 'utf8'));
    const bytes = await readFile(join(copy.dir, 'gate.bin'));
    assert.equal(calibration.gate.sha256, createHash('sha256').update(bytes).digest('hex'));
    const other = await copyBundle('labels7-features');
    try {
      await copyFile(join(copy.dir, 'calibration.json'), join(other.dir, 'calibration.json'));
      const floats = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
      floats.reverse(); // same size, same numbers, another gate
      await writeFile(join(other.dir, 'gate.bin'), new Uint8Array(floats.buffer));
      await assert.rejects(
        Classifier.load(other.dir),
        (e: unknown) =>
          e instanceof BundleError &&
          e.file === 'gate.bin' &&
          e.message.includes(
            `but calibration.json "gate" says ${calibration.gate.sha256 as string}: it is another calibration's gate`,
          ),
      );
      delete calibration.gate.sha256;
      await writeFile(join(other.dir, 'calibration.json'), JSON.stringify(calibration));
      await assert.rejects(
        Classifier.load(other.dir),
        (e: unknown) => e instanceof BundleError && e.field === 'gate' && e.message.includes('sha256 (of gate.bin)'),
      );
    } finally {
      await other.cleanup();
    }
  });

  it('flags at most alpha of new in-distribution texts (a binomial bound), and names them', async () => {
    const clf = await Classifier.load(copy.dir);
    try {
      const fresh = await clf.classify(wordTexts(3000, 7));
      const flagged = fresh.filter((d) => !d.accepted && d.reason === 'out-of-distribution');
      const bound = ALPHA + 3 * Math.sqrt((ALPHA * (1 - ALPHA)) / fresh.length);
      assert.ok(flagged.length / fresh.length <= bound, `${flagged.length} of ${fresh.length} flagged`);
      assert.ok(flagged.length > 0, 'nothing flagged: the gate does nothing');
      for (const d of flagged) {
        assert.ok(d.scores !== null && d.scores.ood !== null && d.scores.ood > d.threshold);
        assert.ok(d.best && clf.labels.includes(d.best));
      }
      const passed = fresh.filter((d) => d.accepted || d.reason === 'below-threshold');
      assert.ok(
        passed.every((d) => d.scores !== null && (d.scores.ood as number) <= (clf.info.gate?.threshold as number)),
      );
    } finally {
      await clf.close();
    }
  });

  it('flags texts unlike the calibration set far more often', async () => {
    const clf = await Classifier.load(copy.dir);
    try {
      const unlike = Array.from(
        { length: 500 },
        (_, i) => `${'0123456789'.repeat(1 + (i % 5))} ${i} qqq ${'xyz'.repeat(i % 7)}`,
      );
      const decisions = await clf.classify(unlike);
      const flagged = decisions.filter((d) => !d.accepted && d.reason === 'out-of-distribution').length;
      assert.ok(flagged / unlike.length > 2 * ALPHA, `${flagged} of ${unlike.length}`);
    } finally {
      await clf.close();
    }
  });

  it('evaluate reports the flagged share against alpha, and the gate score among the OOD scores', async () => {
    const ood = join(copy.dir, 'ood.jsonl');
    await writeFile(
      ood,
      Array.from({ length: 300 }, (_, i) =>
        // With or without a label: an out-of-distribution text has none of the model's.
        JSON.stringify({ text: `${'9'.repeat(1 + (i % 9))} zzz ${i}`, ...(i % 2 ? { label: 'x' } : {}) }),
      ).join('\n') + '\n',
    );
    const e = await bertgate(['evaluate', '--model', copy.dir, '--data', data, '--ood', ood, '--json']);
    assert.equal(e.code, 0, e.stderr);
    const result = JSON.parse(e.stdout);
    assert.equal(result.gate.alpha, ALPHA);
    // The shares evaluate reports are the shares the classifier itself flags.
    const clf = await Classifier.load(copy.dir);
    try {
      const share = async (file: string): Promise<number> => {
        const lines = (await readFile(file, 'utf8')).trim().split('\n');
        const decisions = await clf.classify(lines.map((l) => (JSON.parse(l) as { text: string }).text));
        return decisions.filter((d) => !d.accepted && d.reason === 'out-of-distribution').length / lines.length;
      };
      assert.equal(result.gate.flagged, await share(data));
      assert.ok(result.gate.flagged > 0 && result.gate.flagged < 0.3, String(result.gate.flagged));
      assert.equal(result.ood.length, 1);
      assert.ok(result.ood[0].scores.gate.auroc > 0.5, JSON.stringify(result.ood[0].scores));
      const oodShare = await share(ood);
      assert.ok(oodShare > 2 * ALPHA, `only ${oodShare} of the OOD texts flagged`);
      assert.equal(result.ood[0].flagged, oodShare);
    } finally {
      await clf.close();
    }
  });

  it('is refused with a model that does not return features, or of another width, or a damaged gate.bin', async () => {
    // The gate's files copied onto the same weights exported without features. (Its calibration
    // as written before calibrate bound it to its model.pt: with the binding, the digest refuses
    // it first, as the next test shows.)
    const plain = await copyBundle('labels7');
    try {
      const unbound = JSON.parse(await readFile(join(copy.dir, 'calibration.json'), 'utf8'));
      delete unbound.model;
      await writeFile(join(plain.dir, 'calibration.json'), JSON.stringify(unbound));
      await copyFile(join(copy.dir, 'gate.bin'), join(plain.dir, 'gate.bin'));
      await assert.rejects(
        Classifier.load(plain.dir),
        (e: unknown) =>
          e instanceof BundleError &&
          e.field === 'gate' &&
          e.message ===
            'calibration.json has an out-of-distribution gate fitted on 48-wide features, but bundle.json says ' +
              'model.pt returns no features (export it with --features)',
      );
      const broken = await copyBundle('labels7-features');
      try {
        await copyFile(join(copy.dir, 'calibration.json'), join(broken.dir, 'calibration.json'));
        await copyFile(join(copy.dir, 'gate.bin'), join(broken.dir, 'gate.bin'));
        await truncate(join(broken.dir, 'gate.bin'), 100);
        await assert.rejects(
          Classifier.load(broken.dir),
          (e: unknown) =>
            e instanceof BundleError &&
            e.file === 'gate.bin' &&
            /gate\.bin is 100 bytes; a gate of 16 directions over 48-wide features for 7 labels is \d+/.test(e.message),
        );
      } finally {
        await broken.cleanup();
      }
    } finally {
      await plain.cleanup();
    }
  });

  it('asked for where there is none, or fitted on a model without features: typed errors', async () => {
    await assert.rejects(
      Classifier.load(bundle('labels7'), { gate: true }),
      (e: unknown) =>
        e instanceof InvalidArgumentError &&
        e.message.startsWith('The "gate" option asks for the out-of-distribution gate, but ') &&
        e.message.endsWith(
          'calibration.json has none: calibrate with --gate-alpha (on a bundle exported with --features)',
        ),
    );
    const r = await calibrateCli(bundle('labels7'), data, { 'gate-alpha': '0.1', out: join(copy.dir, 'x') });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /ERR_INVALID_ARGUMENT: --gate-alpha needs a model that returns its features; .*model\.pt returns none \(export it with --features\)/,
    );
    const off = await Classifier.load(copy.dir, { gate: false });
    try {
      assert.equal(off.info.gate, null);
    } finally {
      await off.close();
    }
  });

  it('a gate.bin holding NaN or Infinity is refused; with gate: false, gate.bin is not needed', async () => {
    const bad = await copyBundle('labels7-features');
    try {
      const bytes = await readFile(join(copy.dir, 'gate.bin'));
      for (const value of [Number.NaN, Number.POSITIVE_INFINITY, 1e38]) {
        const floats = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
        floats[floats.length - 1] = value;
        const changed = new Uint8Array(floats.buffer);
        await writeFile(join(bad.dir, 'gate.bin'), changed);
        // Bound to its calibration.json, so that the check of the numbers themselves is reached.
        const calibration = JSON.parse(await readFile(join(copy.dir, 'calibration.json'), 'utf8'));
        calibration.gate.sha256 = createHash('sha256').update(changed).digest('hex');
        await writeFile(join(bad.dir, 'calibration.json'), JSON.stringify(calibration));
        await assert.rejects(
          Classifier.load(bad.dir),
          (e: unknown) =>
            e instanceof BundleError &&
            e.file === 'gate.bin' &&
            e.message.includes(
              `holds ${Number.isFinite(value) ? 'a number too large for the gate' : 'a non-finite number'} ` +
                `(${floats[floats.length - 1]} at float ${floats.length - 1})`,
            ),
        );
      }
      await rm(join(bad.dir, 'gate.bin'));
      const off = await Classifier.load(bad.dir, { gate: false });
      try {
        assert.equal(off.info.gate, null);
        const d = await off.classify('install package');
        assert.ok(d.accepted || d.reason !== 'out-of-distribution');
      } finally {
        await off.close();
      }
    } finally {
      await bad.cleanup();
    }
  });

  it('a gate threshold that is negative or infinite is refused; a gate fitted on too few texts for a full-rank covariance is a named data error, however few directions it keeps', async () => {
    const bad = await copyBundle('labels7-features');
    try {
      const calibration = JSON.parse(await readFile(join(copy.dir, 'calibration.json'), 'utf8'));
      await copyFile(join(copy.dir, 'gate.bin'), join(bad.dir, 'gate.bin'));
      for (const threshold of [-1, '1e300', '1e999']) {
        // Written as text: JSON.stringify cannot write 1e999, which JSON.parse reads as Infinity.
        const text = JSON.stringify({ ...calibration, gate: { ...calibration.gate, threshold: 123456789 } }).replace(
          '"threshold":123456789',
          `"threshold":${threshold}`,
        );
        await writeFile(join(bad.dir, 'calibration.json'), text);
        await assert.rejects(
          Classifier.load(bad.dir),
          (e: unknown) =>
            e instanceof BundleError &&
            e.field === 'gate' &&
            e.message.includes('threshold (a distance from 0 to the largest fp32)'),
        );
      }
    } finally {
      await bad.cleanup();
    }
    // A gate calibrate must refuse before writing anything: exit 1, the reason on stderr.
    const refused = async (flags: Record<string, string>, reason: RegExp): Promise<void> => {
      const r = await calibrateCli(copy.dir, data, {
        coverage: '0.8',
        'gate-alpha': '0.1',
        out: join(copy.dir, 'refused-out'),
        ...flags,
      });
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stderr, reason);
    };
    // --gate-dim is a whole number written as one: Number() would read these as 100, 16 and 8.
    for (const dim of ['1e2', '0x10', ' 8']) {
      await refused(
        { 'gate-dim': dim },
        new RegExp(`Expected --gate-dim to be a whole number in \\[1, 4096\\], got "${dim}"`),
      );
    }
    const one = join(copy.dir, 'one.jsonl');
    await writeFile(one, (await readFile(data, 'utf8')).split('\n')[0] + '\n');
    await refused(
      { 'gate-data': one },
      /ERR_DATA: .*one\.jsonl: 1 texts in 1 label cannot fit a gate on features 48 wide/,
    );
    // More texts than the directions kept (16), fewer than the width (48) plus the labels: the
    // least-variance directions would be ones these texts never vary along (the gate scores noise).
    const lines = (await readFile(data, 'utf8')).trim().split('\n').slice(0, 45);
    const labels = new Set(lines.map((l) => (JSON.parse(l) as { label: string }).label)).size;
    const few = join(copy.dir, 'few.jsonl');
    await writeFile(few, lines.join('\n') + '\n');
    await refused(
      { 'gate-dim': '16', 'gate-data': few },
      new RegExp(
        `ERR_DATA: .*few\\.jsonl: 45 texts in ${labels} labels cannot fit a gate on features 48 wide: .*` +
          `spans at most ${45 - labels} directions.*give at least ${48 + labels} distinct texts \\(--gate-data`,
      ),
    );
    // A repeated text adds no direction: 90 lines of those 45 texts, twice each, are still too few.
    await writeFile(few, [...lines, ...lines].join('\n') + '\n');
    await refused(
      { 'gate-dim': '16', 'gate-data': few },
      new RegExp(`few\\.jsonl: 90 texts \\(45 distinct\\) in ${labels} labels cannot fit a gate on features 48 wide`),
    );
    // Distinct strings the tokenizer reads alike are one text to the model: 45 texts, each also
    // with spaces around it, pass the count of strings and are refused on the features' count.
    const spaced = lines.map((l) => {
      const e = JSON.parse(l) as { text: string; label: string };
      return JSON.stringify({ ...e, text: `  ${e.text}   ` });
    });
    await writeFile(few, [...lines, ...spaced].join('\n') + '\n');
    await refused(
      { 'gate-dim': '16', 'gate-data': few },
      new RegExp(
        `few\\.jsonl: 90 texts \\(45 distinct to the model: texts its tokenizer reads alike, as in case or spacing, ` +
          `give one feature vector\\) in ${labels} labels cannot fit a gate on features 48 wide: .*spans at most ${45 - labels} directions`,
      ),
    );
  });

  it("is another model's once model.pt changes: refused by name before the gate is read, through the seal or the file's digest", async () => {
    // The same labels, another model.pt: the digest calibrate recorded tells them apart, and says
    // so before the gate's checks (whose advice, re-export with --features, would be wrong here).
    const other = await copyBundle('labels7');
    try {
      for (const file of ['calibration.json', 'gate.bin']) await copyFile(join(copy.dir, file), join(other.dir, file));
      const refused =
        (from: string) =>
        (e: unknown): boolean =>
          e instanceof BundleError &&
          e.file === 'calibration.json' &&
          e.field === 'model' &&
          e.message.includes(`was fitted on a model.pt with SHA-256 `) &&
          e.message.includes(`(${from}): its temperature, thresholds and gate belong to another model`);
      await assert.rejects(Classifier.load(other.dir), refused('sealed in bundle.json'));
      await assert.rejects(Classifier.load(other.dir, { gate: false }), refused('sealed in bundle.json'));
      // Without bundle.json there is no seal: model.pt itself is hashed, unless verify is off
      // (which skips hashing, as it skips the seals: the binding then goes unchecked).
      await rm(join(other.dir, 'bundle.json'));
      await assert.rejects(Classifier.load(other.dir, { gate: false }), refused('hashed'));
      const unchecked = await Classifier.load(other.dir, { gate: false, verify: false });
      await unchecked.close();
      // Its own model.pt, unsealed, is hashed and matches: the calibration loads, gate and all.
      await copyFile(join(copy.dir, 'model.pt'), join(other.dir, 'model.pt'));
      const clf = await Classifier.load(other.dir);
      await clf.close();
    } finally {
      await other.cleanup();
    }
    // Its own model.pt under another bundle's bundle.json: the seal is what is wrong, and named.
    const resealed = await copyBundle('labels7-features');
    try {
      for (const file of ['calibration.json', 'gate.bin']) {
        await copyFile(join(copy.dir, file), join(resealed.dir, file));
      }
      await copyFile(join(bundle('labels7'), 'bundle.json'), join(resealed.dir, 'bundle.json'));
      await assert.rejects(
        Classifier.load(resealed.dir),
        (e: unknown) =>
          e instanceof BundleError &&
          e.file === 'model.pt' &&
          /model\.pt has \d+ bytes, but bundle\.json says \d+/.test(e.message),
      );
    } finally {
      await resealed.cleanup();
    }
  });

  it('fitted on data where a label has no text, scores every text as the float64 reference does (no NaN)', async () => {
    // Gate data without one label: that label gets no centre of its own. Its stand-in must not
    // turn the engine's fp32 distances into NaN (a far sentinel overflowed to Infinity).
    const lines = (await readFile(data, 'utf8')).trim().split('\n');
    const missing = (JSON.parse(lines[0] as string) as { label: string }).label;
    const gateData = join(copy.dir, 'gate-data.jsonl');
    await writeFile(gateData, lines.filter((l) => JSON.parse(l).label !== missing).join('\n') + '\n');
    const partial = await copyBundle('labels7-features');
    try {
      const r = await calibrateCli(partial.dir, data, {
        coverage: '0.8',
        'gate-alpha': String(ALPHA),
        'gate-dim': '16',
        'gate-data': gateData,
      });
      assert.equal(r.code, 0, r.stderr);
      const clf = await Classifier.load(partial.dir);
      try {
        const sample = wordTexts(300, 7);
        const decisions = await clf.classify(sample);
        assert.equal(decisions.filter((d) => !d.accepted && d.reason === 'invalid').length, 0);
        const flagged = decisions.filter((d) => !d.accepted && d.reason === 'out-of-distribution').length;
        assert.ok(flagged < 300 * 0.3, `${flagged} of 300 in-distribution texts flagged`);
        // The engine's fp32 score against gateScore's float64 one, from gate.bin's numbers and the
        // model's own features.
        const calibration = JSON.parse(await readFile(join(partial.dir, 'calibration.json'), 'utf8'));
        const bytes = await readFile(join(partial.dir, 'gate.bin'));
        const floats = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
        const { dim, width } = calibration.gate;
        const gate = { dim, width, projection: floats.subarray(0, dim * width), centres: floats.subarray(dim * width) };
        const features = await clf.features(sample);
        // fp32 sums of whitened (large) coordinates: the error scales with the coordinates'
        // squares, not with the (much smaller) distance left after cancellation.
        const largestCentre = Array.from({ length: dim }, (_, r) =>
          Math.max(...Array.from({ length: 7 }, (_, c) => Math.abs(gate.centres[c * dim + r] as number))),
        );
        decisions.forEach((d, i) => {
          const f = features[i] as Float32Array;
          const served = d.scores?.ood as number;
          const reference = gateScore(gate, f);
          let scale = 0;
          for (let r = 0; r < dim; r++) {
            let z = 0;
            for (let j = 0; j < width; j++)
              z += Math.abs((gate.projection[r * width + j] as number) * (f[j] as number));
            scale += (z + (largestCentre[r] as number)) ** 2;
          }
          assert.ok(Number.isFinite(served), JSON.stringify(d.scores));
          assert.ok(Math.abs(served - reference) <= 1e-5 * scale, `${served} vs ${reference} (scale ${scale})`);
        });
      } finally {
        await clf.close();
      }
    } finally {
      await partial.cleanup();
    }
  });
});
