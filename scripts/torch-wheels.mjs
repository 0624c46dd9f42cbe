// libtorch from PyPI's torch wheels, outside the repository, for the prebuild matrix and the
// packed-install tests: each torch wheel without its nvidia dependencies (several GB) except
// the two runtime libraries libtorch_cpu.so itself needs (libcudart, libcupti), at the
// versions that torch release pins. Cached under $BERTGATE_CACHE (default
// ~/.cache/bertgate): wheels/, libtorch/<version>/ (include/ and the libraries an engine
// links or loads), venvs/torch-<version>/ (a virtualenv holding that torch).
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

import { VENV_PYTHON } from './paths.mjs';
import { run } from './run.mjs';

/** The torch releases bertgate ships engines for: the latest patch of each minor. */
export const MATRIX = ['2.11.0', '2.12.1', '2.13.0', '2.14.1', '2.15.0'];

// What an engine links or loads of a torch wheel; libtorch_cuda and the rest of the CUDA half
// come with a user's full install, never from here.
const TORCH_LIBS = ['libc10.so', 'libc10_cuda.so', 'libtorch_cpu.so', 'libgomp.so.1'];
const RUNTIME_PACKAGES = ['nvidia-cuda-runtime', 'nvidia-cuda-cupti'];
const RUNTIME_LIBS = /^nvidia\/[^/]+\/lib\/lib(cudart|cupti)\.so\.\d+$/;

export function cacheDir(env = process.env) {
  return env.BERTGATE_CACHE ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'bertgate');
}

function python(args, options = {}) {
  run(VENV_PYTHON, args, { stdio: ['ignore', 'ignore', 'inherit'], ...options });
}

/** The torch wheel and its two runtime wheels, downloaded once: their paths. */
export function torchWheels(version) {
  const dir = join(cacheDir(), 'wheels');
  const listing = join(dir, `torch-${version}.json`);
  if (existsSync(listing)) {
    const files = JSON.parse(readFileSync(listing, 'utf8'));
    if (files.every((f) => existsSync(join(dir, f)))) return files.map((f) => join(dir, f));
  }
  mkdirSync(dir, { recursive: true });
  // pip resolves torch's pins from the index's metadata without fetching the big wheels.
  const report = join(dir, `torch-${version}.report.json`);
  python([
    '-m',
    'pip',
    'install',
    '--dry-run',
    '--ignore-installed',
    '--quiet',
    '--report',
    report,
    `torch==${version}`,
  ]);
  const pins = JSON.parse(readFileSync(report, 'utf8'))
    .install.map((item) => item.metadata)
    .filter((m) => RUNTIME_PACKAGES.includes(m.name))
    .map((m) => `${m.name}==${m.version}`);
  rmSync(report);
  if (pins.length !== RUNTIME_PACKAGES.length)
    throw new Error(`torch==${version} does not pin ${RUNTIME_PACKAGES.join(' and ')}; found ${pins.join(', ')}`);
  const before = new Set(readdirSync(dir));
  python(['-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '-d', dir, `torch==${version}`, ...pins], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const wanted = [`torch-${version}-`, ...pins.map((pin) => `${pin.replace(/-/g, '_').replace('==', '-')}-`)];
  const files = readdirSync(dir).filter((f) => f.endsWith('.whl') && wanted.some((w) => f.startsWith(w)));
  if (files.length !== wanted.length) {
    const fresh = readdirSync(dir).filter((f) => !before.has(f));
    throw new Error(`pip did not leave the wheels for torch==${version} in ${dir} (new: ${fresh.join(', ')})`);
  }
  writeFileSync(listing, JSON.stringify(files) + '\n');
  return files.map((f) => join(dir, f));
}

/**
 * libtorch <version> laid out as a pip install would be: <root>/torch/{include,lib,version.py}
 * and <root>/nvidia/<cu>/lib/{libcudart,libcupti}. Returns <root>/torch (a LIBTORCH directory).
 */
export function libtorchDir(version) {
  const root = join(cacheDir(), 'libtorch', version);
  const done = join(root, '.complete');
  if (existsSync(done)) return join(root, 'torch');
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  const code = `
import re, sys, zipfile
root, libs, runtime = sys.argv[1], set(sys.argv[2].split(',')), re.compile(sys.argv[3])
for wheel in sys.argv[4:]:
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if (name.startswith('torch/include/') or name == 'torch/version.py'
                    or (name.startswith('torch/lib/') and name[10:] in libs) or runtime.match(name)):
                z.extract(name, root)
`;
  python(['-c', code, root, TORCH_LIBS.join(','), RUNTIME_LIBS.source, ...torchWheels(version)]);
  writeFileSync(done, version + '\n');
  return join(root, 'torch');
}

/** A virtualenv whose torch is <version> (its wheels installed without dependencies). */
export function torchVenv(version) {
  const venv = join(cacheDir(), 'venvs', `torch-${version}`);
  const bin = join(venv, 'bin', 'python');
  const done = join(venv, '.complete');
  if (existsSync(done)) return bin;
  rmSync(venv, { recursive: true, force: true });
  python(['-m', 'venv', '--without-pip', venv]);
  // The project's pip installs into it; the new venv needs none of its own.
  python(['-m', 'pip', '--python', bin, 'install', '--quiet', '--no-deps', '--no-compile', ...torchWheels(version)]);
  writeFileSync(done, version + '\n');
  return bin;
}
