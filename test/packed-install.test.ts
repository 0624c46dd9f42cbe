// Installed as users install it: the prebuild matrix (npm test's set-up runs
// scripts/prebuilds.mjs), `npm pack`, then the tarball installed with --ignore-scripts into a
// fresh project whose PATH holds node and sh alone (no compiler, cmake, nvcc or python).
// Then: the oldest torch of the matrix (the project's .venv), the newest (a second virtualenv
// holding that torch's wheel), a CPU-only libtorch (the CPU libraries alone), the export tool
// from the package, and a source build with `bertgate build` for when no engine fits.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, link, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync, readdirSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { prebuildDir } from '../lib/runtime/addon-path.js';
import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { ENGINE_MANIFEST, MKL_SHIM } from '../lib/runtime/engines.js';
import { FIXTURES, maxAbsDiff } from './helpers.js';

const exec = promisify(execFile);
const TEXT = 'Python bindings for the libxml2 XML parsing library.';
const VENV = join(PACKAGE_ROOT, '.venv');
const PACKED_LIMIT = 25 * 2 ** 20;

interface TorchWheels {
  MATRIX: string[];
  libtorchDir(version: string): string;
  torchVenv(version: string): string;
}
const wheels = (await import(pathToFileURL(join(PACKAGE_ROOT, 'scripts', 'torch-wheels.mjs')).href)) as TorchWheels;
const OLDEST = wheels.MATRIX[0] as string;
const NEWEST = wheels.MATRIX[wheels.MATRIX.length - 1] as string;
const minor = (version: string): string => version.split('.').slice(0, 2).join('.');

/** npm's own entry point, run with this node: the test controls PATH completely. */
function npmCli(): string {
  if (process.env['npm_execpath']?.endsWith('.js')) return process.env['npm_execpath'];
  const which = process.env['PATH']?.split(':').find((dir) => existsSync(join(dir, 'npm')));
  assert.ok(which, 'npm is not on PATH');
  return join(realpathSync(join(which, 'npm')), '..', '..', 'bin', 'npm-cli.js');
}

/**
 * A clean environment: HOME (npm's cache, so no network is needed beyond the registry), the
 * PATH given, and the variables named. Nothing inherited from the npm run that started the
 * tests (npm_config_* would leak into the child npm; VIRTUAL_ENV would pick the libtorch).
 */
function cleanEnv(path: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { HOME: process.env['HOME'], PATH: path, ...extra };
  if (process.env['TMPDIR']) env['TMPDIR'] = process.env['TMPDIR'];
  return env;
}

async function npm(cwd: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const { stdout, stderr } = await exec(
    process.execPath,
    [npmCli(), ...args, '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts'],
    { cwd, env, maxBuffer: 64 << 20 },
  );
  return stdout + stderr;
}

async function bertgate(
  app: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const cli = join(app, 'node_modules', 'bertgate', 'dist', 'lib', 'cli', 'main.js');
  try {
    const { stdout, stderr } = await exec(process.execPath, [cli, ...args], { cwd: app, env, maxBuffer: 16 << 20 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** Classifies TEXT with the default model through the installed CLI; the engine doctor chose. */
async function classifyDefault(app: string, env: NodeJS.ProcessEnv): Promise<{ label: string; engine: string }> {
  const doctor = await bertgate(app, ['doctor', '--json'], env);
  assert.equal(doctor.code, 0, doctor.stdout + doctor.stderr);
  const engine = (JSON.parse(doctor.stdout) as { engines: { chosen: string } }).engines.chosen;
  const run = await bertgate(app, ['classify', TEXT], env);
  assert.equal(run.code, 0, run.stderr);
  return { label: (JSON.parse(run.stdout) as { label: string }).label, engine };
}

async function newApp(root: string, name: string): Promise<string> {
  const app = join(root, name);
  await mkdir(app);
  await writeFile(join(app, 'package.json'), JSON.stringify({ name, private: true, type: 'module' }) + '\n');
  return app;
}

/** Hard links where the file system allows (libtorch_cpu.so is 450 MB), copies elsewhere. */
async function place(from: string, to: string): Promise<void> {
  await link(from, to).catch(() => copyFile(from, to));
}

describe('packed install', () => {
  let root: string;
  let tarball: string;
  let files: Array<{ path: string }>;
  let packedSize: number;
  let bin: string; // node and sh, nothing else
  let app: string; // the prebuilt install, shared by the runs below

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'bertgate-pack-'));
    // --ignore-scripts: prepack would recompile dist/ while other test files import it.
    const { stdout } = await exec(
      process.execPath,
      [npmCli(), 'pack', '--json', '--ignore-scripts', '--pack-destination', root],
      { cwd: PACKAGE_ROOT, maxBuffer: 64 << 20 },
    );
    const [packed] = JSON.parse(stdout) as Array<{ filename: string; size: number; files: Array<{ path: string }> }>;
    assert.ok(packed);
    tarball = join(root, packed.filename);
    files = packed.files;
    packedSize = packed.size;
    bin = join(root, 'bin');
    await mkdir(bin);
    await symlink(process.execPath, join(bin, 'node'));
    await symlink('/bin/sh', join(bin, 'sh'));
    app = await newApp(root, 'with-prebuild');
    const log = await npm(app, ['install', '--ignore-scripts', tarball], cleanEnv(bin));
    assert.doesNotMatch(log, /allowScripts|install script/i);
  });
  after(() => rm(root, { recursive: true, force: true }));

  it(`packs the addon, an engine per torch minor and flavour, the default model and the exporter, in at most 25 MB`, (t) => {
    const paths = files.map((f) => f.path);
    const platform = `prebuilds/${process.platform}-${process.arch}`;
    const engines = wheels.MATRIX.flatMap((v) =>
      ['cuda', 'cpu'].map((f) => `${platform}/libbertgate_engine.torch-${minor(v)}.${f}.so`),
    );
    for (const file of [
      `${platform}/bertgate.glibc.node`,
      `${platform}/${ENGINE_MANIFEST}`,
      `${platform}/${MKL_SHIM}`,
      ...engines,
      'models/default/model.pt',
      'models/default/calibration.json',
      'dist/lib/index.js',
      'dist/lib/cli/main.js',
      'python/bertgate_export/export.py',
      'python/bertgate_export/__main__.py',
      // export.py imports the int8 recipe, and the recipe its operator: without them the
      // installed exporter cannot start.
      'python/bertgate_export/quantize.py',
      'python/bertgate_export/int8_linear.py',
      'scripts/build-native.mjs',
      'CMakeLists.txt',
      'native/engine/torch_engine.cpp',
      'native/shim/mkl_any_cpu.cpp',
    ]) {
      assert.ok(paths.includes(file), `${file} is not in the tarball`);
    }
    const unwanted = paths.filter((f) => /^(test|dist\/test|data|bench|\.fixtures|build)\/|^binding\.gyp$/.test(f));
    assert.deepEqual(unwanted, []);
    assert.ok(!paths.some((f) => f.startsWith('python/tests/')), 'the exporter tests are packed');
    assert.ok(packedSize <= PACKED_LIMIT, `the tarball is ${(packedSize / 2 ** 20).toFixed(1)} MiB`);
    t.diagnostic(`tarball ${(packedSize / 2 ** 20).toFixed(2)} MiB packed, ${paths.length} files`);
  });

  it('packs (and tests) no compiled file whose source is gone: dist/ is built from scratch', () => {
    const compiled = [
      ...files.map((f) => f.path).filter((p) => p.startsWith('dist/')),
      ...readdirSync(join(PACKAGE_ROOT, 'dist', 'test')).map((f) => `dist/test/${f}`),
    ].filter((p) => p.endsWith('.js'));
    const orphans = compiled.filter(
      (p) => !existsSync(join(PACKAGE_ROOT, p.replace(/^dist\//, '').replace(/\.js$/, '.ts'))),
    );
    assert.ok(compiled.length > 20);
    assert.deepEqual(orphans, []);
  });

  it('installs with --ignore-scripts and no compiler on PATH, and builds nothing', () => {
    const installed = join(app, 'node_modules', 'bertgate');
    assert.equal(existsSync(join(installed, 'build')), false, 'something was built');
    const manifest = join(prebuildDir(installed), ENGINE_MANIFEST);
    assert.ok(existsSync(manifest));
  });

  it(`the oldest torch (${OLDEST}, the project's virtualenv): the CPU engine, or the CUDA one with CUDA loaded`, async () => {
    const env = cleanEnv(bin, { VIRTUAL_ENV: VENV });
    assert.deepEqual(await classifyDefault(app, env), {
      label: 'python',
      engine: `libbertgate_engine.torch-${minor(OLDEST)}.cpu.so`,
    });
    // BERTGATE_CUDA=1 loads libtorch's CUDA half even without a driver: the CUDA flavour.
    assert.deepEqual(await classifyDefault(app, { ...env, BERTGATE_CUDA: '1' }), {
      label: 'python',
      engine: `libbertgate_engine.torch-${minor(OLDEST)}.cuda.so`,
    });
  });

  it(`the newest torch (${NEWEST}, a second virtualenv): its own engine`, async () => {
    const python = wheels.torchVenv(NEWEST);
    const env = cleanEnv(bin, { BERTGATE_PYTHON: python });
    const doctor = await bertgate(app, ['doctor'], env);
    assert.match(doctor.stdout, new RegExp(`libtorch +\\S+ \\(version ${NEWEST.replace(/\./g, '\\.')}, via python\\)`));
    assert.deepEqual(await classifyDefault(app, env), {
      label: 'python',
      engine: `libbertgate_engine.torch-${minor(NEWEST)}.cpu.so`,
    });
  });

  it('a CPU-only libtorch: the CPU engine needs no CUDA library of its own, and runs on the CPU libraries alone', async () => {
    const prebuilt = prebuildDir(join(app, 'node_modules', 'bertgate'));
    for (const file of readdirSync(prebuilt).filter((f) => f.endsWith('.cpu.so'))) {
      const { stdout } = await exec('readelf', ['-d', join(prebuilt, file)]);
      const needed = [...stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
      assert.ok(needed.includes('libtorch_cpu.so') && needed.includes('libc10.so'), `${file}: ${needed.join(' ')}`);
      const cuda = needed.filter((n) => /cuda|cudart|cublas|nvrtc/.test(n ?? ''));
      assert.deepEqual(cuda, [], `${file} needs ${cuda.join(', ')}`);
    }
    // A LIBTORCH directory holding the wheel's CPU libraries and only the two runtime libraries
    // libtorch_cpu.so itself needs: no libc10_cuda, no libtorch_cuda, no headers.
    const source = wheels.libtorchDir(OLDEST);
    const dir = join(root, 'cpu-libtorch');
    await mkdir(join(dir, 'lib'), { recursive: true });
    for (const lib of ['libc10.so', 'libtorch_cpu.so', 'libgomp.so.1'])
      await place(join(source, 'lib', lib), join(dir, 'lib', lib));
    const runtime = join(source, '..', 'nvidia', 'cu13', 'lib');
    for (const lib of readdirSync(runtime)) await place(join(runtime, lib), join(dir, 'lib', lib));
    await copyFile(join(source, 'version.py'), join(dir, 'version.py'));
    assert.deepEqual(readdirSync(join(dir, 'lib')).sort(), [
      'libc10.so',
      'libcudart.so.13',
      'libcupti.so.13',
      'libgomp.so.1',
      'libtorch_cpu.so',
    ]);
    const env = cleanEnv(bin, { LIBTORCH: dir, BERTGATE_CUDA: '1' });
    const doctor = await bertgate(app, ['doctor'], env);
    assert.match(doctor.stdout, /the CUDA flavour needs libc10_cuda\.so, which .* lacks \(a CPU-only libtorch\)/);
    assert.match(doctor.stdout, /CUDA libraries {3}not loaded: the libtorch at .* has no CUDA support/);
    assert.deepEqual(await classifyDefault(app, env), {
      label: 'python',
      engine: `libbertgate_engine.torch-${minor(OLDEST)}.cpu.so`,
    });
  });

  it('exports a Hugging Face model with the installed package, matching the transformers pipeline', async (t) => {
    const reference = JSON.parse(await readFile(join(FIXTURES, 'turkish50.pipeline.json'), 'utf8')) as {
      texts: string[];
      labels: string[];
      probabilities: number[][];
    };
    const bundle = join(root, 'turkish50');
    const env = cleanEnv(bin, { VIRTUAL_ENV: VENV });
    const started = performance.now();
    const exported = await bertgate(app, ['export', join(FIXTURES, 'turkish50-hf'), bundle], env);
    assert.equal(exported.code, 0, exported.stderr);
    t.diagnostic(`export took ${((performance.now() - started) / 1000).toFixed(1)} s`);
    const script = [
      `import { Classifier } from 'bertgate';`,
      `const clf = await Classifier.load(${JSON.stringify(bundle)}, { topK: 50 });`,
      `const decisions = await clf.classify(${JSON.stringify(reference.texts)});`,
      `console.log(JSON.stringify(decisions.map((d) => Object.fromEntries(d.top.map((e) => [e.label, e.probability])))));`,
      `await clf.close();`,
    ].join('\n');
    await writeFile(join(app, 'probabilities.mjs'), script);
    const { stdout } = await exec(process.execPath, ['probabilities.mjs'], { cwd: app, env });
    const ours = JSON.parse(stdout) as Array<Record<string, number>>;
    ours.forEach((row, i) => {
      const diff = maxAbsDiff(
        reference.labels.map((l) => row[l] as number),
        reference.probabilities[i] as number[],
      );
      assert.ok(diff <= 1e-6, `text ${i} (${JSON.stringify(reference.texts[i])}) differs by ${diff}`);
    });
  });

  it('export names the Python it tried when that Python has no transformers', async () => {
    const python = wheels.torchVenv(NEWEST); // torch alone
    const r = await bertgate(
      app,
      ['export', join(FIXTURES, 'turkish50-hf'), join(root, 'nope')],
      cleanEnv(bin, {
        BERTGATE_PYTHON: python,
      }),
    );
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(
        `^bertgate: ERR_EXPORT: the export tool needs a Python with torch and transformers; ${python.replace(/[.]/g, '\\.')} \\(its torch is the libtorch bertgate found`,
      ),
    );
    assert.equal(existsSync(join(root, 'nope')), false);
  });

  it('builds from source with `bertgate build` when no engine fits', async () => {
    const built = await newApp(root, 'from-source');
    const env = cleanEnv(process.env['PATH'] ?? '', { VIRTUAL_ENV: VENV });
    await npm(built, ['install', '--ignore-scripts', tarball], env);
    const installed = join(built, 'node_modules', 'bertgate');

    // A build that fails half-way (the addon compiles, the engine cannot: a header of this
    // libtorch is broken) leaves nothing behind: the prebuilds still load.
    const broken = join(root, 'broken-headers');
    const real = wheels.libtorchDir(OLDEST);
    await mkdir(join(broken, 'include', 'torch'), { recursive: true });
    for (const entry of readdirSync(join(real, 'include')).filter((e) => e !== 'torch'))
      await symlink(join(real, 'include', entry), join(broken, 'include', entry));
    for (const entry of readdirSync(join(real, 'include', 'torch')).filter((e) => e !== 'cuda.h'))
      await symlink(join(real, 'include', 'torch', entry), join(broken, 'include', 'torch', entry));
    await writeFile(join(broken, 'include', 'torch', 'cuda.h'), '#error broken on purpose\n');
    await symlink(join(real, 'lib'), join(broken, 'lib'));
    await symlink(join(real, 'version.py'), join(broken, 'version.py'));
    await symlink(join(real, '..', 'nvidia'), join(root, 'nvidia')); // beside broken-headers, as in a wheel
    const failed = await bertgate(built, ['build', '--cuda', 'off'], { ...env, LIBTORCH: broken });
    assert.equal(failed.code, 1, failed.stdout);
    assert.match(failed.stderr, /ERR_ENGINE_LOAD: building bertgate failed/);
    assert.equal(existsSync(join(installed, 'build')), false, 'a failed build left build/ behind');
    assert.equal((await classifyDefault(built, env)).label, 'python');

    await rm(join(installed, 'prebuilds'), { recursive: true });
    const missing = await bertgate(built, ['classify', TEXT], env);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /ERR_ADDON_LOAD: the native addon was not found: No native build was found/);
    assert.match(missing.stderr, /npx bertgate build/);

    const log = await bertgate(built, ['build', '--cuda', 'off'], env); // CPU only: quicker
    assert.equal(log.code, 0, log.stderr);
    assert.match(
      log.stdout,
      new RegExp(
        `built .*libbertgate_engine\\.torch-${minor(OLDEST).replace('.', '\\.')}\\.cpu\\.so for torch ${OLDEST}`,
      ),
    );
    const doctor = await bertgate(built, ['doctor'], env);
    assert.match(doctor.stdout, /addon +\S+\/build\/Release\/bertgate\.node \(build\)/);
    assert.deepEqual(await classifyDefault(built, env), {
      label: 'python',
      engine: `libbertgate_engine.torch-${minor(OLDEST)}.cpu.so`,
    });
  });

  it('the default model is reachable from the API: load() without a path, and its directory exported', async () => {
    const script = [
      `import { Classifier, DEFAULT_MODEL } from 'bertgate';`,
      `import { createRequire } from 'node:module';`,
      `const clf = await Classifier.load();`,
      `const d = await clf.classify(${JSON.stringify(TEXT)});`,
      `await clf.close();`,
      `const config = createRequire(import.meta.url).resolve('bertgate/models/default/config.json');`,
      `console.log(JSON.stringify({ label: d.label, dir: clf.info.bundleDir, DEFAULT_MODEL, config }));`,
    ].join('\n');
    await writeFile(join(app, 'default.mjs'), script);
    const { stdout } = await exec(process.execPath, ['default.mjs'], {
      cwd: app,
      env: cleanEnv(bin, { VIRTUAL_ENV: VENV }),
    });
    const out = JSON.parse(stdout) as Record<string, string>;
    const dir = join(app, 'node_modules', 'bertgate', 'models', 'default');
    assert.deepEqual(out, { label: 'python', dir, DEFAULT_MODEL: dir, config: join(dir, 'config.json') });
  });
});
