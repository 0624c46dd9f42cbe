// The engine matrix: every prebuilt engine loads on its own torch and reproduces the parity
// fixtures (scripts/engine-matrix.mjs); and every way the choice can go wrong is a typed
// error naming what was found and what would fit, in a process that stays alive: no engine
// for the torch found, the wrong string ABI, a libtorch directory missing a library, a
// truncated or corrupted engine, an engines.json that lies, two libtorch versions in one
// process (one thread, or two).

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { prebuildDir } from '../lib/runtime/addon-path.js';
import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import {
  ENGINE_MANIFEST,
  MKL_SHIM,
  chooseEngine,
  noEngineError,
  readEngines,
  verifyEngine,
  type EngineEntry,
  type LibtorchTraits,
} from '../lib/runtime/engines.js';
import { RuntimeLoadError } from '../lib/errors.js';
import { CLI, bundle } from './helpers.js';

const exec = promisify(execFile);

interface MatrixResult {
  version: string;
  flavour: string;
  engine?: string;
  torch?: string;
  worst?: number;
  rows?: number;
  worstInt8?: number;
  int8Warnings?: string[];
  worstLegacy?: number;
  legacyTolerance?: number;
  loadWarnings?: string[];
  againWarnings?: string[];
  stderr?: string;
  stderrAsked?: string;
  error?: string;
}
interface Scripts {
  MATRIX: string[];
  libtorchDir(version: string): string;
  checkMatrix(): Promise<MatrixResult[]>;
  TOLERANCE: number;
  INT8_TOLERANCE: number;
}
const load = async (name: string): Promise<Scripts> =>
  (await import(pathToFileURL(join(PACKAGE_ROOT, 'scripts', name)).href)) as Scripts;
const wheels = await load('torch-wheels.mjs');
const matrix = await load('engine-matrix.mjs');
const OLDEST = wheels.MATRIX[0] as string;
const NEWEST = wheels.MATRIX[wheels.MATRIX.length - 1] as string;
const minor = (version: string): string => version.split('.').slice(0, 2).join('.');
const minorOf = (version: string): number => Number(version.split('.')[1]);
const INDEX = pathToFileURL(join(PACKAGE_ROOT, 'dist', 'lib', 'index.js')).href;
const DEFAULT = join(PACKAGE_ROOT, 'models', 'default');

/**
 * Runs `body` (an async module snippet with Classifier and `report(value)` in scope) in a fresh
 * node with only `env`; returns what it reported and how the process ended.
 */
async function child(env: Record<string, string>, body: string): Promise<{ out: unknown[]; code: number }> {
  const code = [
    `import { Classifier } from ${JSON.stringify(INDEX)};`,
    `const out = [];`,
    `const report = (v) => out.push(v);`,
    `const attempt = (p) => p.then((v) => ({ ok: v }), (e) => ({ code: e.code, name: e.name, message: e.message }));`,
    body,
    `console.log(JSON.stringify(out));`,
  ].join('\n');
  try {
    const { stdout } = await exec(process.execPath, ['--input-type=module', '-e', code], {
      env: { PATH: process.env['PATH'], HOME: process.env['HOME'], ...env },
    });
    return { out: JSON.parse(stdout.trim().split('\n').pop() ?? '[]') as unknown[], code: 0 };
  } catch (error) {
    const e = error as { code: number; stderr: string };
    assert.fail(`the child exited with ${e.code}: ${e.stderr}`);
  }
}

const loadDefault = `report(await attempt(Classifier.load(${JSON.stringify(DEFAULT)}).then(async (c) => { const d = await c.classify('Python bindings for libxml2'); await c.close(); return d.label; })));`;

/**
 * A child body that loads the default model, then has a worker thread load it too with LIBTORCH
 * set to `libtorch`, and reports what the worker's load gave; `thenInMain` runs in the main
 * thread after the worker ends, before the main classifier closes.
 */
/** `workerEnv`: the worker's env, as JS source; `withLibtorch(dir)` for the usual one. */
const workerLoadBody = (workerEnv: string, thenInMain = ''): string => `
  const { Worker } = await import('node:worker_threads');
  const clf = await Classifier.load(${JSON.stringify(DEFAULT)});
  const worker = new Worker(\`
    import { Classifier } from ${JSON.stringify(INDEX)};
    import { parentPort } from 'node:worker_threads';
    Classifier.load(${JSON.stringify(DEFAULT)}).then(
      () => parentPort.postMessage({ ok: true }),
      (e) => parentPort.postMessage({ code: e.code, message: e.message }));
  \`, { eval: true, env: ${workerEnv} });
  report(await new Promise((resolve) => worker.once('message', resolve)));
  await worker.terminate();
  ${thenInMain}
  await clf.close();
`;

const withLibtorch = (dir: string): string => `{ ...process.env, LIBTORCH: ${JSON.stringify(dir)} }`;

describe('engine matrix', () => {
  it('every engine loads on its own torch and matches eager within 1e-5', async (t) => {
    const results = await matrix.checkMatrix();
    assert.equal(results.length, wheels.MATRIX.length * 2);
    for (const r of results) {
      assert.equal(r.error, undefined, `torch ${r.version} ${r.flavour}: ${r.error}`);
      assert.equal(r.engine, `libbertgate_engine.torch-${minor(r.version)}.${r.flavour}.so`);
      assert.equal(r.torch, r.version);
      assert.ok((r.worst as number) <= matrix.TOLERANCE, `torch ${r.version} ${r.flavour}: ${r.worst}`);
      assert.ok(
        (r.worstInt8 as number) <= matrix.INT8_TOLERANCE,
        `torch ${r.version} ${r.flavour}: int8 ${r.worstInt8}`,
      );
      assert.ok(
        (r.worstLegacy as number) <= (r.legacyTolerance as number),
        `torch ${r.version} ${r.flavour}: torch.ao int8 ${r.worstLegacy}`,
      );
      // Today's int8 bundles run the engine's own operator: no deprecated op, no warning at all.
      assert.deepEqual(r.int8Warnings, [], `torch ${r.version} ${r.flavour}`);
      // Nothing of libtorch's reaches a server's stderr, the legacy int8 bundle's deprecation
      // notice included: from torch 2.13 on the engine must have collected it instead.
      assert.equal(r.stderr, '', `torch ${r.version} ${r.flavour} printed: ${r.stderr}`);
      const deprecation = (r.loadWarnings as string[]).some((w) => /deprecated/i.test(w));
      if (minorOf(r.version) >= 13) assert.ok(deprecation, `torch ${r.version}: ${JSON.stringify(r.loadWarnings)}`);
      // Loaded again with BERTGATE_TORCH_WARNINGS=stderr set since: the switch is read per load
      // (not once per process), and the warn-once deprecation is listed by the second load too.
      const again = r.againWarnings as string[];
      const asked = r.stderrAsked as string;
      if (minorOf(r.version) >= 13) {
        assert.ok(
          again.some((w) => /deprecated/i.test(w)),
          `torch ${r.version}: ${JSON.stringify(again)}`,
        );
        assert.match(asked, /deprecated/i, `torch ${r.version} ${r.flavour}: stderr with the switch on: ${asked}`);
      } else {
        assert.deepEqual(again, [], `torch ${r.version}`);
      }
      t.diagnostic(
        `torch ${r.version} ${r.flavour}: max |Δ| ${(r.worst as number).toExponential(1)} over ${r.rows} texts, ` +
          `int8 ${(r.worstInt8 as number).toExponential(1)}, torch.ao int8 ${(r.worstLegacy as number).toExponential(1)}, ` +
          `${(r.loadWarnings as string[]).length} warning(s) collected`,
      );
    }
  });
});

describe('BERTGATE_MKL_ANY_CPU=1', () => {
  // One process per setting: libtorch binds MKL's vendor check once, as it loads.
  const child = async (env: Record<string, string>) => {
    const code = `
      const { Classifier } = await import(${JSON.stringify(INDEX)});
      const { loadAddon } = await import(${JSON.stringify(pathToFileURL(join(PACKAGE_ROOT, 'dist', 'lib', 'runtime', 'open.js')).href)});
      const clf = await Classifier.load(${JSON.stringify(DEFAULT)});
      const texts = Array.from({ length: 32 }, (_, i) => 'a library ' + i + ' for parsing configuration files over the network');
      const logits = (await clf.logits(texts)).map((row) => Array.from(row));
      const build = loadAddon().native.buildInfo();
      await clf.close();
      process.env.BERTGATE_MKL_ANY_CPU = process.env.BERTGATE_MKL_ANY_CPU === '1' ? '' : '1';
      const flipped = await Classifier.load(${JSON.stringify(DEFAULT)}).then(() => null, (e) => ({ code: e.code, message: e.message }));
      console.log(JSON.stringify({ logits, mkl: build.mklAnyCpu, engine: build.engineLibrary, flipped }));
    `;
    const { stdout } = await exec(process.execPath, ['--input-type=module', '-e', code], {
      env: { ...process.env, ...env },
    });
    return JSON.parse(stdout.trim().split('\n').pop() as string) as {
      logits: number[][];
      mkl: { file: string; calls: number } | null;
      engine: string;
      flipped: { code: string; message: string } | null;
    };
  };

  it("loads the MKL shim before libtorch, MKL asks it, the logits stay the model's, and the setting is fixed for the process", async () => {
    const [plain, shimmed] = [await child({ BERTGATE_MKL_ANY_CPU: '' }), await child({ BERTGATE_MKL_ANY_CPU: '1' })];
    assert.equal(plain.mkl, null);
    assert.ok(shimmed.mkl, 'no shim loaded');
    assert.equal(shimmed.mkl.file, join(dirname(shimmed.engine), MKL_SHIM));
    // Counted by the shim itself: libtorch's MKL bound its vendor check to it, not to its own copy.
    assert.ok(shimmed.mkl.calls > 0, `MKL asked the shim ${shimmed.mkl.calls} times`);
    // Other kernels, the same model: within float rounding, the same top labels.
    let worst = 0;
    shimmed.logits.forEach((row, i) =>
      row.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - (plain.logits[i]?.[j] as number))))),
    );
    assert.ok(worst <= 1e-4, `max |Δ logit| ${worst}`);
    // Changed after libtorch loaded, either way: refused, naming the variable.
    for (const r of [plain, shimmed]) {
      assert.equal(r.flipped?.code, 'ERR_LIBTORCH_CONFLICT', JSON.stringify(r.flipped));
      assert.match(r.flipped?.message ?? '', /BERTGATE_MKL_ANY_CPU=1, which is read once, before libtorch loads/);
    }
  });
});

describe('libtorch warnings under bertgate serve', () => {
  it(`a torch.ao int8 bundle on torch ${NEWEST}: nothing on stderr, one line saying how many, GET /stats lists them`, async () => {
    const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--model', bundle('labels50-int8-legacy')], {
      env: {
        PATH: process.env['PATH'],
        HOME: process.env['HOME'],
        LIBTORCH: wheels.libtorchDir(NEWEST),
        BERTGATE_ENGINE: 'cpu',
        BERTGATE_ADDON: join(prebuildDir(PACKAGE_ROOT), 'bertgate.glibc.node'),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        // The count's line comes right after "listening on"; a serve that never prints it fails here.
        const late = setTimeout(() => reject(new Error(`no warning line in 60 s: ${stdout}${stderr}`)), 60_000);
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          const match = /listening on (http:\/\/\S+)\n[^]*libtorch warned .*\n/.exec(stdout);
          if (match) {
            clearTimeout(late);
            resolve(match[1] as string);
          }
        });
        child.once('exit', (code) => {
          clearTimeout(late);
          reject(new Error(`serve exited with ${code}: ${stdout}${stderr}`));
        });
      });
      const stats = (await (await fetch(`${url}/stats`)).json()) as { torchWarnings: string[] };
      assert.ok(
        stats.torchWarnings.some((w) => /deprecated/i.test(w)),
        JSON.stringify(stats.torchWarnings),
      );
      assert.match(
        stdout,
        new RegExp(`libtorch warned ${stats.torchWarnings.length} time\\(s\\) while loading; GET /stats lists them`),
      );
      assert.doesNotMatch(stdout, /deprecated/i, 'the log gets the count, not the messages');
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
    }
    assert.equal(stderr, '');
  });
});

describe('engine choice, read from the files alone', () => {
  const dir = prebuildDir(PACKAGE_ROOT);
  const torch: LibtorchTraits = {
    dir: wheels.libtorchDir(OLDEST),
    version: OLDEST,
    cxx11Abi: true,
    c10Cuda: join(wheels.libtorchDir(OLDEST), 'lib', 'libc10_cuda.so'),
    cudaRuntime: 'libcudart.so.13',
  };

  it('a torch of the same minor built for another CUDA major: the CUDA engine does not fit, the CPU one does', () => {
    const entries = readEngines(dir);
    const same = chooseEngine(entries, dir, torch, true, {});
    assert.equal(same.chosen?.flavour, 'cuda');
    const cu12 = chooseEngine(entries, dir, { ...torch, cudaRuntime: 'libcudart.so.12' }, true, {});
    assert.equal(cu12.chosen?.flavour, 'cpu');
    assert.equal(
      cu12.candidates.find((c) => c.torch === minor(OLDEST) && c.flavour === 'cuda')?.problem,
      'built against the CUDA runtime libcudart.so.13; this libtorch uses libcudart.so.12',
    );
  });

  it('BERTGATE_ENGINE=cuda on a CPU-only libtorch of a supported version: says the flavour, not the version', () => {
    const cpuOnly = { ...torch, c10Cuda: null, cudaRuntime: null };
    const env = { BERTGATE_ENGINE: 'cuda' };
    const choice = chooseEngine(readEngines(dir), dir, cpuOnly, false, env);
    assert.equal(choice.chosen, undefined);
    const error = noEngineError(choice, cpuOnly, 'LIBTORCH', env);
    assert.equal(error.code, 'ERR_ENGINE_LOAD');
    assert.match(
      error.message,
      new RegExp(`^BERTGATE_ENGINE=cuda asks for the CUDA engine, and none of those in .* for torch ${minor(OLDEST)}`),
    );
    assert.match(error.message, /lacks \(a CPU-only libtorch\)/);
    assert.match(error.message, /Unset BERTGATE_ENGINE to take the engine that fits, or use a CUDA build of torch\.$/);
  });

  it('an engine path that is not a file (a FIFO, a directory): refused at once, never read', async () => {
    const root = await mkdtemp(join(tmpdir(), 'bertgate-fifo-'));
    try {
      const fifo = join(root, 'libbertgate_engine.torch-2.11.cpu.so');
      assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
      const entry = readEngines(dir)[0] as EngineEntry;
      await assert.rejects(
        verifyEngine({ ...entry, path: fifo, problem: undefined }),
        (e: unknown) => e instanceof RuntimeLoadError && e.message === `${fifo} (listed in engines.json) is not a file`,
      );
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('engine choice: faults', () => {
  let root: string;
  let prebuilt: string; // a private copy of prebuilds/linux-x64
  let entries: EngineEntry[];
  const addonIn = (dir: string): Record<string, string> => ({ BERTGATE_ADDON: join(dir, 'bertgate.glibc.node') });

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'bertgate-engines-'));
    prebuilt = join(root, 'prebuilt');
    await cp(prebuildDir(PACKAGE_ROOT), prebuilt, { recursive: true });
    entries = (JSON.parse(await readFile(join(prebuilt, ENGINE_MANIFEST), 'utf8')) as { engines: EngineEntry[] })
      .engines;
  });
  after(() => rm(root, { recursive: true, force: true }));

  /** A copy of the prebuild whose engines.json and files `change` may alter. */
  async function variant(name: string, change: (dir: string, list: EngineEntry[]) => Promise<EngineEntry[]>) {
    const dir = join(root, name);
    await cp(prebuilt, dir, { recursive: true });
    const list = await change(dir, structuredClone(entries));
    await writeFile(join(dir, ENGINE_MANIFEST), JSON.stringify({ version: 1, engines: list }));
    return dir;
  }

  it('a torch no engine fits: ERR_LIBTORCH_VERSION naming the torch found, the supported ones and the build command', async () => {
    // The matrix without its oldest minor, as a package would be for a torch it predates.
    const dir = await variant('no-oldest', async (_d, list) => list.filter((e) => e.torch !== minor(OLDEST)));
    const torch = wheels.libtorchDir(OLDEST);
    const { out } = await child({ ...addonIn(dir), LIBTORCH: torch }, loadDefault);
    const [r] = out as Array<{ code: string; message: string }>;
    assert.equal(r?.code, 'ERR_LIBTORCH_VERSION');
    const support = wheels.MATRIX.slice(1)
      .map((v) => `${minor(v)} (CUDA, CPU)`)
      .join(', ');
    const next = wheels.MATRIX[1] as string;
    assert.ok(
      r.message.startsWith(
        `no bertgate engine fits the libtorch found at ${torch} (via LIBTORCH), which is ${OLDEST}. ` +
          `The engines in ${join(dir, ENGINE_MANIFEST)} are for torch ${support}:\n` +
          `  libbertgate_engine.torch-${minor(next)}.cuda.so: built for torch ${minor(next)}; this libtorch is ${OLDEST}\n`,
      ),
      r.message,
    );
    assert.match(r.message, /or build an engine for this libtorch with: npx bertgate build$/);
  });

  it('a version file that names another release than the libraries: refused before anything loads', async () => {
    // 2.12's libraries under a version.py saying 2.14: loading the 2.14 engine on them crashed
    // the process one time in three. The library's own version string decides.
    const fake = join(root, 'mixed-release');
    const source = wheels.libtorchDir(wheels.MATRIX[1] as string);
    await mkdir(fake);
    await symlink(join(source, 'lib'), join(fake, 'lib'));
    await writeFile(join(fake, 'version.py'), `__version__ = '${wheels.MATRIX[3]}'\n`);
    const { out } = await child({ ...addonIn(prebuilt), LIBTORCH: fake }, `${loadDefault}\nreport(1 + 1);`);
    const [r, alive] = out as [{ code: string; message: string }, number];
    assert.equal(r.code, 'ERR_LIBTORCH_NOT_FOUND');
    assert.ok(
      r.message.includes(
        `${fake}: its version.py says torch ${wheels.MATRIX[3]}, but lib/libtorch_cpu.so is torch ${wheels.MATRIX[1]}`,
      ),
      r.message,
    );
    assert.equal(alive, 2);
  });

  it('a libtorch with the pre-C++11 string ABI: refused before loading, naming the ABI', async () => {
    const fake = join(root, 'libtorch-old-abi');
    await mkdir(join(fake, 'lib'), { recursive: true });
    await writeFile(join(fake, 'version.py'), `__version__ = '${OLDEST}'\n`);
    // The real libtorch_cpu.so (its version is read from it), and for libc10.so a library
    // without a single __cxx11 symbol (libgomp, which is C), as a pre-C++11-ABI build has.
    await symlink(join(wheels.libtorchDir(OLDEST), 'lib', 'libtorch_cpu.so'), join(fake, 'lib', 'libtorch_cpu.so'));
    await symlink(join(wheels.libtorchDir(OLDEST), 'lib', 'libgomp.so.1'), join(fake, 'lib', 'libc10.so'));
    const { out } = await child({ ...addonIn(prebuilt), LIBTORCH: fake }, loadDefault);
    const [r] = out as Array<{ code: string; message: string }>;
    assert.equal(r?.code, 'ERR_LIBTORCH_VERSION');
    assert.match(
      r.message,
      new RegExp(`which is ${OLDEST.replace(/\./g, '\\.')} with the pre-C\\+\\+11 string ABI\\.`),
    );
    assert.match(r.message, /built with the C\+\+11 string ABI on; this libtorch has it off/);
  });

  it('a LIBTORCH directory missing a runtime library: ERR_LIBTORCH_LOAD naming it', async () => {
    const dir = join(root, 'no-cudart');
    await mkdir(join(dir, 'lib'), { recursive: true });
    const source = wheels.libtorchDir(OLDEST);
    for (const lib of ['libc10.so', 'libtorch_cpu.so', 'libgomp.so.1'])
      await symlink(join(source, 'lib', lib), join(dir, 'lib', lib));
    await writeFile(join(dir, 'version.py'), `__version__ = '${OLDEST}'\n`);
    const { out } = await child({ ...addonIn(prebuilt), LIBTORCH: dir }, `${loadDefault}\n${loadDefault}`);
    const [first, second] = out as Array<{ code: string; message: string }>;
    assert.equal(first?.code, 'ERR_LIBTORCH_LOAD');
    assert.match(
      first.message,
      /^opening libtorch from .* failed: .*libcu(dart|pti)\.so\.13: cannot open shared object file/,
    );
    assert.match(first.message, /nvidia-cuda-runtime and nvidia-cuda-cupti wheels/);
    assert.deepEqual(second, first, 'a second try says the same, and the process is still there');
  });

  it('a truncated engine: ERR_ENGINE_LOAD before anything loads it', async () => {
    const file = `libbertgate_engine.torch-${minor(OLDEST)}.cpu.so`;
    const dir = await variant('truncated', async (d, list) => {
      await truncate(join(d, file), 4096);
      return list;
    });
    const { out } = await child({ ...addonIn(dir), VIRTUAL_ENV: join(PACKAGE_ROOT, '.venv') }, loadDefault);
    const [r] = out as Array<{ code: string; message: string }>;
    assert.equal(r?.code, 'ERR_ENGINE_LOAD');
    assert.match(
      r.message,
      new RegExp(`${file.replace(/\./g, '\\.')} is 4096 bytes, but engines.json lists \\d+: the file is truncated`),
    );
  });

  it('a corrupted engine (one byte flipped): ERR_ENGINE_LOAD naming the digests', async () => {
    const file = `libbertgate_engine.torch-${minor(OLDEST)}.cpu.so`;
    const dir = await variant('flipped', async (d, list) => {
      const bytes = await readFile(join(d, file));
      const at = bytes.length >> 1;
      bytes.writeUInt8(bytes.readUInt8(at) ^ 0xff, at);
      await writeFile(join(d, file), bytes);
      return list;
    });
    const { out } = await child({ ...addonIn(dir), VIRTUAL_ENV: join(PACKAGE_ROOT, '.venv') }, loadDefault);
    const [r] = out as Array<{ code: string; message: string }>;
    assert.equal(r?.code, 'ERR_ENGINE_LOAD');
    assert.match(r.message, /does not match the SHA-256 engines\.json lists \([0-9a-f]{64} against [0-9a-f]{64}\)/);
  });

  it("an engines.json that lies about an engine's torch: the ABI drift is a typed error, not a crash", async () => {
    // The 2.11 CPU engine listed as the 2.15 one: loaded on 2.15, its symbols do not resolve.
    const dir = await variant('lying', async (d, list) =>
      list.map((e) =>
        e.torch === minor(NEWEST) && e.flavour === 'cpu'
          ? { ...(list.find((o) => o.torch === minor(OLDEST) && o.flavour === 'cpu') as EngineEntry), torch: e.torch }
          : e,
      ),
    );
    const { out } = await child(
      { ...addonIn(dir), LIBTORCH: wheels.libtorchDir(NEWEST) },
      `${loadDefault}\nreport(1 + 1);`,
    );
    const [r, alive] = out as [{ code: string; message: string }, number];
    assert.equal(r.code, 'ERR_ENGINE_LOAD');
    assert.match(
      r.message,
      /^opening the engine .*libbertgate_engine\.torch-2\.11\.cpu\.so failed: .*undefined symbol/,
    );
    assert.equal(alive, 2);
  });

  it('a missing or malformed engines.json, and a BERTGATE_ENGINE nobody knows: ERR_ENGINE_LOAD', async () => {
    const missing = await variant('no-manifest', async (_d, list) => list);
    await rm(join(missing, ENGINE_MANIFEST));
    const malformed = await variant('bad-manifest', async () => [{ file: '../escape.so' } as unknown as EngineEntry]);
    // Well-formed entries whose file is no file name of this directory.
    const badNames = await Promise.all(
      ['..', '', '.so', 'sub/x.so'].map((file, i) =>
        variant(`bad-name-${i}`, async (_d, list) => list.map((e) => ({ ...e, file }))),
      ),
    );
    const venv = { VIRTUAL_ENV: join(PACKAGE_ROOT, '.venv') };
    const [a] = (await child({ ...addonIn(missing), ...venv }, loadDefault)).out as Array<{
      code: string;
      message: string;
    }>;
    assert.equal(a?.code, 'ERR_ENGINE_LOAD');
    assert.match(a.message, /engines\.json does not exist: the addon in .* comes with no engine list/);
    const [b] = (await child({ ...addonIn(malformed), ...venv }, loadDefault)).out as Array<{
      code: string;
      message: string;
    }>;
    assert.equal(b?.code, 'ERR_ENGINE_LOAD');
    assert.match(b.message, /engines\.json is not an engine list/);
    for (const dir of badNames) {
      const [r] = (await child({ ...addonIn(dir), ...venv }, loadDefault)).out as Array<{
        code: string;
        message: string;
      }>;
      assert.equal(r?.code, 'ERR_ENGINE_LOAD', dir);
      assert.match(r.message, /engines\.json is not an engine list/);
    }
    const [c] = (await child({ ...addonIn(prebuilt), ...venv, BERTGATE_ENGINE: 'gpu' }, loadDefault)).out as Array<{
      code: string;
      message: string;
    }>;
    assert.equal(c?.code, 'ERR_ENGINE_LOAD');
    assert.equal(
      c.message,
      'BERTGATE_ENGINE is "gpu"; expected "cuda" or "cpu" (or unset: chosen by the CUDA decision)',
    );
  });

  it('a second libtorch in one process: ERR_LIBTORCH_CONFLICT naming both; the first model keeps working', async () => {
    const first = wheels.libtorchDir(OLDEST);
    const second = wheels.libtorchDir(NEWEST);
    const body = `
      const clf = await Classifier.load(${JSON.stringify(DEFAULT)});
      process.env.LIBTORCH = ${JSON.stringify(second)};
      report(await attempt(Classifier.load(${JSON.stringify(DEFAULT)})));
      process.env.LIBTORCH = ${JSON.stringify(first)};
      const again = await Classifier.load(${JSON.stringify(DEFAULT)});
      report((await clf.classify('Python bindings for libxml2')).label);
      report((await again.classify('Python bindings for libxml2')).label);
      await clf.close(); await again.close();
    `;
    const { out } = await child({ ...addonIn(prebuilt), LIBTORCH: first }, body);
    const [conflict, label, relabel] = out as [{ code: string; message: string }, string, string];
    assert.equal(conflict.code, 'ERR_LIBTORCH_CONFLICT');
    assert.equal(
      conflict.message,
      `this process already runs libtorch ${OLDEST} from ${first} with the engine libbertgate_engine.torch-${minor(OLDEST)}.cpu.so; ` +
        `with LIBTORCH changed since, the lookup finds libtorch ${NEWEST} at ${second} (via LIBTORCH), which needs ` +
        `libbertgate_engine.torch-${minor(NEWEST)}.cpu.so. One process holds one libtorch and one engine: load this ` +
        'model in another process, or restore LIBTORCH as the first load saw it.',
    );
    assert.deepEqual([label, relabel], ['python', 'python']);
  });

  it('the same libtorch by another path is no conflict; another flavour of the same one names the variable', async () => {
    const first = wheels.libtorchDir(OLDEST);
    const link = join(root, 'torch-link');
    await symlink(first, link);
    const body = `
      const clf = await Classifier.load(${JSON.stringify(DEFAULT)});
      process.env.LIBTORCH = ${JSON.stringify(link + '/')};
      report(await attempt(Classifier.load(${JSON.stringify(DEFAULT)}).then((c) => c.close().then(() => 'same'))));
      process.env.BERTGATE_ENGINE = 'cuda';
      report(await attempt(Classifier.load(${JSON.stringify(DEFAULT)})));
      await clf.close();
    `;
    const { out } = await child({ ...addonIn(prebuilt), LIBTORCH: first }, body);
    const [same, flavour] = out as [{ ok: string }, { code: string; message: string }];
    assert.deepEqual(same, { ok: 'same' });
    assert.equal(flavour.code, 'ERR_LIBTORCH_CONFLICT');
    assert.match(
      flavour.message,
      new RegExp(
        `with LIBTORCH, BERTGATE_ENGINE changed since, the same libtorch would need the engine libbertgate_engine\\.torch-${minor(OLDEST).replace('.', '\\.')}\\.cuda\\.so`,
      ),
    );
  });

  it('concurrent loads each use the environment of their own call, and one failing does not fail the other', async () => {
    const body = `
      process.env.LIBTORCH = ${JSON.stringify(join(root, 'nowhere'))};
      const bad = attempt(Classifier.load(${JSON.stringify(DEFAULT)}));
      process.env.LIBTORCH = ${JSON.stringify(wheels.libtorchDir(OLDEST))};
      const good = attempt(Classifier.load(${JSON.stringify(DEFAULT)}).then((c) => c.close().then(() => 'loaded')));
      process.env.LIBTORCH = ${JSON.stringify(join(root, 'elsewhere'))};
      report(await bad);
      report(await good);
    `;
    const { out } = await child(addonIn(prebuilt), body);
    const [bad, good] = out as [{ code: string; message: string }, { ok: string }];
    assert.equal(bad.code, 'ERR_LIBTORCH_NOT_FOUND');
    assert.match(bad.message, /nowhere does not exist/);
    assert.deepEqual(good, { ok: 'loaded' });
  });

  it('a worker thread asking for another libtorch: refused before anything of it loads, naming both', async () => {
    const first = wheels.libtorchDir(OLDEST);
    const second = wheels.libtorchDir(NEWEST);
    const body = workerLoadBody(
      withLibtorch(second),
      `report((await clf.classify('Python bindings for libxml2')).label);`,
    );
    const { out } = await child({ ...addonIn(prebuilt), LIBTORCH: first }, body);
    const [refused, label] = out as [{ code: string; message: string }, string];
    assert.equal(refused.code, 'ERR_LIBTORCH_CONFLICT');
    assert.equal(
      refused.message,
      `this process already runs the libtorch in ${first}/lib; this thread's environment finds libtorch ${NEWEST} ` +
        `in ${second} (via LIBTORCH). One process holds one libtorch: load this model in another process, or let ` +
        `this thread find the same libtorch (LIBTORCH=${first})`,
    );
    assert.equal(label, 'python');
  });

  it("a worker thread whose own env finds no libtorch: given the process's", async () => {
    const first = wheels.libtorchDir(OLDEST);
    // No PATH, no LIBTORCH, no Python: alone, this env finds nothing (ERR_LIBTORCH_NOT_FOUND).
    const body = workerLoadBody(JSON.stringify(addonIn(prebuilt)));
    const { out } = await child({ ...addonIn(prebuilt), LIBTORCH: first }, body);
    assert.deepEqual(out, [{ ok: true }]);
  });

  it('a worker thread with another copy of the addon (BERTGATE_ADDON) once libtorch is loaded: refused, naming both', async () => {
    const first = wheels.libtorchDir(OLDEST);
    const other = join(root, 'other-addon');
    await cp(prebuilt, other, { recursive: true });
    const body = workerLoadBody(
      `{ ...process.env, BERTGATE_ADDON: ${JSON.stringify(join(other, 'bertgate.glibc.node'))} }`,
    );
    const { out } = await child({ ...addonIn(prebuilt), LIBTORCH: first }, body);
    const [refused] = out as [{ code: string; message: string }];
    assert.equal(refused.code, 'ERR_LIBTORCH_CONFLICT', JSON.stringify(refused));
    assert.match(
      refused.message,
      new RegExp(
        `through the bertgate addon ${prebuilt}/bertgate\\.glibc\\.node; this thread's environment chose the addon ${other}/bertgate\\.glibc\\.node \\(BERTGATE_ADDON\\)`,
      ),
    );
  });

  it('a worker that loaded libtorch ends: the process keeps the addon and what it holds, so a change is still refused', async () => {
    // Node unloads an addon when the last thread that required it ends; libtorch stays. A fresh
    // copy of the addon would have forgotten it and let the MKL shim in after libtorch, useless.
    const body = `
      const { Worker } = await import('node:worker_threads');
      const worker = new Worker(\`
        import { Classifier } from ${JSON.stringify(INDEX)};
        const clf = await Classifier.load(${JSON.stringify(DEFAULT)});
        await clf.close();
      \`, { eval: true });
      await new Promise((resolve) => worker.once('exit', resolve));
      process.env.BERTGATE_MKL_ANY_CPU = '1';
      report(await attempt(Classifier.load(${JSON.stringify(DEFAULT)})));
    `;
    const { out } = await child({ VIRTUAL_ENV: join(PACKAGE_ROOT, '.venv') }, body);
    const [refused] = out as [{ code: string; message: string }];
    assert.equal(refused.code, 'ERR_LIBTORCH_CONFLICT', JSON.stringify(refused));
    assert.match(refused.message, /loaded libtorch without BERTGATE_MKL_ANY_CPU=1/);
  });

  it('a first load that fails after the MKL shim loaded: a retry without BERTGATE_MKL_ANY_CPU is refused, not silently shimmed', async () => {
    const dir = join(root, 'no-libgomp');
    await mkdir(join(dir, 'lib'), { recursive: true });
    await writeFile(join(dir, 'lib', 'libgomp.so.1'), 'not an ELF file');
    const source = wheels.libtorchDir(OLDEST);
    for (const lib of ['libc10.so', 'libtorch_cpu.so']) await symlink(join(source, 'lib', lib), join(dir, 'lib', lib));
    await writeFile(join(dir, 'version.py'), `__version__ = '${OLDEST}'\n`);
    const body = `
      report(await attempt(Classifier.load(${JSON.stringify(DEFAULT)})));
      delete process.env.BERTGATE_MKL_ANY_CPU;
      delete process.env.LIBTORCH;
      report(await attempt(Classifier.load(${JSON.stringify(DEFAULT)})));
    `;
    const { out } = await child(
      { ...addonIn(prebuilt), LIBTORCH: dir, BERTGATE_MKL_ANY_CPU: '1', VIRTUAL_ENV: join(PACKAGE_ROOT, '.venv') },
      body,
    );
    const [first, second] = out as Array<{ code: string; message: string }>;
    assert.equal(first?.code, 'ERR_LIBTORCH_LOAD', JSON.stringify(first));
    assert.equal(second?.code, 'ERR_LIBTORCH_CONFLICT', JSON.stringify(second));
    assert.match(second.message, /loaded libtorch with BERTGATE_MKL_ANY_CPU=1/);
  });

  it('a worker thread asking for a copy of the same torch elsewhere: refused too, not silently given the first', async () => {
    const first = wheels.libtorchDir(OLDEST);
    const copy = join(root, 'torch-copy');
    await mkdir(join(copy, 'lib'), { recursive: true });
    for (const lib of ['libc10.so', 'libtorch_cpu.so', 'libgomp.so.1'])
      await symlink(join(first, 'lib', lib), join(copy, 'lib', lib));
    await cp(join(first, 'version.py'), join(copy, 'version.py'));
    await symlink(join(first, '..', 'nvidia'), join(root, 'nvidia'));
    const body = workerLoadBody(withLibtorch(copy));
    const { out } = await child({ ...addonIn(prebuilt), LIBTORCH: first }, body);
    const [refused] = out as [{ code: string; message: string }];
    assert.equal(refused.code, 'ERR_LIBTORCH_CONFLICT');
    // The same files through other links: the native side, which compares the directories it was given, refuses it.
    assert.match(refused.message, new RegExp(`on the one in '${copy}/lib'`));
  });
});
