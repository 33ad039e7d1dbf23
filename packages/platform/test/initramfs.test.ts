/**
 * buildInitramfs: the newc bytes derived by hand from the format, parents added in order, hostile
 * inputs refused; where GNU cpio is installed, its listing of the archive agrees.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { buildInitramfs, LinuxBootError, type InitramfsEntry } from '../src/index.js';

const text = (b: Uint8Array): string => new TextDecoder('latin1').decode(b);

/** Splits an archive back into (name, mode, rdev, data) records, checking the padding rules. */
function parse(archive: Uint8Array): { name: string; mode: number; nlink: number; rdev: [number, number]; data: string }[] {
  const out = [];
  let at = 0;
  for (;;) {
    const h = text(archive.subarray(at, at + 110));
    expect(h.slice(0, 6)).toBe('070701');
    const f = (i: number): number => parseInt(h.slice(6 + 8 * i, 14 + 8 * i), 16);
    const nameSize = f(11);
    const name = text(archive.subarray(at + 110, at + 110 + nameSize - 1));
    expect(archive[at + 110 + nameSize - 1]).toBe(0);
    let p = at + 110 + nameSize;
    p += (4 - (p % 4)) % 4;
    const size = f(6);
    const data = text(archive.subarray(p, p + size));
    p += size;
    p += (4 - (p % 4)) % 4;
    expect(f(12)).toBe(0); // check field: 0 in newc
    out.push({ name, mode: f(1), nlink: f(4), rdev: [f(9), f(10)] as [number, number], data });
    at = p;
    if (name === 'TRAILER!!!') break;
  }
  expect(at).toBe(archive.length);
  return out;
}

const hello = new TextEncoder().encode('hello\n');

describe('buildInitramfs', () => {
  it('writes newc records: header fields, names, 4-byte padding, the trailer', () => {
    const a = buildInitramfs([{ kind: 'file', path: 'init', data: hello }]);
    // 110-byte header + "init\0" (115) padded to 116, 6 data bytes padded to 8; then the trailer.
    expect(text(a.subarray(0, 110))).toBe(
      '070701' +
        ['00000001', '000081ed', '00000000', '00000000', '00000001', '00000000', '00000006'].join('') +
        '0'.repeat(32) +
        '00000005' +
        '00000000',
    );
    expect(text(a.subarray(110, 116))).toBe('init\0\0');
    expect(text(a.subarray(116, 124))).toBe('hello\n\0\0');
    expect(text(a.subarray(124 + 94, 124 + 110))).toBe('0000000b00000000'); // trailer: namesize 11, check 0
    expect(text(a.subarray(124 + 110, 124 + 121))).toBe('TRAILER!!!\0');
    expect(a.length).toBe(124 + 124);
  });

  it('adds missing parents before their children and keeps every kind of entry', () => {
    const entries: InitramfsEntry[] = [
      { kind: 'chardev', path: 'dev/console', major: 5, minor: 1 },
      { kind: 'dir', path: 'proc', mode: 0o555 },
      { kind: 'file', path: 'sbin/tools/x', data: hello, mode: 0o700 },
      { kind: 'symlink', path: 'bin', target: 'sbin' },
    ];
    const r = parse(buildInitramfs(entries));
    expect(r.map((e) => [e.name, e.mode.toString(8)])).toEqual([
      ['dev', '40755'],
      ['dev/console', '20600'],
      ['proc', '40555'],
      ['sbin', '40755'],
      ['sbin/tools', '40755'],
      ['sbin/tools/x', '100700'],
      ['bin', '120777'],
      ['TRAILER!!!', '0'],
    ]);
    expect(r[1].rdev).toEqual([5, 1]);
    expect(r[5].data).toBe('hello\n');
    expect(r[6].data).toBe('sbin');
    expect(r[0].nlink).toBe(2);
  });

  it('refuses hostile or malformed entries with LinuxBootError', () => {
    const bad: unknown[] = [
      [{ kind: 'file', path: '/init', data: hello }],
      [{ kind: 'file', path: '../etc/passwd', data: hello }],
      [{ kind: 'file', path: 'a//b', data: hello }],
      [{ kind: 'file', path: 'a/./b', data: hello }],
      [{ kind: 'file', path: 'nul\0name', data: hello }],
      [{ kind: 'file', path: 'TRAILER!!!', data: hello }],
      [{ kind: 'file', path: 'x', data: 'text' }],
      [{ kind: 'file', path: 'x', data: hello, mode: 0o10000 }],
      [{ kind: 'file', path: 'x', data: hello, mode: 1.5 }],
      [{ kind: 'chardev', path: 'c', major: -1, minor: 0 }],
      [{ kind: 'chardev', path: 'c', major: 5, minor: 2 ** 32 }],
      [{ kind: 'symlink', path: 's', target: '' }],
      [{ kind: 'pipe', path: 'p' }],
      [null],
      [
        { kind: 'dir', path: 'd' },
        { kind: 'dir', path: 'd' },
      ],
      'not an array',
    ];
    for (const entries of bad) expect(() => buildInitramfs(entries as InitramfsEntry[]), JSON.stringify(entries)).toThrow(LinuxBootError);
  });

  it("agrees with GNU cpio's listing where cpio is installed", (ctx) => {
    let listing: string;
    const archive = buildInitramfs([
      { kind: 'file', path: 'init', data: hello },
      { kind: 'chardev', path: 'dev/console', major: 5, minor: 1 },
      { kind: 'symlink', path: 'sbin', target: '.' },
    ]);
    try {
      listing = execFileSync('cpio', ['-itv', '--quiet'], { input: archive, encoding: 'utf8' });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return ctx.skip('cpio is not installed');
      throw error;
    }
    const lines = listing.trim().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/^-rwxr-xr-x .* 6 .* init$/);
    expect(lines[1]).toMatch(/^drwxr-xr-x .* dev$/);
    expect(lines[2]).toMatch(/^crw------- .* 5,\s+1 .* dev\/console$/);
    expect(lines[3]).toMatch(/^lrwxrwxrwx .* sbin -> \.$/);
  });
});
