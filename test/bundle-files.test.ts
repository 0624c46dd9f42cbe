// A bundle's files as Classifier.load reads them: regular files only, bundle.json an object,
// calibration.json's numbers within what a run could write, tokenizer_config.json's token
// limit a real one, and a model's kind and token types what bertgate serves.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { BundleError, Classifier, InvalidArgumentError } from '../lib/index.js';
import { bundle, copyBundle, rejectsWith } from './helpers.js';

async function withCopy(name: string, body: (dir: string) => Promise<void>): Promise<void> {
  const copy = await copyBundle(name);
  try {
    await body(copy.dir);
  } finally {
    await copy.cleanup();
  }
}

async function editJson(path: string, edit: (value: Record<string, unknown>) => void): Promise<void> {
  const value = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  edit(value);
  await writeFile(path, JSON.stringify(value));
}

describe('bundle files', () => {
  it('a FIFO in place of a bundle file is refused, not waited on forever', { timeout: 60_000 }, async () => {
    for (const file of ['calibration.json', 'model.pt', 'tokenizer_config.json']) {
      await withCopy('labels7', async (dir) => {
        await rm(join(dir, file), { force: true });
        execFileSync('mkfifo', [join(dir, file)]);
        const e = await rejectsWith(
          Classifier.load(dir),
          BundleError,
          `${join(dir, file)} is not a regular file (a bundle holds only regular files)`,
        );
        assert.equal((e as BundleError).file, file);
      });
    }
  });

  it('a bundle.json that is valid JSON but not an object is refused, not counted as absent', async () => {
    await withCopy('labels7', async (dir) => {
      await writeFile(join(dir, 'bundle.json'), '[]');
      await rejectsWith(Classifier.load(dir), BundleError, 'bundle.json must hold a JSON object');
    });
  });

  it('calibration.json drift counts past a double, and a coverage outside [0, 1], are refused', async () => {
    await withCopy('labels7', async (dir) => {
      const counts = Array.from({ length: 4096 }, (_, i) => (i === 4000 ? 10 : 0));
      const base = { temperature: 1, threshold: 0.5, guarantee: { kind: 'coverage', coverage: 0.5 } };
      for (const [name, calibration] of [
        ['overflow', { ...base, drift: { counts: counts.map((c, i) => (i === 1 ? 1e308 : c)) } }],
        ['sum', { ...base, drift: { counts: counts.map((c, i) => (i < 3 ? 2 ** 52 : c)) } }],
      ] as const) {
        await writeFile(join(dir, 'calibration.json'), JSON.stringify(calibration));
        const e = await rejectsWith(Classifier.load(dir), BundleError, /"drift" must hold "counts"/);
        assert.equal((e as BundleError).field, 'drift', name);
      }
      await writeFile(
        join(dir, 'calibration.json'),
        JSON.stringify({ ...base, guarantee: { kind: 'coverage', coverage: -5 }, drift: { counts } }),
      );
      await rejectsWith(
        Classifier.load(dir),
        BundleError,
        'calibration.json: "guarantee.coverage" must be a share in [0, 1], got -5',
      );
    });
  });

  it('a guarantee nested deeper than calibrate writes one is refused (info.guarantee must serialise)', async () => {
    await withCopy('labels7', async (dir) => {
      const deep = '['.repeat(100_000) + ']'.repeat(100_000);
      await writeFile(
        join(dir, 'calibration.json'),
        `{"temperature": 1, "threshold": 0.5, "guarantee": {"kind": "coverage", "coverage": 0.5, "x": ${deep}}}`,
      );
      await rejectsWith(
        Classifier.load(dir),
        BundleError,
        'calibration.json: "guarantee" must be an object nested at most 4 levels deep, as calibrate writes it',
      );
    });
  });

  it("tokenizer_config.json's model_max_length is a whole number of at least 3 tokens, or a sentinel", async () => {
    await withCopy('labels7', async (dir) => {
      const path = join(dir, 'tokenizer_config.json');
      for (const bad of [2.5, 1, 1e-300, -3, '64']) {
        await editJson(path, (c) => (c['model_max_length'] = bad));
        await rejectsWith(
          Classifier.load(dir, { verify: false }),
          BundleError,
          `tokenizer_config.json: "model_max_length" must be a whole number of tokens, at least 3, got ${JSON.stringify(bad)}`,
        );
      }
      const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as {
        max_position_embeddings: number;
      };
      for (const [declared, limit] of [
        [1e30, config.max_position_embeddings],
        [16, 16],
      ]) {
        await editJson(path, (c) => (c['model_max_length'] = declared));
        const clf = await Classifier.load(dir, { verify: false });
        try {
          assert.equal(clf.info.maxLength, limit);
        } finally {
          await clf.close();
        }
      }
    });
  });

  it('a model trained multi-label or for regression is refused: bertgate serves one label per text', async () => {
    await withCopy('labels7', async (dir) => {
      for (const kind of ['multi_label_classification', 'regression']) {
        await editJson(join(dir, 'config.json'), (c) => (c['problem_type'] = kind));
        const e = await rejectsWith(
          Classifier.load(dir, { verify: false }),
          BundleError,
          `config.json: "problem_type" is ${JSON.stringify(kind)}; bertgate serves single-label classification ` +
            '(one label per text, a softmax over the logits), which is not what this model computes',
        );
        assert.equal((e as BundleError).field, 'problem_type');
      }
      await editJson(join(dir, 'config.json'), (c) => (c['problem_type'] = 'single_label_classification'));
      await (await Classifier.load(dir, { verify: false })).close();
    });
  });

  it('a model with one token type refuses text pairs up front; texts batched beside them are served', async () => {
    const clf = await Classifier.load(bundle('onetype'));
    try {
      const single = clf.classify('install a package');
      await rejectsWith(
        clf.classify([{ text: 'a', pair: 'b' }, 'c'] as never),
        InvalidArgumentError,
        'texts[0] is a text pair, but this model has one token type (config.json "type_vocab_size" 1): it ' +
          'classifies single texts only',
      );
      const d = await single;
      assert.ok(d.accepted || d.reason !== 'invalid');
    } finally {
      await clf.close();
    }
  });
});
