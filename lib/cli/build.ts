// bertgate build: compile the addon and an engine for the libtorch the lookup finds, into the
// package's build/Release (which then wins over the prebuilds). For a torch that no shipped
// engine fits; needs cmake, a C++17 compiler and that torch's headers (nvcc optional: without
// it the engine is the CPU flavour). Never run by installing.

import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

import { PACKAGE_ROOT } from '../runtime/package-root.js';
import { InvalidArgumentError, RuntimeLoadError } from '../errors.js';

interface BuildScript {
  buildNative(options: {
    cuda?: string;
    out?: string;
  }): Promise<{ dir: string; file: string; builtAgainst: string; flavour: string }>;
}

export async function buildCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { cuda: { type: 'string' } }, strict: true });
  const cuda = values.cuda?.toUpperCase();
  if (cuda !== undefined && !['AUTO', 'ON', 'OFF'].includes(cuda)) {
    throw new InvalidArgumentError(`Expected --cuda to be auto, on or off, got ${JSON.stringify(values.cuda)}`);
  }
  const script = join(PACKAGE_ROOT, 'scripts', 'build-native.mjs');
  if (!existsSync(script)) throw new RuntimeLoadError('ERR_ENGINE_LOAD', `${script} is missing from this package`);
  const { buildNative } = (await import(pathToFileURL(script).href)) as BuildScript;
  // Built aside and moved into build/Release only whole: build/Release wins over the prebuilds
  // the moment it holds an addon, so a half-finished one (an addon whose engine failed to link)
  // must never land there.
  const staging = join(PACKAGE_ROOT, 'build-staging');
  const release = join(PACKAGE_ROOT, 'build', 'Release');
  try {
    await rm(staging, { recursive: true, force: true });
    const built = await buildNative({ ...(cuda ? { cuda } : {}), out: staging });
    await rm(join(PACKAGE_ROOT, 'build'), { recursive: true, force: true });
    await mkdir(join(PACKAGE_ROOT, 'build'));
    await rename(built.dir, release);
    process.stdout.write(
      `built ${join(release, built.file)} for torch ${built.builtAgainst} (${built.flavour}), ` +
        `and the addon beside it; bertgate now loads them (see bertgate doctor)\n`,
    );
  } catch (error) {
    throw new RuntimeLoadError(
      'ERR_ENGINE_LOAD',
      `building bertgate failed: ${(error as Error).message}. It needs cmake, g++ (C++17) and the headers of the ` +
        'torch the lookup finds (bertgate doctor shows which).',
      { cause: error },
    );
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return 0;
}
