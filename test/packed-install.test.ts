// Installed as users install it: `npm run prebuilds`, `npm pack`, then the tarball installed
// into a fresh project. With the prebuild: no compiler on PATH, nothing built, the default
// model classifies. Without one: `npm rebuild` compiles from source with cmake-js.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { PREBUILD_FILE, prebuildDir } from '../lib/addon-path.js';
import { PACKAGE_ROOT } from '../lib/binding.js';

const exec = promisify(execFile);
const TEXT = 'Python bindings for the libxml2 XML parsing library.';

/** npm's own entry point, run with this node: the test controls PATH completely. */
function npmCli(): string {
  if (process.env['npm_execpath']?.endsWith('.js')) return process.env['npm_execpath'];
  const which = process.env['PATH']?.split(':').find((dir) => existsSync(join(dir, 'npm')));
  assert.ok(which, 'npm is not on PATH');
  return join(realpathSync(join(which, 'npm')), '..', '..', 'bin', 'npm-cli.js');
}

/**
 * A clean environment: HOME (npm's cache, so no network is needed beyond the registry), the
 * active Python for the libtorch lookup, and the PATH given. Nothing inherited from the npm
 * run that started the tests (npm_config_* would leak into the child npm).
 */
function cleanEnv(path: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { HOME: process.env['HOME'], PATH: path, ...extra };
  for (const key of ['VIRTUAL_ENV', 'BERTGATE_PYTHON', 'LIBTORCH', 'TMPDIR']) {
    if (process.env[key]) env[key] = process.env[key];
  }
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

async function bertgate(app: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const cli = join(app, 'node_modules', 'bertgate', 'dist', 'lib', 'cli', 'main.js');
  const { stdout } = await exec(process.execPath, [cli, ...args], { cwd: app, env, maxBuffer: 16 << 20 });
  return stdout;
}

async function newApp(root: string, name: string): Promise<string> {
  const app = join(root, name);
  await mkdir(app);
  await writeFile(join(app, 'package.json'), JSON.stringify({ name, private: true, type: 'module' }) + '\n');
  return app;
}

describe('packed install', () => {
  let root: string;
  let tarball: string;
  let files: string[];

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'bertgate-pack-'));
    await exec(process.execPath, [join(PACKAGE_ROOT, 'scripts', 'prebuilds.mjs')], {
      cwd: PACKAGE_ROOT,
      maxBuffer: 64 << 20,
    });
    // --ignore-scripts: prepack would recompile dist/ while other test files import it.
    const { stdout } = await exec(
      process.execPath,
      [npmCli(), 'pack', '--json', '--ignore-scripts', '--pack-destination', root],
      { cwd: PACKAGE_ROOT, maxBuffer: 64 << 20 },
    );
    const [packed] = JSON.parse(stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    assert.ok(packed);
    tarball = join(root, packed.filename);
    files = packed.files.map((f) => f.path);
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('packs the prebuild, the default model and the sources, not the tests or the data', () => {
    const platform = `prebuilds/${process.platform}-${process.arch}`;
    for (const file of [
      `${platform}/${PREBUILD_FILE}`,
      `${platform}/libbertgate_engine.so`,
      'models/default/model.pt',
      'models/default/calibration.json',
      'dist/lib/index.js',
      'dist/lib/cli/main.js',
      'scripts/install.mjs',
      'CMakeLists.txt',
      'native/engine/torch_engine.cpp',
    ]) {
      assert.ok(files.includes(file), `${file} is not in the tarball`);
    }
    const unwanted = files.filter((f) => /^(test|dist\/test|data|python|bench|\.fixtures|build)\//.test(f));
    assert.deepEqual(unwanted, []);
  });

  it('installs with no compiler on PATH, builds nothing, and classifies with the default model', async () => {
    const app = await newApp(root, 'with-prebuild');
    // PATH holds node and sh (npm runs scripts through sh) and nothing else: no cc, c++,
    // cmake, make or python.
    const bin = join(root, 'bin');
    await mkdir(bin);
    await symlink(process.execPath, join(bin, 'node'));
    await symlink('/bin/sh', join(bin, 'sh'));
    const env = cleanEnv(bin);
    const log = await npm(app, ['install', tarball], env);
    const installed = join(app, 'node_modules', 'bertgate');
    assert.match(log, /bertgate: using the prebuilt addon .*prebuilds\/linux-x64\/bertgate\.glibc\.node/);
    assert.equal(existsSync(join(installed, 'build')), false, 'something was built');

    const doctor = await bertgate(app, ['doctor'], env);
    assert.ok(doctor.includes(`addon            ${join(prebuildDir(installed), PREBUILD_FILE)} (prebuild)`), doctor);
    const decision = JSON.parse(await bertgate(app, ['classify', TEXT], env));
    assert.equal(decision.accepted, true);
    assert.equal(decision.label, 'python');
  });

  it('builds from source with cmake-js when no prebuild fits', async () => {
    const app = await newApp(root, 'from-source');
    const env = cleanEnv(process.env['PATH'] ?? '', { BERTGATE_CUDA: 'OFF' }); // CPU kernels only: quicker
    await npm(app, ['install', '--ignore-scripts', tarball], env);
    const installed = join(app, 'node_modules', 'bertgate');
    await rm(join(installed, 'prebuilds'), { recursive: true });
    const log = await npm(app, ['rebuild', 'bertgate'], env);
    assert.match(log, /no prebuilt addon fits this platform .*; building from source with cmake-js/);
    assert.ok(existsSync(join(installed, 'build', 'Release', 'bertgate.node')));
    assert.ok(existsSync(join(installed, 'build', 'Release', 'libbertgate_engine.so')));

    const doctor = await bertgate(app, ['doctor'], env);
    assert.match(doctor, /\(build\)\n/);
    assert.match(doctor, /CUDA kernels no/);
    const decision = JSON.parse(await bertgate(app, ['classify', TEXT], env));
    assert.equal(decision.label, 'python');
  });
});
