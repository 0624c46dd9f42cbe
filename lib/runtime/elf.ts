/**
 * What bertgate reads of a shared library without loading it: whether it is whole, one
 * section's bytes, and the libraries it names as DT_NEEDED. Loading a libtorch is irreversible in a process, and a
 * mismatched one can crash it, so these questions are asked of the file first. ELF64,
 * little-endian (x86-64, aarch64); anything else reads as null.
 */

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

interface Section {
  name: string;
  type: number;
  offset: number;
  size: number;
  link: number;
}

const SHT_DYNAMIC = 6;
const SHT_NOBITS = 8; // .bss: occupies no bytes of the file
const PT_LOAD = 1;
const DT_NEEDED = 1n;

function read(fd: number, offset: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  const got = readSync(fd, buffer, 0, length, offset);
  if (got !== length) throw new Error(`short read at ${offset}`);
  return buffer;
}

function sections(fd: number): Section[] | null {
  const header = read(fd, 0, 64);
  // \x7fELF, 64-bit (2), little-endian (1)
  if (header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) return null;
  const shoff = Number(header.readBigUInt64LE(0x28));
  const shentsize = header.readUInt16LE(0x3a);
  const shnum = header.readUInt16LE(0x3c);
  const shstrndx = header.readUInt16LE(0x3e);
  if (shoff === 0 || shentsize < 64 || shstrndx >= shnum) return null;
  const table = read(fd, shoff, shentsize * shnum);
  const raw = Array.from({ length: shnum }, (_, i) => {
    const at = i * shentsize;
    return {
      nameOffset: table.readUInt32LE(at),
      type: table.readUInt32LE(at + 4),
      offset: Number(table.readBigUInt64LE(at + 0x18)),
      size: Number(table.readBigUInt64LE(at + 0x20)),
      link: table.readUInt32LE(at + 0x28),
    };
  });
  const names = raw[shstrndx] as (typeof raw)[number];
  const strings = read(fd, names.offset, names.size);
  return raw.map((s) => ({
    name: strings.toString('latin1', s.nameOffset, strings.indexOf(0, s.nameOffset)),
    type: s.type,
    offset: s.offset,
    size: s.size,
    link: s.link,
  }));
}

function withFile<T>(path: string, use: (fd: number) => T | null): T | null {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return null;
  }
  try {
    return use(fd);
  } catch {
    return null; // truncated or malformed: not a library we can read
  } finally {
    closeSync(fd);
  }
}

/**
 * Why the file at `path` cannot be loaded whole, as a predicate for its name ("is 4096 bytes,
 * but its section table ends at byte 1562304: the file is truncated"), or null when nothing
 * says so. dlopen maps a truncated library without reading it, and the process dies of SIGBUS
 * when it touches the pages that are not there: every segment, section and table must lie
 * inside the file.
 */
export function elfProblem(path: string): string | null {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    return `cannot be read (${(error as NodeJS.ErrnoException).code})`;
  }
  try {
    const size = fstatSync(fd).size;
    const header = size >= 64 ? read(fd, 0, 64) : null;
    if (!header || header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) {
      return `is not an ELF64 little-endian shared library (${size} bytes)`;
    }
    const phoff = Number(header.readBigUInt64LE(0x20));
    const phentsize = header.readUInt16LE(0x36);
    const phnum = header.readUInt16LE(0x38);
    const shoff = Number(header.readBigUInt64LE(0x28));
    const shentsize = header.readUInt16LE(0x3a);
    const shnum = header.readUInt16LE(0x3c);
    if ((phnum > 0 && phentsize < 56) || (shnum > 0 && shentsize < 64)) {
      return `is not an ELF64 shared library (its header gives tables of ${phentsize}- and ${shentsize}-byte entries)`;
    }
    const past = (end: number, what: string): string | null =>
      end > size ? `is ${size} bytes, but ${what} ends at byte ${end}: the file is truncated` : null;
    const tables =
      past(phoff + phentsize * phnum, 'its program header table') ??
      past(shoff + shentsize * shnum, 'its section table');
    if (tables) return tables;
    const program = read(fd, phoff, phentsize * phnum);
    for (let i = 0; i < phnum; i++) {
      const at = i * phentsize;
      if (program.readUInt32LE(at) !== PT_LOAD) continue;
      const end = Number(program.readBigUInt64LE(at + 8)) + Number(program.readBigUInt64LE(at + 0x20));
      const problem = past(end, `its segment ${i}`);
      if (problem) return problem;
    }
    const table = read(fd, shoff, shentsize * shnum);
    for (let i = 0; i < shnum; i++) {
      const at = i * shentsize;
      if (table.readUInt32LE(at + 4) === SHT_NOBITS) continue;
      const end = Number(table.readBigUInt64LE(at + 0x18)) + Number(table.readBigUInt64LE(at + 0x20));
      const problem = past(end, `its section ${i}`);
      if (problem) return problem;
    }
    return null;
  } finally {
    closeSync(fd);
  }
}

/** The bytes of section `name` (".rodata"), or null when the file has none or is no ELF64. */
export function readSection(path: string, name: string): Buffer | null {
  return withFile(path, (fd) => {
    const section = sections(fd)?.find((s) => s.name === name);
    return section ? read(fd, section.offset, section.size) : null;
  });
}

/** The DT_NEEDED entries ("libcudart.so.13", ...), or null when the file cannot be read as ELF64. */
export function neededLibraries(path: string): string[] | null {
  return withFile(path, (fd) => {
    const all = sections(fd);
    const dynamic = all?.find((s) => s.type === SHT_DYNAMIC);
    if (!all || !dynamic) return null;
    const strtab = all[dynamic.link];
    if (!strtab) return null;
    const entries = read(fd, dynamic.offset, dynamic.size);
    const strings = read(fd, strtab.offset, strtab.size);
    const needed: string[] = [];
    for (let at = 0; at + 16 <= entries.length; at += 16) {
      const tag = entries.readBigUInt64LE(at);
      if (tag === 0n) break;
      if (tag === DT_NEEDED) {
        const offset = Number(entries.readBigUInt64LE(at + 8));
        needed.push(strings.toString('latin1', offset, strings.indexOf(0, offset)));
      }
    }
    return needed;
  });
}
