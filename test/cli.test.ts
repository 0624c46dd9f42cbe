// The bertgate command line, run as users run it: a child process.

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { loadAddon } from '../lib/runtime/open.js';
import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { findLibtorch } from '../lib/runtime/libtorch.js';
import { FIXTURES, bertgate, bundle } from './helpers.js';

function jsonLines(text: string): Array<Record<string, unknown>> {
  return text
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('bertgate classify', () => {
  it('classifies the texts given as arguments, one JSON decision per line', async () => {
    const r = await bertgate([
      'classify',
      '--model',
      bundle('labels7'),
      '--threshold',
      '0.2',
      'install a package',
      'a game',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const decisions = jsonLines(r.stdout);
    assert.equal(decisions.length, 2);
    for (const d of decisions) {
      assert.equal(typeof d['accepted'], 'boolean');
      assert.ok(d['accepted'] ? d['label'] !== 'Other' : d['label'] === 'Other');
    }
  });

  it('reads stdin lines, plain or JSONL, skipping blank ones', async () => {
    const r = await bertgate(['classify', '--model', bundle('labels2')], {
      input: 'first line\n\n{"text": "second"}\nthird\n',
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(jsonLines(r.stdout).length, 3);
  });

  it('drops a leading byte order mark, and refuses a line too long for any text before reading it whole', async () => {
    const bom = await bertgate(['classify', '--model', bundle('labels2'), '--threshold', '0'], {
      input: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"text": "good"}\ngood\n')]),
    });
    assert.equal(bom.code, 0, bom.stderr);
    const [a, b] = jsonLines(bom.stdout);
    assert.equal(a?.['probability'], b?.['probability'], 'the JSONL line was read as JSON, its text alone');
    // maxTextLength 1,000,000 characters: 12 bytes each at most in JSONL, plus 4,096.
    const long = await bertgate(['classify', '--model', bundle('labels2')], {
      input: 'ok\n' + 'x'.repeat(12_100_000) + '\n',
    });
    assert.equal(long.code, 1);
    assert.match(long.stderr, /ERR_INVALID_ARGUMENT: stdin line 2 is longer than 12004096 bytes/);
  });

  it('refuses invalid UTF-8 on stdin as the library does, naming the line', async () => {
    const input = Buffer.concat([
      Buffer.from('fine\r\n\nalso fine\nbad '),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('\n'),
    ]);
    const r = await bertgate(['classify', '--model', bundle('labels2')], { input });
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      'bertgate: ERR_INVALID_ARGUMENT: stdin line 4: expected UTF-8 text, got bytes that are not valid UTF-8 (from byte 5 of the line)\n',
    );
    assert.doesNotMatch(r.stdout, /\uFFFD/);
  });

  it('names the stdin line of a bad text, not its place in a chunk', async () => {
    // Line 300 (the 44th text of the second chunk of 256) holds an unpaired surrogate, escaped in JSON.
    const lines = Array.from({ length: 299 }, (_, i) => `text ${i + 1}`);
    const r = await bertgate(['classify', '--model', bundle('labels2')], {
      input: `${lines.join('\n')}\n{"text": "bad \\ud800"}\nafter\n`,
    });
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      'bertgate: ERR_INVALID_ARGUMENT: Expected stdin line 300 to be well-formed Unicode, got a string with an unpaired surrogate\n',
    );
    assert.equal(jsonLines(r.stdout).length, 256, 'the first chunk was answered');
  });

  it('prints the usage for --help after a command, and classifies "--help" after --', async () => {
    for (const command of ['calibrate', 'classify', 'export']) {
      const r = await bertgate([command, '--model', 'nowhere', '--help']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /calibrate --model DIR --data FILE/);
    }
    const text = await bertgate(['classify', '--model', bundle('labels2'), '--', '--help']);
    assert.equal(text.code, 0, text.stderr);
    assert.equal((JSON.parse(text.stdout) as { label: string }).label.length > 0, true);
  });

  it('fails with a typed message for a bad flag value', async () => {
    const r = await bertgate(['classify', '--model', bundle('labels2'), '--threshold', 'abc', 'x']);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'bertgate: ERR_INVALID_ARGUMENT: Expected --threshold to be a decimal number, got "abc"\n');
    const range = await bertgate(['classify', '--model', bundle('labels2'), '--threshold', '2', 'x']);
    assert.equal(
      range.stderr,
      'bertgate: ERR_INVALID_ARGUMENT: Expected the "threshold" option to be a number in [0, 1], got 2\n',
    );
  });

  it('names the problem when CUDA is loaded but there is no GPU', async (t) => {
    if ((await bertgate(['doctor', '--json'])).stdout.includes('"cudaAvailable": true'))
      return t.skip('this machine has a GPU');
    const r = await bertgate(['classify', '--model', bundle('labels2'), '--device', 'cuda', 'x'], {
      env: { BERTGATE_CUDA: '1' },
    });
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      "bertgate: ERR_DEVICE_UNAVAILABLE: device 'cuda:0' was requested but libtorch sees no CUDA device in this process\n",
    );
  });
});

describe('bertgate evaluate: data files', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bertgate-evaluate-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("names the file's line of a text the classifier refuses, not its index in a chunk", async () => {
    // Line 600 is the 88th text of the second chunk of 512, and over maxTextLength (1,000,000).
    const lines = Array.from({ length: 599 }, (_, i) => JSON.stringify({ text: `text ${i + 1}`, label: 'positive' }));
    lines.push(JSON.stringify({ text: 'x'.repeat(1_000_001), label: 'negative' }));
    const data = join(dir, 'long.jsonl');
    await writeFile(data, lines.join('\n') + '\n');
    const r = await bertgate(['evaluate', '--model', bundle('labels2'), '--data', data]);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `bertgate: ERR_DATA: Expected ${data} line 600 to be at most 1000000 characters (the "maxTextLength" option), got 1000001\n`,
    );
  });

  it('reads a labelled file that starts with a byte order mark, as Windows tools write it', async () => {
    const data = join(dir, 'bom.jsonl');
    await writeFile(data, '\uFEFF{"text": "good", "label": "positive"}\n{"text": "bad", "label": "negative"}\n');
    const r = await bertgate(['evaluate', '--model', bundle('labels2'), '--data', data, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { n: number }).n, 2);
  });

  it('says no text was accepted, not NaN, when the threshold accepts none', async () => {
    const data = join(dir, 'none.jsonl');
    await writeFile(data, '{"text": "good", "label": "positive"}\n{"text": "bad", "label": "negative"}\n');
    const r = await bertgate(['evaluate', '--model', bundle('labels2'), '--data', data, '--threshold', '1']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /\| coverage \(not "Other"\) \| 0\.0000 \|\n\| selective accuracy \| n\/a \(no text accepted\) \|/,
    );
    assert.ok(!r.stdout.includes('NaN'), r.stdout);
  });
});

describe('bertgate doctor', () => {
  it('reports libtorch, its version, CUDA and threads', async () => {
    const r = await bertgate(['doctor']);
    assert.equal(r.code, 0, r.stderr);
    const { location } = await findLibtorch();
    assert.ok(location);
    assert.ok(r.stdout.includes(`libtorch         ${location.dir} (version 2.11.0, via python)`), r.stdout);
    assert.match(r.stdout, /built with {5}cmake-js, g\+\+ [\d.]+, N-API 8, cxx11 ABI on/);
    assert.match(r.stdout, /\nengine {11}libbertgate_engine\.torch-2\.11\.(cuda|cpu)\.so \(/);
    assert.match(r.stdout, /engine build {3}torch 2\.11\.0 headers, CUDA kernels (yes|no)/);
    assert.match(r.stdout, /CUDA libraries {3}(loaded|not loaded): /);
    assert.match(r.stdout, /threads {8}\d+ intra-op per model by default/);
    assert.match(r.stdout, /\nok\n$/);
  });

  it('says which CPU allocator the first load installs, and flags a BERTGATE_CPU_ALLOCATOR it would refuse', async () => {
    const plain = await bertgate(['doctor']);
    assert.match(plain.stdout, /CPU allocator {2}bertgate's bounded cache of large buffers, from the first load/);
    const system = await bertgate(['doctor'], { env: { BERTGATE_CPU_ALLOCATOR: 'system' } });
    assert.match(system.stdout, /CPU allocator {2}libtorch's own \(BERTGATE_CPU_ALLOCATOR=system\)/);
    const bad = await bertgate(['doctor'], { env: { BERTGATE_CPU_ALLOCATOR: 'tcmalloc' } });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stdout + bad.stderr, /BERTGATE_CPU_ALLOCATOR is "tcmalloc"; expected "system"/);
  });

  it('lists the replicas a --device and --replicas would load, and refuses a device it cannot see', async () => {
    const r = await bertgate(['doctor', '--replicas', '2', '--threads', '1']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /\nreplicas {9}2, 1 intra-op thread\(s\) each, sharing one copy of the weights \(--device, --replicas, --threads\)\n {2}0 {4}cpu\n {2}1 {4}cpu\nok\n$/,
    );
    // More threads than any machine's cores: placed (a load would warn, not refuse), and said.
    const crowded = await bertgate(['doctor', '--replicas', '64', '--threads', '64']);
    assert.equal(crowded.code, 0, crowded.stderr);
    assert.match(
      crowded.stdout,
      /\n {2}note: 64 replicas x 64 threads each = 4096 threads on \d+ cores: they will contend/,
    );
    const json = JSON.parse((await bertgate(['doctor', '--json', '--replicas', '2'])).stdout) as { replicas: unknown };
    assert.deepEqual(json.replicas, [
      { replica: 0, device: 'cpu', deviceIndex: 0 },
      { replica: 1, device: 'cpu', deviceIndex: 0 },
    ]);
    const gone = await bertgate(['doctor', '--device', 'cuda:0,cuda:999']);
    assert.equal(gone.code, 1);
    assert.match(
      gone.stderr,
      /PROBLEM: device 'cuda:(0|999)' (does not exist|was requested but libtorch sees no CUDA device)/,
    );
    const bad = await bertgate(['doctor', '--replicas', '0']);
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, /Expected --replicas to be a whole number in \[1, 64\], got "0"/);
  });

  it('exits 1 naming what was tried when libtorch is missing', async () => {
    const r = await bertgate(['doctor'], { env: { LIBTORCH: '/nonexistent/libtorch' } });
    assert.equal(r.code, 1);
    assert.match(r.stdout + r.stderr, /\[LIBTORCH\] not-found: \/nonexistent\/libtorch does not exist/);
    assert.match(r.stderr, /PROBLEM: libtorch was not found\. Looked at, in order:/);
  });

  it("exits 1 when the libtorch's headers name another release than its libraries", async () => {
    const { location } = await findLibtorch();
    assert.ok(location);
    const fake = await mkdtemp(join(tmpdir(), 'bertgate-libtorch-'));
    try {
      await mkdir(join(fake, 'include', 'torch', 'headeronly'), { recursive: true });
      await writeFile(
        join(fake, 'include', 'torch', 'headeronly', 'version.h'),
        '#define TORCH_VERSION_MAJOR 2\n#define TORCH_VERSION_MINOR 10\n#define TORCH_VERSION_PATCH 0\n',
      );
      await symlink(join(location.dir, 'lib'), join(fake, 'lib'));
      const r = await bertgate(['doctor'], { env: { LIBTORCH: fake } });
      assert.equal(r.code, 1);
      assert.ok(
        r.stderr.includes(
          `[LIBTORCH] unusable: ${fake}: its include/torch/headeronly/version.h says torch 2.10.0, but ` +
            `lib/libtorch_cpu.so is torch ${location.version}`,
        ),
        r.stderr,
      );
    } finally {
      await rm(fake, { recursive: true, force: true });
    }
  });

  it('exits 1 when the addon itself cannot be loaded', async () => {
    const r = await bertgate(['doctor'], { env: { BERTGATE_ADDON: '/nonexistent/bertgate.node' } });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /PROBLEM: the native addon was not found: BERTGATE_ADDON names \/nonexistent\/bertgate\.node, which does not exist\n/,
    );
  });
});

describe('bertgate doctor: addon paths', () => {
  it('takes a BERTGATE_ADDON relative to the working directory, as a shell user means it', async () => {
    const absolute = loadAddon().path;
    const r = await bertgate(['doctor', '--json'], { env: { BERTGATE_ADDON: relative(process.cwd(), absolute) } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { addon: { path: string } }).addon.path, absolute);
  });
});

describe('bertgate export: arguments', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bertgate-export-args-'));
    await mkdir(join(dir, 'old-bundle'));
    await writeFile(join(dir, 'old-bundle', 'calibration.json'), '{}');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const model = join(FIXTURES, 'turkish50-hf');
  const at = (name: string): string => join(dir, name);
  for (const [name, args, message] of [
    [
      'a model directory that does not exist',
      () => ['/nonexistent/model', at('out')],
      'HF_MODEL_DIR /nonexistent/model is not a directory',
    ],
    [
      'a bundle directory that is the model directory',
      () => [model, model],
      `BUNDLE_DIR is HF_MODEL_DIR (${model}); give the bundle a directory of its own`,
    ],
    [
      'a bundle directory that holds files',
      () => [model, at('old-bundle')],
      'is not empty (calibration.json): export into a new or empty directory',
    ],
    [
      '--max-length 0',
      () => [model, at('new'), '--max-length', '0'],
      'Expected --max-length to be a whole number of tokens, at least 2, got "0"',
    ],
    [
      '--tolerance=-1',
      () => [model, at('new'), '--tolerance=-1'],
      'Expected --tolerance to be a positive number, got "-1"',
    ],
    ['--quantize int4', () => [model, at('new'), '--quantize', 'int4'], 'Expected --quantize to be int8, got "int4"'],
    [
      '--quantize int8-fast',
      () => [model, at('new'), '--quantize', 'int8-fast'],
      'Expected --quantize to be int8, got "int8-fast" (int8-fast is gone: int8 now quantizes every encoder layer',
    ],
    [
      '--feature-kind cls',
      () => [model, at('new'), '--features', '--feature-kind', 'cls'],
      'Expected --feature-kind to be pooler, pooler+mean or mean:K (K a layer, 0 the embeddings), got "cls"',
    ],
    [
      '--feature-kind mean:-1',
      () => [model, at('new'), '--feature-kind', 'mean:-1'],
      'Expected --feature-kind to be pooler, pooler+mean or mean:K (K a layer, 0 the embeddings), got "mean:-1"',
    ],
  ] as const) {
    it(`refuses ${name} before any Python runs`, async () => {
      const r = await bertgate(['export', ...args()], { env: { BERTGATE_PYTHON: '/nonexistent/python' } });
      assert.equal(r.code, 1);
      assert.ok(r.stderr.startsWith('bertgate: ERR_INVALID_ARGUMENT: ') && r.stderr.includes(message), r.stderr);
    });
  }
});

describe('bertgate demo', () => {
  it('classifies the sample texts with the trained default model, "Other" included, stating the guarantee', async () => {
    const r = await bertgate(['demo']);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /RANDOM WEIGHTS/);
    assert.match(
      r.stdout,
      /calibrated on \d+ labelled texts: accuracy on accepted texts >= 0\.95 with probability >= 0\.95/,
    );
    assert.match(r.stdout, /rule {4}accept the best label when its calibrated confidence >= 0\.\d+ /);
    assert.match(r.stdout, /-> Other \(best [\w-]+, confidence 0\.\d+ < 0\.\d+\)/);
    assert.match(r.stdout, /-> (?!Other)[\w-]+ \(confidence 0\.\d+\)/);
    // The default model carries an out-of-distribution gate: the demo says what it flagged, by its own score.
    assert.match(r.stdout, /only texts the out-of-distribution gate passes \(score <= \d+(\.\d+)?: at most 0\.05 /);
    assert.match(r.stdout, /-> Other \(best [\w-]+, out of distribution: gate score \d+(\.\d+)? > \d+(\.\d+)?\)/);
    assert.doesNotMatch(r.stdout, /confidence 0\.\d+ < \d{2,}/);
    // The closing count agrees with the lines above it, reason by reason.
    const lines = r.stdout.match(/^ {2}-> .*$/gm) ?? [];
    const gate = lines.filter((l) => l.includes('out of distribution')).length;
    const low = lines.filter((l) => / < 0\.\d+\)/.test(l)).length;
    const summary = `${gate + low} of ${lines.length} texts went to "Other": `;
    assert.ok(r.stdout.includes(summary), r.stdout);
    assert.match(r.stdout, new RegExp(`${gate} out of distribution \\(the gate\\)`));
    assert.match(r.stdout, new RegExp(`${low} confidence below the threshold`));
  });

  it('ships a default bundle within 15 MB, trained and calibrated', async () => {
    const dir = join(PACKAGE_ROOT, 'models', 'default');
    let bytes = 0;
    for (const file of await readdir(dir)) bytes += (await stat(join(dir, file))).size;
    assert.ok(bytes <= 15_000_000, `${bytes} bytes`);
    const manifest = JSON.parse(await readFile(join(dir, 'bundle.json'), 'utf8'));
    assert.equal(manifest.random_weights, false);
    const calibration = JSON.parse(await readFile(join(dir, 'calibration.json'), 'utf8'));
    assert.equal(calibration.guarantee.kind, 'selective-risk');
  });
});
