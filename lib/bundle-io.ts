/**
 * Reading a bundle's files: regular files only, every failure a BundleError naming the file.
 * A FIFO or a device in a bundle would make a read wait forever on a libuv pool thread (the
 * process could then not exit, even by process.exit()), and libtorch would block on one too.
 */

import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { BundleError } from './errors.js';
import { decodeUtf8, type InvalidUtf8Error } from './text-decoding.js';

/** The file's size; null where it does not exist. Refuses anything but a regular file (symlinks followed). */
export async function regularFileSize(dir: string, file: string): Promise<number | null> {
  const path = join(dir, file);
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    // ENOTDIR: the bundle path is a file, so it holds no such file.
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw new BundleError(file, undefined, `${path} could not be read: ${(error as Error).message}`, { cause: error });
  }
  if (!info.isFile()) {
    throw new BundleError(file, undefined, `${path} is not a regular file (a bundle holds only regular files)`);
  }
  return info.size;
}

/** The file's bytes; null where it does not exist and is not required. */
export async function readBundleBytes(dir: string, file: string, required: boolean): Promise<Buffer | null> {
  const path = join(dir, file);
  if ((await regularFileSize(dir, file)) === null) {
    if (!required) return null;
    throw new BundleError(file, undefined, `the bundle at ${dir} has no ${file}`);
  }
  try {
    // O_NONBLOCK: were the file swapped for a FIFO since the check, the open returns at once
    // (and the fstat below refuses it) instead of waiting for a writer.
    const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      if (!(await handle.stat()).isFile()) {
        throw new BundleError(file, undefined, `${path} is not a regular file (a bundle holds only regular files)`);
      }
      return await handle.readFile();
    } finally {
      await handle.close();
    }
  } catch (error) {
    if (error instanceof BundleError) throw error;
    throw new BundleError(file, undefined, `${path} could not be read: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * The SHA-256 of a bundle file that must exist, read in 1 MB steps (the event loop keeps turning:
 * about 0.3 s per 100 MB here). Opened as readBundleBytes opens, so a file swapped for a FIFO or
 * removed since it was checked is a BundleError naming it, not a wait or an untyped error.
 */
export async function bundleFileSha256(dir: string, file: string): Promise<string> {
  const path = join(dir, file);
  try {
    const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      if (!(await handle.stat()).isFile()) {
        throw new BundleError(file, undefined, `${path} is not a regular file (a bundle holds only regular files)`);
      }
      const hash = createHash('sha256');
      for await (const chunk of handle.createReadStream({ highWaterMark: 1 << 20, autoClose: false }))
        hash.update(chunk as Buffer);
      return hash.digest('hex');
    } finally {
      await handle.close();
    }
  } catch (error) {
    if (error instanceof BundleError) throw error;
    throw new BundleError(file, undefined, `${path} could not be read: ${(error as Error).message}`, { cause: error });
  }
}

/** The file's JSON; null where it does not exist and is not required. */
export async function readBundleJson(dir: string, file: string, required: boolean): Promise<unknown> {
  const bytes = await readBundleBytes(dir, file, required);
  if (bytes === null) return null;
  let text: string;
  try {
    text = decodeUtf8(bytes);
  } catch (error) {
    const offset = (error as InvalidUtf8Error).offset;
    throw new BundleError(file, undefined, `${join(dir, file)} is not valid UTF-8 (from byte ${offset + 1})`, {
      cause: error,
    });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new BundleError(file, undefined, `${join(dir, file)} is not valid JSON: ${(error as Error).message}`, {
      cause: error,
    });
  }
}
