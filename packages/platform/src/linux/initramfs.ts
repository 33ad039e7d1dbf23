/**
 * An initramfs for a Linux guest: an uncompressed cpio archive in the "newc" format, the one
 * the kernel unpacks into its rootfs (Documentation/driver-api/early-userspace/buffer-format.rst):
 * per entry a 110-byte ASCII header (magic 070701, thirteen 8-digit hex fields), the NUL-ended
 * name, padding to 4 bytes, the data, padding to 4 bytes; "TRAILER!!!" last. Uncompressed on
 * purpose: gunzip in the guest is slow on an instruction-emulating KVM (KVM-NOTES.md).
 *
 * The kernel creates entries in archive order and does not make missing parents, so parents
 * missing from the list are added (mode 0755) before their first child.
 */
import { LinuxBootError } from './errors.js';

export type InitramfsEntry =
  | { readonly kind: 'file'; readonly path: string; readonly data: Uint8Array; readonly mode?: number }
  | { readonly kind: 'dir'; readonly path: string; readonly mode?: number }
  | { readonly kind: 'chardev'; readonly path: string; readonly major: number; readonly minor: number; readonly mode?: number }
  | { readonly kind: 'symlink'; readonly path: string; readonly target: string };

/** File-type bits of st_mode (the cpio mode field carries them). */
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;
const S_IFLNK = 0o120000;
const MAGIC = '070701';
const HEADER_BYTES = 110;
const TRAILER = 'TRAILER!!!';
const U32_MAX = 0xffffffff;

const DEFAULT_MODE: Record<InitramfsEntry['kind'], number> = { file: 0o755, dir: 0o755, chardev: 0o600, symlink: 0o777 };
const TYPE_BITS: Record<InitramfsEntry['kind'], number> = { file: S_IFREG, dir: S_IFDIR, chardev: S_IFCHR, symlink: S_IFLNK };

const pad4 = (n: number): number => (4 - (n % 4)) % 4;
const hex8 = (n: number): string => n.toString(16).padStart(8, '0');

/** Builds the archive. Paths are relative to the root ("init", "dev/console"), '/'-separated. */
export function buildInitramfs(entries: readonly InitramfsEntry[]): Uint8Array {
  if (!Array.isArray(entries)) throw new LinuxBootError('buildInitramfs: entries must be an array');
  const records: { name: string; mode: number; data: Uint8Array; rdev: [number, number] }[] = [];
  const seen = new Set<string>();
  const add = (name: string, mode: number, data: Uint8Array, rdev: [number, number] = [0, 0]): void => {
    if (seen.has(name)) throw new LinuxBootError(`buildInitramfs: "${name}" appears twice`);
    seen.add(name);
    records.push({ name, mode, data, rdev });
  };
  // (Array.isArray narrows a readonly array to any[]: keep the element type.)
  for (const e of entries as readonly InitramfsEntry[]) {
    const path = checkPath(e);
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      if (!seen.has(parent)) add(parent, S_IFDIR | 0o755, new Uint8Array());
    }
    const mode = TYPE_BITS[e.kind] | checkMode(e);
    switch (e.kind) {
      case 'file':
        add(path, mode, checkData(e.data, path));
        break;
      case 'dir':
        add(path, mode, new Uint8Array());
        break;
      case 'chardev':
        add(path, mode, new Uint8Array(), [checkU32(e.major, `${path} major`), checkU32(e.minor, `${path} minor`)]);
        break;
      case 'symlink':
        add(path, mode, new TextEncoder().encode(checkTarget(e.target, path)));
        break;
    }
  }
  const chunks = records.map((r, i) => record(r.name, i + 1, r.mode, r.data, r.rdev));
  chunks.push(record(TRAILER, 0, 0, new Uint8Array(), [0, 0]));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function record(name: string, ino: number, mode: number, data: Uint8Array, [major, minor]: [number, number]): Uint8Array {
  const nameBytes = new TextEncoder().encode(`${name}\0`);
  const isDir = (mode & 0o170000) === S_IFDIR;
  const fields = [ino, mode, 0, 0, isDir ? 2 : 1, 0, data.length, 0, 0, major, minor, nameBytes.length, 0];
  const header = new TextEncoder().encode(MAGIC + fields.map(hex8).join(''));
  const headPad = pad4(HEADER_BYTES + nameBytes.length);
  const out = new Uint8Array(HEADER_BYTES + nameBytes.length + headPad + data.length + pad4(data.length));
  out.set(header, 0);
  out.set(nameBytes, HEADER_BYTES);
  out.set(data, HEADER_BYTES + nameBytes.length + headPad);
  return out;
}

function checkPath(e: InitramfsEntry): string {
  if (e === null || typeof e !== 'object' || !(e.kind in TYPE_BITS)) {
    throw new LinuxBootError('buildInitramfs: each entry needs kind "file", "dir", "chardev" or "symlink"');
  }
  const p = e.path;
  if (typeof p !== 'string' || p === '' || p.startsWith('/') || p.includes('\0') || p === TRAILER) {
    throw new LinuxBootError(`buildInitramfs: path ${JSON.stringify(p)} must be a non-empty relative path`);
  }
  if (p.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    throw new LinuxBootError(`buildInitramfs: path "${p}" has an empty, "." or ".." component`);
  }
  return p;
}

function checkMode(e: InitramfsEntry): number {
  const mode = 'mode' in e && e.mode !== undefined ? e.mode : DEFAULT_MODE[e.kind];
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new LinuxBootError(`buildInitramfs: mode of "${e.path}" must be permission bits (0 to 0o7777), not ${String(mode)}`);
  }
  return mode;
}

function checkData(data: unknown, path: string): Uint8Array {
  if (!(data instanceof Uint8Array)) throw new LinuxBootError(`buildInitramfs: data of "${path}" must be a Uint8Array`);
  if (data.length > U32_MAX) throw new LinuxBootError(`buildInitramfs: "${path}" is larger than a cpio entry can be (4 GiB)`);
  return data;
}

function checkU32(n: unknown, what: string): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > U32_MAX) {
    throw new LinuxBootError(`buildInitramfs: ${what} must be an integer from 0 to 0xffffffff`);
  }
  return n;
}

function checkTarget(target: unknown, path: string): string {
  if (typeof target !== 'string' || target === '' || target.includes('\0')) {
    throw new LinuxBootError(`buildInitramfs: symlink "${path}" needs a non-empty target`);
  }
  return target;
}
