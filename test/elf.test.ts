// What is read of a shared library before it is loaded: a library cut short (a build stopped by
// a full disk, a half-copied package) is refused by its own tables, even when engines.json
// lists the size and digest of what was left, since dlopen would map it and the process die
// of SIGBUS.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { PACKAGE_ROOT } from '../lib/runtime/package-root.js';
import { elfProblem } from '../lib/runtime/elf.js';
import { verifyEngine, type EngineCandidate } from '../lib/runtime/engines.js';
import { RuntimeLoadError } from '../lib/errors.js';
import { findLibtorch, formatSteps } from '../lib/runtime/libtorch.js';

const REBUILD = 'Reinstall bertgate, or rebuild it (npx bertgate build).';

/** `path` listed in engines.json with its actual size and digest, as a build cut short would list it. */
async function listed(path: string): Promise<EngineCandidate> {
  const bytes = await readFile(path);
  return {
    file: 'libbertgate_engine.torch-2.11.cpu.so',
    torch: '2.11',
    builtAgainst: '2.11.0',
    flavour: 'cpu',
    cxx11Abi: true,
    bytes: bytes.length,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    path,
    problem: undefined,
  };
}

describe('a library cut short', () => {
  let root: string;
  let library: string; // a real shared library: libtorch's libc10.so
  let size: number;
  let sectionTableEnd: number;

  before(async () => {
    const { location, steps } = await findLibtorch({
      PATH: process.env['PATH'],
      BERTGATE_PYTHON: join(PACKAGE_ROOT, '.venv', 'bin', 'python'),
    });
    assert.ok(location, formatSteps(steps));
    library = location.preload.find((p) => p.endsWith('/libc10.so')) as string;
    const bytes = await readFile(library);
    size = bytes.length;
    sectionTableEnd = Number(bytes.readBigUInt64LE(0x28)) + bytes.readUInt16LE(0x3a) * bytes.readUInt16LE(0x3c);
    root = await mkdtemp(join(tmpdir(), 'bertgate-elf-'));
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('a whole library has no problem', () => {
    assert.equal(elfProblem(library), null);
  });

  it('an engine truncated but listed with its actual size and digest: ERR_ENGINE_LOAD, never loaded', async () => {
    const engine = join(root, 'half.so');
    await copyFile(library, engine);
    await truncate(engine, size >> 1);
    await assert.rejects(
      verifyEngine(await listed(engine)),
      (e: unknown) =>
        e instanceof RuntimeLoadError &&
        e.code === 'ERR_ENGINE_LOAD' &&
        e.message ===
          `${engine} is ${size >> 1} bytes, but its section table ends at byte ${sectionTableEnd}: ` +
            `the file is truncated. ${REBUILD}`,
    );
  });

  it('cut after its section table: the segment that lies past the end is named', async () => {
    assert.ok(sectionTableEnd < size, 'this libc10.so keeps a segment after its section table');
    const engine = join(root, 'tail.so');
    await copyFile(library, engine);
    await truncate(engine, sectionTableEnd);
    assert.match(
      elfProblem(engine) ?? '',
      new RegExp(`^is ${sectionTableEnd} bytes, but its segment \\d+ ends at byte \\d+: the file is truncated$`),
    );
  });

  it('no ELF at all, or nothing: said so with its size', async () => {
    const empty = join(root, 'empty.so');
    await writeFile(empty, '');
    assert.equal(elfProblem(empty), 'is not an ELF64 little-endian shared library (0 bytes)');
    assert.equal(elfProblem(join(root, 'absent.so')), 'cannot be read (ENOENT)');
  });
});
