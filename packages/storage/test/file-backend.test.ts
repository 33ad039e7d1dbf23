/**
 * The raw image file backend: sparse files, UNMAP as a hole punch, FUA and flush through
 * fdatasync, and the crash test: a host process SIGKILLed mid-stream loses no acknowledged write.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BackendConfigError, BackendIoError, FileBackend } from '@hvemu/storage';
import { patternFor } from '@hvemu/storage/testing';

const dir = mkdtempSync(join(tmpdir(), 'hvemu-storage-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const image = () => join(dir, `disk-${n++}.img`);

describe('FileBackend', () => {
  it('creates a sparse image, reads zeros from holes, writes and reads back', async () => {
    const path = image();
    const b = FileBackend.open(path, { createSize: 64 << 20 });
    expect(b.byteLength).toBe(64 << 20);
    expect(statSync(path).blocks * 512).toBeLessThan(1 << 20);
    const data = patternFor(1, 0, 16, 512);
    await b.write(32 << 20, data);
    const back = new Uint8Array(data.length);
    await b.read(32 << 20, back);
    expect(Buffer.from(back).equals(Buffer.from(data))).toBe(true);
    const hole = new Uint8Array(4096).fill(1);
    await b.read(0, hole);
    expect(hole.every((x) => x === 0)).toBe(true);
    await b.close();
  });

  it('readCached fills scattered views (guest pages) from the page cache in order; the rest is left to read()', async () => {
    const path = image();
    const content = Uint8Array.from({ length: 1 << 20 }, (_, i) => (i * 7 + (i >> 12)) & 0xff);
    writeFileSync(path, content); // just written: in the page cache
    const b = FileBackend.open(path);
    // Pages of a SharedArrayBuffer (as guest RAM is): two adjacent, one elsewhere, one in another buffer (one iovec each).
    const ram = new Uint8Array(new SharedArrayBuffer(16 * 4096));
    const other = new Uint8Array(4096);
    const views = [
      new Uint8Array(ram.buffer, 4096, 4096),
      new Uint8Array(ram.buffer, 8192, 4096),
      new Uint8Array(ram.buffer, 40960, 100),
      other,
    ];
    const total = 3 * 4096 + 100;
    const got = b.readCached(12288, views);
    // preadv2(RWF_NOWAIT) on a file just written (Linux >= 4.14 and ext4 here).
    expect(got).toBe(total);
    const joined = Buffer.concat(views.map((v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength)));
    expect(joined.equals(Buffer.from(content.subarray(12288, 12288 + total)))).toBe(true);
    expect(b.stats.cachedReadBytes).toBe(total);
    expect(ram.subarray(0, 4096).every((x) => x === 0)).toBe(true); // nothing outside the views
    expect(() => b.readCached((1 << 20) - 4096, [new Uint8Array(8192)])).toThrow(BackendIoError); // past the end
    const off = FileBackend.open(path, { cachedReads: false });
    expect(off.readCached(0, [new Uint8Array(4096)])).toBe(0);
    await b.close();
    expect(b.readCached(0, [new Uint8Array(4096)])).toBe(0); // closed: the pool path reports it
    await off.close();
  });

  it('UNMAP punches a hole (fallocate PUNCH_HOLE | KEEP_SIZE): blocks freed, zeros read, size kept', async () => {
    const path = image();
    const b = FileBackend.open(path, { createSize: 8 << 20 });
    await b.write(1 << 20, new Uint8Array(2 << 20).fill(0x5a));
    await b.flush();
    const before = statSync(path).blocks;
    await b.unmap(1 << 20, 2 << 20);
    expect(b.stats.holesPunched).toBe(1);
    expect(statSync(path).blocks).toBeLessThan(before - 2048); // at least 1 MiB of 512-byte blocks freed
    expect(statSync(path).size).toBe(8 << 20);
    const back = new Uint8Array(2 << 20).fill(1);
    await b.read(1 << 20, back);
    expect(back.every((x) => x === 0)).toBe(true);
    await b.close();
  });

  it('without hole punching, UNMAP writes zeros (the same data for the guest)', async () => {
    const b = FileBackend.open(image(), { createSize: 1 << 20, punchHoles: false });
    await b.write(0, new Uint8Array(8192).fill(3));
    await b.unmap(4096, 4096);
    expect(b.stats).toMatchObject({ holesPunched: 0, zeroFilled: 1 });
    const back = new Uint8Array(8192);
    await b.read(0, back);
    expect([back[4095], back[4096], back[8191]]).toEqual([3, 0, 0]);
    await b.close();
  });

  it('FUA writes and flushes call fdatasync; read-only images refuse writes; bad paths and ranges are typed errors', async () => {
    const path = image();
    const b = FileBackend.open(path, { createSize: 1 << 20 });
    await b.write(0, new Uint8Array(512), { fua: true });
    await b.flush();
    expect(b.stats.syncs).toBe(2);
    await expect(b.write((1 << 20) - 256, new Uint8Array(512))).rejects.toBeInstanceOf(BackendIoError);
    await b.close();
    await expect(b.read(0, new Uint8Array(1))).rejects.toBeInstanceOf(BackendIoError);
    const ro = FileBackend.open(path, { readOnly: true });
    expect(ro.readOnly).toBe(true);
    await expect(ro.write(0, new Uint8Array(512))).rejects.toBeInstanceOf(BackendIoError);
    await ro.close();
    expect(() => FileBackend.open(join(dir, 'missing', 'x.img'))).toThrow(BackendConfigError);
    writeFileSync(join(dir, 'tiny.img'), new Uint8Array(1000));
    expect(FileBackend.open(join(dir, 'tiny.img')).byteLength).toBe(1000);
  });

  it('a host SIGKILLed while writing: every write it acknowledged is in the image', async () => {
    const path = image();
    const size = 4 << 20;
    const child = spawn(process.execPath, [new URL('./helpers/crash-child.mjs', import.meta.url).pathname, path, String(size)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const acked: { lba: number; seed: number; blocks: number }[] = [];
    let flushes = 0;
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const killed = new Promise<void>((resolve, reject) => {
      let pending = '';
      child.stdout.on('data', (d: Buffer) => {
        pending += d.toString();
        const lines = pending.split('\n');
        pending = lines.pop()!;
        for (const line of lines) {
          const m = JSON.parse(line) as { acked?: (typeof acked)[number]; flushed?: number };
          if (m.acked) acked.push(m.acked);
          // Kill mid-stream: a few flushes in, with writes still in flight.
          if (m.flushed !== undefined && ++flushes === 3) child.kill('SIGKILL');
        }
      });
      child.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve() : reject(new Error(`child exited ${code}: ${stderr}`))));
    });
    await killed;
    expect(flushes).toBe(3);
    expect(acked.length).toBeGreaterThanOrEqual(3 * 4 * 8);
    const bytes = readFileSync(path);
    // Writes never overlap within a round; a later round may rewrite a sector: check the last write of each.
    const last = new Map<number, (typeof acked)[number]>();
    for (const w of acked) for (let s = 0; s < w.blocks; s++) last.set(w.lba + s, w);
    const missing = [...last.entries()].filter(([sector, w]) => {
      const want = patternFor(w.seed, w.lba, w.blocks, 512).subarray((sector - w.lba) * 512, (sector - w.lba + 1) * 512);
      return !bytes.subarray(sector * 512, (sector + 1) * 512).equals(want);
    });
    expect(missing).toEqual([]);
  }, 30_000);
});
