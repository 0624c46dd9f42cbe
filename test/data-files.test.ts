// Labelled data files (lib/calibration/data.ts) as users' tools write them: a byte order mark,
// a bad byte, a truncated or oversized gzip, a text the model would refuse. Every refusal is
// ERR_DATA naming the file and, where there is one, its line.

import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';

import { MAX_DATA_BYTES, readLabelled, readTexts } from '../lib/calibration/data.js';
import { DataError } from '../lib/errors.js';

describe('data files', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bertgate-data-files-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  async function file(name: string, content: string | Buffer): Promise<string> {
    const path = join(dir, name);
    await writeFile(path, content);
    return path;
  }

  /** The DataError `promise` rejects with: its file, line and message. */
  async function refusal(promise: Promise<unknown>): Promise<{ file: string; line?: number; message: string }> {
    let caught: unknown;
    await assert.rejects(promise, (e: unknown) => {
      caught = e;
      return true;
    });
    assert.ok(caught instanceof DataError, `expected a DataError, got ${String(caught)}`);
    assert.equal(caught.code, 'ERR_DATA');
    return { file: caught.file, ...(caught.line === undefined ? {} : { line: caught.line }), message: caught.message };
  }

  const lines = '{"text": "a", "label": "x"}\n\n{"text": "b", "label": "y"}\n';

  it('gives each example its line in the file (blank lines count), as errors about it name it', async () => {
    const data = await readLabelled(await file('lines.jsonl', lines), ['x', 'y']);
    assert.deepEqual(data.examples, [
      { text: 'a', label: 'x', line: 1 },
      { text: 'b', label: 'y', line: 3 },
    ]);
  });

  it('accepts JSONL that starts with a UTF-8 byte order mark, plain or gzipped', async () => {
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(lines)]);
    for (const path of [await file('bom.jsonl', bom), await file('bom.jsonl.gz', gzipSync(bom))]) {
      const data = await readLabelled(path, ['x', 'y']);
      assert.deepEqual(
        data.examples.map((e) => e.text),
        ['a', 'b'],
      );
    }
  });

  it('refuses a bad byte, naming the file, the line and where in it, instead of replacing it', async () => {
    const content = Buffer.concat([
      Buffer.from('{"text": "a", "label": "x"}\r\n\n{"text": "caf'),
      Buffer.from([0xe9]),
      Buffer.from('", "label": "y"}\n'),
    ]);
    for (const path of [await file('latin1.jsonl', content), await file('latin1.jsonl.gz', gzipSync(content))]) {
      assert.deepEqual(await refusal(readLabelled(path, ['x', 'y'])), {
        file: path,
        line: 3,
        message: `${path} line 3 is not valid UTF-8 (from byte 14 of the line)`,
      });
      assert.deepEqual((await refusal(readTexts(path))).line, 3);
    }
  });

  it('refuses a truncated or damaged .gz as ERR_DATA naming the file, not a raw zlib error', async () => {
    const whole = gzipSync(lines.repeat(50));
    const truncated = await file('truncated.jsonl.gz', whole.subarray(0, whole.length - 20));
    assert.deepEqual(await refusal(readLabelled(truncated, ['x', 'y'])), {
      file: truncated,
      message: `${truncated} could not be decompressed (a truncated or damaged gzip file): unexpected end of file`,
    });
    const plain = await file('plain.jsonl.gz', lines);
    assert.deepEqual(await refusal(readTexts(plain)), {
      file: plain,
      message: `${plain} could not be decompressed (a truncated or damaged gzip file): incorrect header check`,
    });
  });

  it('stops inflating a gzip bomb at the limit, and holds a plain file to the same limit', async () => {
    assert.equal(MAX_DATA_BYTES, 2 ** 30);
    // 10 MB of one JSON line, compressed about 1,000 to 1.
    const bomb = await file('bomb.jsonl.gz', gzipSync(`{"text": "${' '.repeat(10_000_000)}", "label": "x"}\n`));
    assert.deepEqual(await refusal(readLabelled(bomb, ['x', 'y'], { maxBytes: 1_000_000 })), {
      file: bomb,
      message: `${bomb} inflates to more than 1000000 bytes, the most a data file may hold`,
    });
    const big = await file('big.jsonl', lines);
    assert.deepEqual(await refusal(readLabelled(big, ['x', 'y'], { maxBytes: 20 })), {
      file: big,
      message: `${big} holds more than 20 bytes, the most a data file may hold`,
    });
  });

  it('names the line of a text the model would refuse, not its index in a chunk of texts', async () => {
    const path = await file(
      'texts.jsonl',
      '{"text": "a", "label": "x"}\n\n{"text": "bad \\ud800", "label": "x"}\n{"text": "abcdefg", "label": "y"}\n',
    );
    assert.deepEqual(await refusal(readLabelled(path, ['x', 'y'])), {
      file: path,
      line: 3,
      message: `Expected ${path} line 3 to be well-formed Unicode, got a string with an unpaired surrogate`,
    });
    const long = await file('long.jsonl', '{"text": "a", "label": "x"}\n{"text": "abcdefg"}\n');
    assert.deepEqual(await refusal(readTexts(long, { maxTextLength: 5 })), {
      file: long,
      line: 2,
      message: `Expected ${long} line 2 to be at most 5 characters (the "maxTextLength" option), got 7`,
    });
  });
});
