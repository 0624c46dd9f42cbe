// The libtorch lookup, branch by branch: LIBTORCH, a Python's torch, the system; for each,
// found, missing, and (through `bertgate doctor`, a child process, since the runtime opens once
// per process) found with the wrong version. Interpreters are real: virtualenvs made here,
// without torch, or with a torch package whose headers say another version.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { RuntimeLoadError } from '../lib/errors.js';
import { cudaDecision, findLibtorch, formatSteps, type LibtorchLocation } from '../lib/runtime/libtorch.js';
import { type CliRun, bertgate } from './helpers.js';

const exec = promisify(execFile);
const VENV_PYTHON = join(PACKAGE_ROOT, '.venv', 'bin', 'python');

/** Only the variables the lookup reads, so the machine's own settings cannot leak in. */
function lookupEnv(vars: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: process.env['PATH'], ...vars };
}

/** A libtorch-shaped directory: real lib/, headers claiming `version`. */
async function fakeLibtorch(dir: string, realLib: string, version: string): Promise<void> {
  const [major, minor, patch] = version.split('.');
  await mkdir(join(dir, 'include', 'torch', 'headeronly'), { recursive: true });
  await writeFile(
    join(dir, 'include', 'torch', 'headeronly', 'version.h'),
    `#define TORCH_VERSION_MAJOR ${major}\n#define TORCH_VERSION_MINOR ${minor}\n#define TORCH_VERSION_PATCH ${patch}\n`,
  );
  await symlink(realLib, join(dir, 'lib'));
}

/** A pip-like torch folder <site>/torch whose lib/ links the real libc10.so and libtorch_cpu.so. */
async function pipTorch(site: string, realLib: string): Promise<string> {
  const torch = join(site, 'torch');
  await mkdir(join(torch, 'lib'), { recursive: true });
  for (const name of ['libc10.so', 'libtorch_cpu.so']) await symlink(join(realLib, name), join(torch, 'lib', name));
  return torch;
}

/** An executable shell script. */
async function script(path: string, body: string): Promise<string> {
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
  return path;
}

function doctor(env: NodeJS.ProcessEnv): Promise<CliRun> {
  return bertgate(['doctor'], { exactEnv: env });
}

describe('libtorch lookup', () => {
  let root: string;
  let real: LibtorchLocation;
  let noTorchPython: string;
  let oldTorchPython: string;

  before(async () => {
    const found = await findLibtorch(lookupEnv({ BERTGATE_PYTHON: VENV_PYTHON }));
    assert.ok(found.location, formatSteps(found.steps));
    real = found.location;
    root = await mkdtemp(join(tmpdir(), 'bertgate-lookup-'));
    // Two real virtualenvs of the project's Python, without its site-packages.
    for (const name of ['no-torch', 'old-torch']) {
      await exec(VENV_PYTHON, ['-m', 'venv', '--without-pip', join(root, name)]);
    }
    noTorchPython = join(root, 'no-torch', 'bin', 'python');
    oldTorchPython = join(root, 'old-torch', 'bin', 'python');
    const { stdout } = await exec(oldTorchPython, ['-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']);
    const torch = join(stdout.trim(), 'torch');
    await fakeLibtorch(torch, join(real.dir, 'lib'), '2.10.0');
    await writeFile(join(torch, '__init__.py'), '');
  });
  after(() => rm(root, { recursive: true, force: true }));

  describe('LIBTORCH', () => {
    it('found: used, and nothing else is tried', async () => {
      const { location, steps } = await findLibtorch(lookupEnv({ LIBTORCH: real.dir, BERTGATE_PYTHON: '/nowhere' }));
      assert.equal(location?.source, 'LIBTORCH');
      assert.equal(location?.dir, real.dir);
      assert.equal(location?.version, '2.11.0');
      assert.deepEqual(
        steps.map((s) => [s.source, s.outcome]),
        [['LIBTORCH', 'found']],
      );
    });

    it('missing: not found, and nothing else is tried', async () => {
      const { location, steps } = await findLibtorch(lookupEnv({ LIBTORCH: join(root, 'absent') }));
      assert.equal(location, null);
      assert.deepEqual(steps, [
        {
          source: 'LIBTORCH',
          candidate: join(root, 'absent'),
          outcome: 'not-found',
          detail: `${join(root, 'absent')} does not exist`,
        },
      ]);
    });

    it('a directory that is not libtorch: unusable, naming the missing library', async () => {
      await mkdir(join(root, 'empty', 'lib'), { recursive: true });
      const { location, steps } = await findLibtorch(lookupEnv({ LIBTORCH: join(root, 'empty') }));
      assert.equal(location, null);
      assert.equal(steps[0]?.outcome, 'unusable');
      assert.equal(steps[0]?.detail, `${join(root, 'empty')}: no lib/libc10.so`);
    });

    it('headers that name another release than the libraries: unusable, naming both (the libraries decide)', async () => {
      const dir = join(root, 'libtorch-2.10');
      await fakeLibtorch(dir, join(real.dir, 'lib'), '2.10.0');
      const { location, steps } = await findLibtorch(lookupEnv({ LIBTORCH: dir }));
      assert.equal(location, null);
      assert.deepEqual(steps, [
        {
          source: 'LIBTORCH',
          candidate: dir,
          outcome: 'unusable',
          detail:
            `${dir}: its include/torch/headeronly/version.h says torch 2.10.0, but lib/libtorch_cpu.so is torch 2.11.0: ` +
            'files of two releases are mixed there; reinstall torch',
        },
      ]);
    });

    it('a version.py that lies is caught the same way, before anything is loaded', async () => {
      const dir = join(root, 'lying-version-py');
      await mkdir(dir);
      await symlink(join(real.dir, 'lib'), join(dir, 'lib'));
      await writeFile(join(dir, 'version.py'), "__version__ = '2.14.1+cu130'\n");
      const r = await doctor({ ...process.env, LIBTORCH: dir });
      assert.equal(r.code, 1);
      assert.match(r.stdout + r.stderr, /version\.py says torch 2\.14\.1, but lib\/libtorch_cpu\.so is torch 2\.11\.0/);
    });

    it('no version file at all: the version is read from the library', async () => {
      const dir = join(root, 'libraries-only');
      await mkdir(dir);
      await symlink(join(real.dir, 'lib'), join(dir, 'lib'));
      const { location } = await findLibtorch(lookupEnv({ LIBTORCH: dir }));
      assert.equal(location?.version, '2.11.0');
    });

    it('a link to libtorch is that libtorch: one name for one copy', async () => {
      const link = join(root, 'linked-libtorch');
      await symlink(real.dir, link);
      const { location } = await findLibtorch(lookupEnv({ LIBTORCH: link }));
      assert.equal(location?.dir, real.dir);
      assert.deepEqual(location?.preload, real.preload);
    });

    it('a loop of links, or a library that is a directory: said so', async () => {
      const loop = join(root, 'loop');
      await symlink(loop, loop);
      const looped = await findLibtorch(lookupEnv({ LIBTORCH: loop }));
      assert.equal(looped.steps[0]?.detail, `${loop} is a loop of symbolic links`);
      const odd = join(root, 'odd');
      await mkdir(join(odd, 'lib', 'libc10.so'), { recursive: true });
      const found = await findLibtorch(lookupEnv({ LIBTORCH: odd }));
      assert.equal(found.steps[0]?.detail, `${odd}: lib/libc10.so is not a regular file`);
    });

    it('an empty libc10.so: unusable, said so (not a libtorch of the pre-C++11 ABI)', async () => {
      const dir = join(root, 'empty-libc10');
      await mkdir(join(dir, 'lib'), { recursive: true });
      await writeFile(join(dir, 'lib', 'libc10.so'), '');
      await symlink(join(real.dir, 'lib', 'libtorch_cpu.so'), join(dir, 'lib', 'libtorch_cpu.so'));
      const { location, steps } = await findLibtorch(lookupEnv({ LIBTORCH: dir }));
      assert.equal(location, null);
      assert.deepEqual(
        steps.map((s) => [s.outcome, s.detail]),
        [['unusable', `${dir}: lib/libc10.so is not an ELF64 little-endian shared library (0 bytes)`]],
      );
    });

    it("a pip torch's libc10.so that is not the one its RECORD lists: unusable, a mix of two releases", async () => {
      // libc10.so names no release of its own: any other file stands for another release's.
      const distInfo = (await readdir(join(real.dir, '..'))).find((n) => /^torch-.*\.dist-info$/.test(n)) as string;
      const record = await readFile(join(real.dir, '..', distInfo, 'RECORD'));
      const torchIn = async (name: string, libc10: Buffer): Promise<string> => {
        const site = join(root, name);
        const torch = await pipTorch(site, join(real.dir, 'lib'));
        await rm(join(torch, 'lib', 'libc10.so'));
        await writeFile(join(torch, 'lib', 'libc10.so'), libc10);
        await writeFile(join(torch, 'version.py'), "__version__ = '2.11.0+cu130'\n");
        await mkdir(join(site, distInfo));
        await writeFile(join(site, distInfo, 'RECORD'), record);
        return torch;
      };
      const libc10 = await readFile(join(real.dir, 'lib', 'libc10.so'));
      const same = await torchIn('record-same', libc10);
      assert.equal((await findLibtorch(lookupEnv({ LIBTORCH: same }))).location?.dir, same);
      const other = Buffer.from(libc10);
      other.writeUInt8(other.readUInt8(other.length - 1) ^ 0xff, other.length - 1);
      const mixed = await torchIn('record-mixed', other);
      const { location, steps } = await findLibtorch(lookupEnv({ LIBTORCH: mixed }));
      assert.equal(location, null);
      assert.deepEqual(
        steps.map((s) => [s.outcome, s.detail]),
        [
          [
            'unusable',
            `${mixed}: lib/libc10.so is not the file torch 2.11.0 installed (its SHA-256 differs from the one ` +
              `${join(root, 'record-mixed', distInfo, 'RECORD')} lists): files of two releases are mixed there; reinstall torch`,
          ],
        ],
      );
    });

    it('an nvidia folder that is a file, or a lib folder in it that is: unusable, naming it', async () => {
      const flat = await pipTorch(join(root, 'nvidia-file'), join(real.dir, 'lib'));
      await writeFile(join(root, 'nvidia-file', 'nvidia'), '');
      const a = await findLibtorch(lookupEnv({ LIBTORCH: flat }));
      assert.equal(a.location, null);
      assert.deepEqual(
        a.steps.map((s) => [s.outcome, s.detail]),
        [['unusable', `${flat}: ${join(root, 'nvidia-file', 'nvidia')} is not a directory`]],
      );
      const nested = await pipTorch(join(root, 'nvidia-lib-file'), join(real.dir, 'lib'));
      const lib = join(root, 'nvidia-lib-file', 'nvidia', 'cuda_runtime', 'lib');
      await mkdir(join(lib, '..'), { recursive: true });
      await writeFile(lib, '');
      const b = await findLibtorch(lookupEnv({ LIBTORCH: nested }));
      assert.deepEqual(
        b.steps.map((s) => [s.outcome, s.detail]),
        [['unusable', `${nested}: ${lib} is not a directory`]],
      );
      const r = await doctor({ ...process.env, LIBTORCH: flat });
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        new RegExp(
          `PROBLEM: libtorch was not found\\. .*\n {2}1\\. \\[LIBTORCH\\] unusable: .*/nvidia is not a directory\n`,
        ),
      );
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    });

    it('a version.h or version.py that is a directory: unusable, naming it', async () => {
      const header = join(root, 'version-h-dir');
      await mkdir(join(header, 'include', 'torch', 'headeronly', 'version.h'), { recursive: true });
      await symlink(join(real.dir, 'lib'), join(header, 'lib'));
      const py = join(root, 'version-py-dir');
      await mkdir(join(py, 'version.py'), { recursive: true });
      await symlink(join(real.dir, 'lib'), join(py, 'lib'));
      const details = [];
      for (const dir of [header, py]) details.push((await findLibtorch(lookupEnv({ LIBTORCH: dir }))).steps[0]?.detail);
      assert.deepEqual(details, [
        `${header}: include/torch/headeronly/version.h is not a regular file`,
        `${py}: version.py is not a regular file`,
      ]);
    });
  });

  describe("a Python's torch", () => {
    it('found through BERTGATE_PYTHON', async () => {
      const { location, steps } = await findLibtorch(lookupEnv({ BERTGATE_PYTHON: VENV_PYTHON }));
      assert.equal(location?.source, 'python');
      assert.equal(location?.dir, real.dir);
      assert.deepEqual(
        steps.map((s) => [s.source, s.candidate, s.outcome]),
        [['python', VENV_PYTHON, 'found']],
      );
    });

    it('found through the active virtualenv before python3 on PATH', async () => {
      const { location, steps } = await findLibtorch(lookupEnv({ VIRTUAL_ENV: join(PACKAGE_ROOT, '.venv') }));
      assert.equal(location?.source, 'python');
      assert.equal(steps[0]?.candidate, VENV_PYTHON);
    });

    it('a Python without torch: not found, and with BERTGATE_PYTHON nothing else is tried', async () => {
      const { location, steps } = await findLibtorch(lookupEnv({ BERTGATE_PYTHON: noTorchPython }));
      assert.equal(location, null);
      assert.deepEqual(steps, [
        {
          source: 'python',
          candidate: noTorchPython,
          outcome: 'not-found',
          detail: `${noTorchPython} has no torch package`,
        },
      ]);
    });

    it('a Python that does not exist: not found, said so', async () => {
      const missing = join(root, 'no-such-python');
      const { location, steps } = await findLibtorch(lookupEnv({ BERTGATE_PYTHON: missing }));
      assert.equal(location, null);
      assert.equal(steps[0]?.detail, `${missing}: not found`);
    });

    it('a Python that does not answer: stopped, and the step says it timed out, naming the command and the time', async () => {
      const silent = await script(join(root, 'silent-python'), 'exec sleep 60');
      const { location, steps } = await findLibtorch(lookupEnv({ BERTGATE_PYTHON: silent }), [], 300);
      assert.equal(location, null);
      assert.equal(steps.length, 1);
      assert.ok(
        steps[0]?.detail.startsWith(
          `${silent} did not answer within 0.3 s and was stopped (it was asked: ${silent} -c "import importlib.util`,
        ),
        steps[0]?.detail,
      );
    });

    it('doctor asks the Python once, even when the lookup fails', async () => {
      const asked = join(root, 'asked');
      const counting = await script(join(root, 'counting-python'), `echo x >> ${asked}\necho ${join(root, 'empty')}`);
      await mkdir(join(root, 'empty', 'lib'), { recursive: true });
      const r = await doctor({ ...process.env, BERTGATE_PYTHON: counting });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /PROBLEM: libtorch was not found/);
      assert.equal(await readFile(asked, 'utf8'), 'x\n');
    });

    it('a virtualenv without torch falls through to python3, then the system', async () => {
      const { steps } = await findLibtorch(
        lookupEnv({ VIRTUAL_ENV: join(root, 'no-torch'), PATH: join(root, 'no-torch', 'bin') }),
        [join(root, 'no-system')],
      );
      assert.deepEqual(
        steps.map((s) => [s.source, s.candidate, s.outcome]),
        [
          ['python', noTorchPython, 'not-found'],
          ['python', 'python3', 'not-found'],
          ['system', join(root, 'no-system'), 'not-found'],
        ],
      );
    });

    it("a Python's torch whose headers and libraries disagree: unusable, naming both", async () => {
      const r = await doctor({ ...process.env, BERTGATE_PYTHON: oldTorchPython });
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        /PROBLEM: libtorch was not found\. Looked at, in order:\n {2}1\. \[python\] unusable: .*: its include\/torch\/headeronly\/version\.h says torch 2\.10\.0, but lib\/libtorch_cpu\.so is torch 2\.11\.0/,
      );
    });
  });

  describe('BERTGATE_CUDA', () => {
    it('takes "1", "0" or nothing; anything else is an error, not ignored', () => {
      assert.equal(cudaDecision(real, { BERTGATE_CUDA: '1' }).load, true);
      assert.equal(cudaDecision(real, { BERTGATE_CUDA: '0' }).load, false);
      for (const bad of ['true', 'ON', ' 1', '2']) {
        assert.throws(
          () => cudaDecision(real, { BERTGATE_CUDA: bad }),
          (e: unknown) =>
            e instanceof RuntimeLoadError &&
            e.code === 'ERR_LIBTORCH_LOAD' &&
            e.message.startsWith(`BERTGATE_CUDA is ${JSON.stringify(bad)}; expected "1"`),
        );
      }
    });
  });

  describe('the system', () => {
    it('found in the first system directory that has libtorch', async () => {
      const system = join(root, 'usr-local');
      await fakeLibtorch(system, join(real.dir, 'lib'), '2.11.0');
      const { location, steps } = await findLibtorch(lookupEnv({ PATH: '/nonexistent' }), [join(root, 'opt'), system]);
      assert.equal(location?.source, 'system');
      assert.equal(location?.dir, system);
      assert.deepEqual(
        steps.map((s) => [s.source, s.outcome]),
        [
          ['python', 'not-found'],
          ['system', 'not-found'],
          ['system', 'found'],
        ],
      );
    });

    it('missing everywhere: null, with every step for the error message', async () => {
      const { location, steps } = await findLibtorch(lookupEnv({ PATH: '/nonexistent' }), [join(root, 'none')]);
      assert.equal(location, null);
      assert.equal(
        formatSteps(steps),
        `  1. [python] not-found: python3: not found\n  2. [system] not-found: ${join(root, 'none')}/lib has no libtorch_cpu.so`,
      );
    });

    it('missing everywhere: doctor names every place tried and what to do', async () => {
      const r = await doctor({ ...process.env, BERTGATE_PYTHON: noTorchPython });
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        /PROBLEM: libtorch was not found\. Looked at, in order:\n {2}1\. \[python\] not-found: .* has no torch package\n/,
      );
      assert.match(
        r.stderr,
        /Install torch \(bertgate has engines for 2\.11 \(CUDA\)\) into the active Python, or set LIBTORCH to a libtorch directory\./,
      );
    });
  });
});
