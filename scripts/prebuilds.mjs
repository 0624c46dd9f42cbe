// npm run prebuilds: the N-API prebuild for this platform, with prebuildify, into
// prebuilds/<platform>-<arch>/: bertgate.glibc.node and libbertgate_engine.so, stripped.
// Built against the libtorch the lookup finds (the project's .venv: torch 2.11.0, cxx11 ABI,
// CUDA kernels when the pinned nvcc is there), in build-prebuild/ so a checkout's own build/
// (with its tests) is left alone.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { devEnv } from './dev-env.mjs';
import { ROOT, isMain } from './paths.mjs';
import { run } from './run.mjs';

export const STAGE = join(ROOT, 'build-prebuild');

export function prebuilds() {
  mkdirSync(STAGE, { recursive: true });
  // prebuildify reads the package name from its cwd; the stage says it.
  writeFileSync(join(STAGE, 'package.json'), JSON.stringify({ name: 'bertgate', private: true }) + '\n');
  const platformDir = join(ROOT, 'prebuilds', `${process.platform}-${process.arch}`);
  rmSync(platformDir, { recursive: true, force: true });
  const bin = createRequire(import.meta.url).resolve('prebuildify/bin.js');
  run(
    process.execPath,
    [
      bin,
      '--napi',
      '--tag-libc',
      '--strip',
      '--name',
      'bertgate',
      '--cwd',
      STAGE,
      '--out',
      ROOT,
      '--node-gyp',
      join(ROOT, 'scripts', 'prebuild-gyp.mjs'),
    ],
    { cwd: ROOT, env: devEnv() },
  );
  return platformDir;
}

if (isMain(import.meta.url)) console.log(`wrote ${prebuilds()}`);
