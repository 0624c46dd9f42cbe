// Bad input: each case is a typed error with an exact message, the caller's stack, and a
// process that carries on (the last test classifies again).

import assert from 'node:assert/strict';
import { readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { BertgateError, BundleError, Classifier, InvalidArgumentError, ModelLoadError } from '../lib/index.js';
import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { fromNative } from '../lib/errors.js';
import { bundle, copyBundle, expectRejects, rejectsWith } from './helpers.js';

describe('broken bundles', () => {
  let copy: { dir: string; cleanup: () => Promise<void> };
  before(async () => {
    copy = await copyBundle('labels7');
    // These cases reach the checks behind the seal, so the copy is unsealed, as a hand-made
    // bundle is; the seal (bundle.json "files") has its own cases in faults.test.ts.
    const manifest = join(copy.dir, 'bundle.json');
    const unsealed = JSON.parse(await readFile(manifest, 'utf8')) as Record<string, unknown>;
    delete unsealed['files'];
    await writeFile(manifest, JSON.stringify(unsealed));
  });
  after(() => copy.cleanup());

  async function withFile(
    file: string,
    edit: (path: string) => Promise<void>,
    check: () => Promise<unknown>,
  ): Promise<void> {
    const path = join(copy.dir, file);
    const original = await readFile(path);
    try {
      await edit(path);
      await check();
    } finally {
      await writeFile(path, original);
    }
  }

  it('a missing model.pt', () =>
    withFile(
      'model.pt',
      (p) => rm(p),
      async () => {
        const e = await rejectsWith(
          Classifier.load(copy.dir),
          BundleError,
          `the bundle at ${copy.dir} has no model.pt`,
        );
        assert.equal((e as BundleError).file, 'model.pt');
      },
    ));

  it('a model.pt that is not TorchScript', () =>
    withFile(
      'model.pt',
      (p) => writeFile(p, 'not a zip archive at all'),
      () =>
        expectRejects(
          Classifier.load(copy.dir),
          ModelLoadError,
          new RegExp(`^'${join(copy.dir, 'model.pt')}' is not a loadable TorchScript module: `),
        ),
    ));

  it('a model.pt cut short', () =>
    withFile(
      'model.pt',
      async (p) => truncate(p, 100_000),
      () => expectRejects(Classifier.load(copy.dir), ModelLoadError, /is not a loadable TorchScript module/),
    ));

  it('a config.json that is not JSON', () =>
    withFile(
      'config.json',
      (p) => writeFile(p, '{"id2label": '),
      () =>
        expectRejects(
          Classifier.load(copy.dir),
          BundleError,
          new RegExp(`^${join(copy.dir, 'config.json')} is not valid JSON: `),
        ),
    ));

  it('config.json naming fewer labels than the model outputs', () =>
    withFile(
      'config.json',
      async (p) => {
        const config = JSON.parse(await readFile(p, 'utf8'));
        delete config.id2label['6'];
        delete config.label2id;
        delete config.num_labels;
        await writeFile(p, JSON.stringify(config));
      },
      async () => {
        const e = await rejectsWith(
          Classifier.load(copy.dir),
          BundleError,
          'config.json "id2label" names 6 labels, but model.pt outputs 7 logits per text',
        );
        assert.equal((e as BundleError).field, 'id2label');
      },
    ));

  it('config.json whose num_labels disagrees with id2label', () =>
    withFile(
      'config.json',
      async (p) => writeFile(p, JSON.stringify({ ...JSON.parse(await readFile(p, 'utf8')), num_labels: 9 })),
      () =>
        expectRejects(
          Classifier.load(copy.dir),
          BundleError,
          'config.json: "num_labels" is 9 but "id2label" names 7 labels',
        ),
    ));

  it('config.json with another vocabulary size than the weights', () =>
    withFile(
      'config.json',
      async (p) => writeFile(p, JSON.stringify({ ...JSON.parse(await readFile(p, 'utf8')), vocab_size: 30522 })),
      () =>
        expectRejects(
          Classifier.load(copy.dir),
          BundleError,
          'config.json "vocab_size" is 30522, but model.pt has 1200 word embeddings',
        ),
    ));

  it('config.json with another number of token types than the weights', () =>
    withFile(
      'config.json',
      async (p) => writeFile(p, JSON.stringify({ ...JSON.parse(await readFile(p, 'utf8')), type_vocab_size: 3 })),
      () =>
        expectRejects(
          Classifier.load(copy.dir),
          BundleError,
          'config.json "type_vocab_size" is 3, but model.pt has 2 token type embeddings',
        ),
    ));

  it('a tokenizer.json that is not a tokenizer', () =>
    withFile(
      'tokenizer.json',
      (p) => writeFile(p, '{"version": "1.0"}'),
      () =>
        expectRejects(
          Classifier.load(copy.dir),
          BundleError,
          new RegExp(`^${join(copy.dir, 'tokenizer.json')} is not a usable tokenizer`),
        ),
    ));

  it('a calibration.json with a threshold out of range', () =>
    withFile(
      'bundle.json',
      async () => writeFile(join(copy.dir, 'calibration.json'), JSON.stringify({ threshold: 7 })),
      async () => {
        try {
          await rejectsWith(
            Classifier.load(copy.dir),
            BundleError,
            'calibration.json: "threshold" must be a number in [0, 1], got 7',
          );
        } finally {
          await rm(join(copy.dir, 'calibration.json'));
        }
      },
    ));
});

describe('bad texts', () => {
  let clf: Classifier;
  before(async () => {
    clf = await Classifier.load(bundle('labels2'), { maxTextLength: 1000 });
  });
  after(() => clf.close());

  const cases: Array<[string, unknown, string]> = [
    ['a number', 42, 'Expected text to be a string, a Uint8Array of UTF-8, or { text, pair }, got 42'],
    ['null', null, 'Expected text to be a string, a Uint8Array of UTF-8, or { text, pair }, got null'],
    [
      'an object',
      { text: 'hi' },
      'Expected text to be a string, a Uint8Array of UTF-8, or { text, pair }, got an instance of Object',
    ],
    [
      'a number among strings',
      ['fine', 7],
      'Expected texts[1] to be a string, a Uint8Array of UTF-8, or { text, pair }, got 7',
    ],
    ['an empty array', [], 'Expected texts to be a non-empty array, got an empty array'],
    ['invalid UTF-8', Buffer.from([0x61, 0xff, 0xfe]), 'Expected text to be valid UTF-8, got bytes that are not'],
    [
      'invalid UTF-8 in a list',
      ['ok', Buffer.from([0xc3, 0x28])],
      'Expected texts[1] to be valid UTF-8, got bytes that are not',
    ],
    [
      'a text over maxTextLength',
      'x'.repeat(1001),
      'Expected text to be at most 1000 characters (the "maxTextLength" option), got 1001',
    ],
  ];
  for (const [name, input, message] of cases) {
    it(`classify: ${name}`, () => expectRejects(clf.classify(input as never), InvalidArgumentError, message));
    it(`logits: ${name}`, () => expectRejects(clf.logits(input as never), InvalidArgumentError, message));
  }

  it("reports the caller's stack, not bertgate's", async () => {
    const e = await rejectsWith(clf.classify(42 as never), InvalidArgumentError, /Expected text/);
    const frames = (e.stack ?? '').split('\n').slice(1);
    assert.match(frames[0] ?? '', /errors\.test\.js/);
    assert.equal(e.code, 'ERR_INVALID_ARGUMENT');
  });
});

describe('native error codes', () => {
  it('every code the native side raises becomes a typed error with that code', async () => {
    const sources = await readdir(join(PACKAGE_ROOT, 'native'), { recursive: true });
    const codes = new Set<string>();
    for (const file of sources.filter((f) => /\.(cpp|h|cu)$/.test(f))) {
      const text = await readFile(join(PACKAGE_ROOT, 'native', file), 'utf8');
      for (const m of text.matchAll(/"(ERR_[A-Z_]+)"/g)) codes.add(m[1] as string);
    }
    assert.ok(codes.has('ERR_ENGINE_NOT_OPEN') && codes.has('ERR_MODEL_OUTPUT'), [...codes].join(', '));
    for (const code of codes) {
      const typed = fromNative(Object.assign(new Error('from native'), { code }), '');
      assert.ok(typed instanceof BertgateError, code);
      assert.equal(typed.code, code, `${code} surfaced as ${typed.code}`);
      assert.equal(typed.message, 'from native');
    }
  });
});
