// bertgate calibrate and evaluate, end to end through the addon, on a fixture model and a
// labelled set made from its own predictions with a known share of labels flipped.

import assert from 'node:assert/strict';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Classifier, type Decision } from '../lib/index.js';
import { bertgate, calibrateCli, copyBundle, labelledLines, modelLabels, wordTexts } from './helpers.js';

describe('bertgate calibrate and evaluate', () => {
  let copy: { dir: string; cleanup: () => Promise<void> };
  let data: string;
  /** The texts with the model's own label, and with a label it never gives them. */
  let own: string;
  let wrong: string;

  before(async () => {
    copy = await copyBundle('labels7');
    const texts = wordTexts(1200, 42);
    const { best, labels } = await modelLabels(copy.dir, texts);
    const other = (i: number): string => labels.find((l) => l !== best[i]) as string;
    // The model's own label, except every tenth text: accuracy 0.9 by construction.
    data = join(copy.dir, 'labelled.jsonl');
    await writeFile(
      data,
      labelledLines(texts, (i) => (i % 10 === 0 ? other(i) : (best[i] as string))),
    );
    own = join(copy.dir, 'own.jsonl');
    await writeFile(
      own,
      labelledLines(texts, (i) => best[i] as string),
    );
    wrong = join(copy.dir, 'wrong.jsonl');
    await writeFile(wrong, labelledLines(texts, other));
  });
  after(() => copy.cleanup());

  it('fits a temperature and a guaranteed threshold, writes calibration.json and the plots, and the bundle then uses them', async () => {
    const r = await calibrateCli(copy.dir, data, { 'target-accuracy': '0.8', delta: '0.1' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^1200 examples from .*; temperature \d+\.\d{4}/);
    assert.match(r.stdout, /\| ECE \(15 bins\) \| \d\.\d{4} \| \d\.\d{4} \| \d\.\d{4} \|/);
    const calibration = JSON.parse(await readFile(join(copy.dir, 'calibration.json'), 'utf8'));
    assert.equal(calibration.format, 1);
    assert.equal(calibration.score, 'calibrated_max_probability');
    assert.equal(calibration.map.kind, 'isotonic');
    assert.ok(calibration.figures.mapped.ece <= calibration.figures.after.ece + 1e-9, 'the map fits the same data');
    assert.equal(calibration.guarantee.kind, 'selective-risk');
    assert.equal(calibration.guarantee.target_accuracy, 0.8);
    assert.equal(calibration.guarantee.delta, 0.1);
    assert.equal(calibration.data.n, 1200);
    assert.ok(calibration.guarantee.bound <= 0.2);
    // When every text is accepted (coverage 1), the threshold is the lowest confidence served,
    // which is 0 when the map's lowest block was all wrong: fixtures are regenerated per clone and
    // their random weights decide which.
    assert.ok(calibration.threshold >= 0 && calibration.threshold < 1);
    assert.ok(
      calibration.figures.after.nll <= calibration.figures.before.nll + 1e-9,
      'scaling cannot raise the NLL it minimised',
    );
    for (const svg of ['reliability.svg', 'risk-coverage.svg']) {
      assert.match(await readFile(join(copy.dir, svg), 'utf8'), /^<svg xmlns/);
      assert.ok((await stat(join(copy.dir, svg))).size > 1000);
    }
    const clf = await Classifier.load(copy.dir);
    assert.equal(clf.info.temperature, calibration.temperature);
    assert.equal(clf.info.threshold, calibration.threshold);
    assert.equal(clf.info.confidenceMap, true);
    // Served as counted: the calibration texts the classifier accepts are exactly the ones the
    // guarantee counted, the text at the threshold included (thresholds are on served values).
    const lines = (await readFile(data, 'utf8')).trim().split('\n');
    const examples = lines.map((l) => JSON.parse(l) as { text: string; label: string });
    // In calibrate's chunks of 512: a text's fp32 logits can move in the last bit with its
    // batch-mates, and the text at the threshold is compared exactly.
    const decisions: Decision<string, string>[] = [];
    for (let start = 0; start < examples.length; start += 512) {
      decisions.push(...(await clf.classify(examples.slice(start, start + 512).map((e) => e.text))));
    }
    const accepted = decisions.filter((d) => d.accepted);
    assert.equal(accepted.length, calibration.guarantee.accepted);
    assert.equal(
      accepted.filter((d) => d.label !== examples[decisions.indexOf(d)]?.label).length,
      calibration.guarantee.errors,
    );
    assert.ok(
      decisions.some((d) => d.confidence === calibration.threshold && d.accepted),
      'the text at the threshold',
    );
    await clf.close();

    const e = await bertgate(['evaluate', '--model', copy.dir, '--data', data, '--json']);
    assert.equal(e.code, 0, e.stderr);
    const result = JSON.parse(e.stdout);
    assert.ok(Math.abs(result.accuracy - 0.9) < 1e-9, `accuracy ${result.accuracy}`);
    assert.ok(result.coverage > 0.5, `coverage ${result.coverage}`); // risk is a flat 10% here, well under the 20% allowed (a margin: the fixture model's confidences order the errors by chance)
    assert.ok(
      result.selectiveAccuracy >= 0.8,
      `selective accuracy ${result.selectiveAccuracy} on the calibration data itself`,
    );
  });

  it('chooses by coverage and per label when asked', async () => {
    const byCoverage = await calibrateCli(copy.dir, data, { coverage: '0.7', out: join(copy.dir, 'c') });
    assert.equal(byCoverage.code, 0, byCoverage.stderr);
    const c = JSON.parse(await readFile(join(copy.dir, 'c', 'calibration.json'), 'utf8'));
    assert.equal(c.guarantee.kind, 'coverage');
    assert.ok(Math.abs(c.guarantee.coverage - 0.7) < 0.01);
    const perLabel = await calibrateCli(copy.dir, data, {
      'target-accuracy': '0.8',
      delta: '0.2',
      'per-label': true,
      out: join(copy.dir, 'p'),
    });
    assert.equal(perLabel.code, 0, perLabel.stderr);
    const p = JSON.parse(await readFile(join(copy.dir, 'p', 'calibration.json'), 'utf8'));
    assert.ok(p.guarantee.per_label, 'a report per label');
    // Every label has an entry: a certified threshold, or null (never accepted), never the global one.
    const labels = Object.keys(p.guarantee.per_label);
    assert.deepEqual(Object.keys(p.thresholds).sort(), labels.sort());
    for (const label of labels) assert.equal(p.thresholds[label] === null, p.guarantee.per_label[label] === null);
    assert.match(p.guarantee.method, /never accepted/);
  });

  it('checks --out before any pass: not a file, not another bundle', async () => {
    const file = join(copy.dir, 'a-file');
    await writeFile(file, 'x');
    const other = await copyBundle('labels2');
    try {
      for (const [out, message] of [
        [file, /ERR_INVALID_ARGUMENT: --out .*a-file cannot be made a directory: EEXIST/],
        [join(file, 'below'), /ERR_INVALID_ARGUMENT: --out .*a-file\/below cannot be made a directory: ENOTDIR/],
        [other.dir, /ERR_INVALID_ARGUMENT: --out .* holds another bundle's model\.pt/],
      ] as const) {
        const r = await calibrateCli(copy.dir, data, { coverage: '0.5', out });
        assert.equal(r.code, 1, r.stdout);
        assert.match(r.stderr, message);
        assert.doesNotMatch(r.stderr, /\n\s+at /, 'a one-line error, not a stack');
      }
    } finally {
      await other.cleanup();
    }
  });

  it('refuses bad data and impossible guarantees with ERR_DATA', async () => {
    const unknown = join(copy.dir, 'unknown.jsonl');
    await writeFile(unknown, '{"text": "a", "label": "admin"}\n{"text": "b", "label": "cooking"}\n');
    const r1 = await calibrateCli(copy.dir, unknown);
    assert.equal(r1.code, 1);
    assert.equal(
      r1.stderr,
      `bertgate: ERR_DATA: ${unknown} line 2: label "cooking" is not one of the model's labels\n`,
    );
    const r2 = await calibrateCli(copy.dir, data, { 'target-accuracy': '0.999' });
    assert.equal(r2.code, 1);
    assert.match(
      r2.stderr,
      /ERR_DATA: no threshold has selective risk <= 0\.001\d* at confidence 0\.95: 1200 examples are too few/,
    );
    const r3 = await calibrateCli(copy.dir, data, { coverage: '0.5', delta: '0.1' });
    assert.equal(
      r3.stderr,
      'bertgate: ERR_INVALID_ARGUMENT: Give either --coverage, or --target-accuracy (with --delta), not both\n',
    );
  });

  it('--coverage says so when ties make it accept more than asked, and records both shares', async () => {
    // Labelled with the model's own labels, the map is flat at 1: no threshold splits the texts.
    const r = await calibrateCli(copy.dir, own, { coverage: '0.5', out: join(copy.dir, 'flat') });
    assert.equal(r.code, 0, r.stderr);
    const c = JSON.parse(await readFile(join(copy.dir, 'flat', 'calibration.json'), 'utf8'));
    assert.equal(c.guarantee.requested, 0.5);
    assert.equal(c.guarantee.coverage, 1);
    assert.match(
      r.stdout,
      /warning: --coverage 0\.5 was asked for, but 100\.0% of the texts have a confidence at or above the lowest threshold/,
    );
  });

  it('on data the model always gets wrong, says the model is wrong too often, not that the examples are too few', async () => {
    const r = await calibrateCli(copy.dir, wrong, { 'target-accuracy': '0.9' });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /ERR_DATA: no threshold has selective risk <= 0\.1 at confidence 0\.95: the model is wrong too often: at every threshold accepting at least \d+ examples \(the fewest that could certify one\), a share of at least 1\.0000 is wrong, above the risk 0\.1; more data like this will not help/,
    );
    assert.doesNotMatch(r.stderr, /too few/);
  });

  it('refuses, before any pass, an output where calibration.json or gate.bin is not a regular file', async () => {
    for (const file of ['calibration.json', 'gate.bin']) {
      const out = join(copy.dir, `blocked-${file}`);
      await mkdir(join(out, file), { recursive: true });
      const r = await bertgate(['calibrate', '--model', copy.dir, '--data', data, '--coverage', '0.5', '--out', out]);
      assert.equal(r.code, 1);
      assert.equal(
        r.stderr,
        `bertgate: ERR_BUNDLE: ${join(out, file)} is not a regular file: calibrate writes calibration.json and ` +
          'gate.bin there; remove it, or give --out\n',
      );
      assert.doesNotMatch(r.stderr, /logits/);
    }
  });
});
