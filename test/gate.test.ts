// The out-of-distribution gate, end to end: calibrate fits it on a bundle that returns its
// features (format 2), the classifier flags texts past its threshold as 'out-of-distribution'
// in the same pass, at most alpha of new in-distribution texts are flagged, evaluate reports
// it, and every way of pairing a gate with a model that cannot serve it is a typed error.

import assert from 'node:assert/strict';
import { copyFile, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { BundleError, Classifier, InvalidArgumentError } from '../lib/index.js';
import { bertgate, bundle, copyBundle } from './helpers.js';

const WORDS = 'install package server network game sound text graphics admin tool library data file editor'.split(' ');

/** Texts from the fixtures' word list: in distribution for the calibration set made of them. */
function texts(n: number, seed: number): string[] {
  let s = seed;
  const random = (): number => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  return Array.from({ length: n }, () =>
    Array.from({ length: 3 + Math.floor(random() * 10) }, () => WORDS[Math.floor(random() * WORDS.length)]).join(' '),
  );
}

describe('the out-of-distribution gate', () => {
  let copy: { dir: string; cleanup: () => Promise<void> };
  let data: string;
  const ALPHA = 0.1;

  before(async () => {
    copy = await copyBundle('labels7-features');
    const calibration = texts(1600, 42);
    const clf = await Classifier.load(copy.dir);
    const decisions = await clf.classify(calibration);
    await clf.close();
    const lines = decisions.map((d, i) =>
      JSON.stringify({
        text: calibration[i],
        label: i % 10 === 0 ? clf.labels[(i / 10) % clf.labels.length] : d.top[0]?.label,
      }),
    );
    data = join(copy.dir, 'labelled.jsonl');
    await writeFile(data, lines.join('\n') + '\n');
    const r = await bertgate([
      'calibrate',
      '--model',
      copy.dir,
      '--data',
      data,
      '--target-accuracy',
      '0.8',
      '--delta',
      '0.1',
      '--gate-alpha',
      String(ALPHA),
      '--gate-dim',
      '16',
    ]);
    assert.equal(r.code, 0, r.stderr);
  });
  after(() => copy.cleanup());

  it('is written beside calibration.json and loaded with it', async () => {
    const calibration = JSON.parse(await readFile(join(copy.dir, 'calibration.json'), 'utf8'));
    assert.equal(calibration.gate.kind, 'mahalanobis');
    assert.equal(calibration.gate.dim, 16);
    assert.equal(calibration.gate.width, 48);
    assert.equal(calibration.gate.thresholded_on, 800); // the odd lines; the even ones fitted it
    assert.match(calibration.guarantee.method, /the guarantee is the combined rule's/);
    const clf = await Classifier.load(copy.dir);
    try {
      assert.deepEqual(clf.info.gate, { alpha: ALPHA, threshold: calibration.gate.threshold, dim: 16 });
    } finally {
      await clf.close();
    }
  });

  it('flags at most alpha of new in-distribution texts (a binomial bound), and names them', async () => {
    const clf = await Classifier.load(copy.dir);
    try {
      const fresh = await clf.classify(texts(3000, 7));
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
    assert.ok(result.gate.flagged >= 0 && result.gate.flagged < 0.3);
    assert.equal(result.ood.length, 1);
    assert.ok(result.ood[0].scores.gate.auroc > 0.5, JSON.stringify(result.ood[0].scores));
    assert.ok(result.ood[0].flagged >= 0);
  });

  it('is refused with a model that does not return features, or of another width, or a damaged gate.bin', async () => {
    // The gate's files copied onto the same weights exported without features.
    const plain = await copyBundle('labels7');
    try {
      await copyFile(join(copy.dir, 'calibration.json'), join(plain.dir, 'calibration.json'));
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
    const r = await bertgate([
      'calibrate',
      '--model',
      bundle('labels7'),
      '--data',
      data,
      '--gate-alpha',
      '0.1',
      '--out',
      join(copy.dir, 'x'),
    ]);
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
      await copyFile(join(copy.dir, 'calibration.json'), join(bad.dir, 'calibration.json'));
      const bytes = await readFile(join(copy.dir, 'gate.bin'));
      for (const value of [Number.NaN, Number.POSITIVE_INFINITY, 1e38]) {
        const floats = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
        floats[floats.length - 1] = value;
        await writeFile(join(bad.dir, 'gate.bin'), new Uint8Array(floats.buffer));
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

  it('a gate threshold that is negative or infinite is refused; a gate fitted on fewer texts than directions is a named data error', async () => {
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
    const one = join(copy.dir, 'one.jsonl');
    await writeFile(one, (await readFile(data, 'utf8')).split('\n')[0] + '\n');
    const r = await bertgate([
      'calibrate',
      '--model',
      copy.dir,
      '--data',
      data,
      '--coverage',
      '0.8',
      '--gate-alpha',
      '0.1',
      '--gate-data',
      one,
      '--out',
      join(copy.dir, 'one-out'),
    ]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(
      r.stderr,
      /ERR_DATA: .*one\.jsonl: 1 texts cannot fit a gate of 48 directions \(it needs more texts than directions/,
    );
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
      const r = await bertgate([
        'calibrate',
        '--model',
        partial.dir,
        '--data',
        data,
        '--coverage',
        '0.8',
        '--gate-alpha',
        String(ALPHA),
        '--gate-dim',
        '16',
        '--gate-data',
        gateData,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const clf = await Classifier.load(partial.dir);
      try {
        const sample = texts(300, 7);
        const decisions = await clf.classify(sample);
        assert.equal(decisions.filter((d) => !d.accepted && d.reason === 'invalid').length, 0);
        const flagged = decisions.filter((d) => !d.accepted && d.reason === 'out-of-distribution').length;
        assert.ok(flagged < 300 * 0.3, `${flagged} of 300 in-distribution texts flagged`);
        for (const d of decisions) assert.ok(Number.isFinite(d.scores?.ood), JSON.stringify(d.scores));
      } finally {
        await clf.close();
      }
    } finally {
      await partial.cleanup();
    }
  });
});
