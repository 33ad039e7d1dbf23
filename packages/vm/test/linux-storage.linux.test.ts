/**
 * Linux's hv_storvsc as the client of hvemu's storvsp (@hvemu/storage), over real image files
 * made with Debian's mkfs.ext4: the kernel sees each disk with its capacity and logical sector
 * size, reads the partition table, and mounts the ext4 filesystem as its root read-write (or
 * read-only from a read-only disk); afterwards the image passes `e2fsck -fn` once its journal is
 * replayed. Opt-in (`npm run test:linux`).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { FileBackend, ScsiDisk, type StorvspDevice } from '@hvemu/storage';
import { LinuxVm, type LinuxVmEnd } from '@hvemu/vm';
import { describeKvm } from './helpers/hv-guest.js';
import { TEST_CMDLINE_BASE, testKernel, until } from './helpers/linux.js';

const dir = mkdtempSync(join(tmpdir(), 'hvemu-linux-disk-'));

/** An ext4 image of `mib` MiB with a file in it (mkfs.ext4 -d), `blockSize` bytes per filesystem block. */
function ext4Image(name: string, mib: number, blockSize = 4096): string {
  const content = join(dir, `${name}-root`);
  mkdirSync(content, { recursive: true });
  writeFileSync(join(content, 'hello.txt'), 'hvemu storage\n');
  const image = join(dir, `${name}.img`);
  execFileSync('mkfs.ext4', ['-q', '-F', '-b', String(blockSize), '-L', name, '-d', content, image, `${mib}M`]);
  return image;
}

/**
 * A disk image of `mib` MiB with an MBR partition table: one Linux partition (type 0x83) from
 * 1 MiB to the end, addressed in the disk's logical sectors (the MBR is in the first one).
 */
function partitionedImage(name: string, mib: number, sectorSize: 512 | 4096): string {
  const image = join(dir, `${name}.img`);
  const mbr = Buffer.alloc(512);
  const entry = 446;
  const first = (1 << 20) / sectorSize;
  mbr.set([0x00, 0xfe, 0xff, 0xff, 0x83, 0xfe, 0xff, 0xff], entry); // not bootable; CHS unused (LBA only); type; CHS unused
  mbr.writeUInt32LE(first, entry + 8);
  mbr.writeUInt32LE((mib << 20) / sectorSize - first, entry + 12);
  mbr.writeUInt16LE(0xaa55, 510);
  writeFileSync(image, mbr);
  truncateSync(image, mib << 20);
  return image;
}

/** e2fsck's verdict on a copy of `image`: the journal replayed first (as a mount would), then a full read-only check. */
function fsck(image: string): { status: number; output: string } {
  const copy = `${image}.fsck`;
  copyFileSync(image, copy);
  try {
    execFileSync('e2fsck', ['-E', 'journal_only', '-y', copy], { stdio: 'pipe' });
  } catch {
    // journal_only exits non-zero when it replayed something; the full check below is the verdict.
  }
  try {
    return { status: 0, output: execFileSync('e2fsck', ['-fn', copy], { encoding: 'utf8', stdio: 'pipe' }) };
  } catch (error) {
    const e = error as { status: number; stdout: string; stderr: string };
    return { status: e.status, output: e.stdout + e.stderr };
  }
}

/** Boots the test kernel with `disks`, root on sda; no init exists, so the kernel panics once the root is mounted. */
async function bootWithRoot(
  disks: { path: string; readOnly?: boolean; sectorSize?: 512 | 4096 }[],
  rootFlags: string,
): Promise<{ end: LinuxVmEnd; log: string }> {
  let log = '';
  const vm = new LinuxVm({
    kernel: readFileSync(testKernel()),
    commandLine: `${TEST_CMDLINE_BASE} root=/dev/sda rootfstype=ext4 rootwait ${rootFlags}`,
    ramBytes: 256 << 20,
    storage: { disks },
    console: (b) => (log += String.fromCharCode(b)),
  });
  try {
    return { end: await vm.run(20 * 60_000), log };
  } finally {
    await vm.close();
  }
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

describeKvm("Linux's hv_storvsc on hvemu's storvsp", () => {
  it('mounts an ext4 root read-write from a 512-byte-sector disk; a second disk of 4096-byte sectors and its partition table are read; the image checks clean', async () => {
    const root = ext4Image('root', 64);
    const data = partitionedImage('data', 32, 4096);
    const { end, log } = await bootWithRoot([{ path: root }, { path: data, sectorSize: 4096 }], 'rw');
    expect(log, log.slice(-4000)).toMatch(/sd 0:0:0:0: \[sda\] 131072 512-byte logical blocks/);
    expect(log).toMatch(/sd 0:0:0:1: \[sdb\] 8192 4096-byte logical blocks/);
    expect(log).toMatch(/ sdb: sdb1/); // the MBR, in 4096-byte sectors, read through hvemu
    expect(log).toMatch(/\[sda\] Attached SCSI disk/);
    expect(log).toMatch(/EXT4-fs \(sda\): mounted filesystem/);
    expect(log).toMatch(/VFS: Mounted root \(ext4 filesystem\) on device 8:0/);
    // No init on the disk: the kernel's next step after mounting is this panic, reported from the crash MSRs.
    expect(end.kind).toBe('crash');
    expect(log).toMatch(/No working init found/);
    const check = fsck(root);
    expect(check.status, check.output).toBe(0);
  });

  it('a read-only disk mounts read-only, and its image is not written', async () => {
    const root = ext4Image('ro', 32);
    const before = sha256(root);
    const { end, log } = await bootWithRoot([{ path: root, readOnly: true }], 'ro');
    expect(log, log.slice(-4000)).toMatch(/\[sda\] Write Protect is on/);
    expect(log).toMatch(/VFS: Mounted root \(ext4 filesystem\) readonly on device 8:0/);
    expect(end.kind).toBe('crash');
    expect(sha256(root)).toBe(before);
  });

  it('with 2 vCPUs opens a subchannel, and sees a LUN the host hot-adds and then hot-removes', async () => {
    const first = ext4Image('hp0', 16);
    const extra = partitionedImage('hp1', 16, 512);
    let log = '';
    // One subchannel per vCPU beyond the first (Linux's default is one per 4); root=/dev/sdz never
    // appears, so the kernel waits, alive, for the host's changes.
    const vm = new LinuxVm({
      kernel: readFileSync(testKernel()),
      commandLine: `${TEST_CMDLINE_BASE} root=/dev/sdz rootwait hv_storvsc.storvsc_vcpus_per_sub_channel=1`,
      cpus: 2,
      storage: { disks: [{ path: first }] },
      console: (b) => (log += String.fromCharCode(b)),
    });
    const ended = vm.run(25 * 60_000);
    const backend = FileBackend.open(extra);
    try {
      const storvsp = vm.vm.devices.get('scsi')!.device as StorvspDevice;
      await until(() => log.includes('Waiting for root device'), 20 * 60_000);
      expect(log, log.slice(-4000)).toMatch(/smp: Brought up 1 node, 2 CPUs/);
      expect(log).toMatch(/sd 0:0:0:0: \[sda\] Attached SCSI disk/);
      expect(storvsp.openChannels.map((c) => c.subchannelIndex)).toEqual([0, 1]);

      const rescans = storvsp.stats.rescans;
      storvsp.controller.attach({ target: 0, lun: 1 }, new ScsiDisk(backend));
      await until(() => /\[sdb\] Attached SCSI disk/.test(log), 5 * 60_000);
      expect(storvsp.stats.rescans).toBe(rescans + 1);
      expect(log, log.slice(-3000)).toMatch(/sd 0:0:0:1: \[sdb\] 32768 512-byte logical blocks/);
      expect(log).toMatch(/ sdb: sdb1/);

      const before = log.length;
      storvsp.controller.detach({ target: 0, lun: 1 });
      // storvsc_host_scan's TEST UNIT READY gets INVALID_LUN, and Linux removes the device:
      // sd_remove's last flush (to a LUN already gone, so it fails) is its trace in the log.
      await until(() => /sd 0:0:0:1: \[sdb\] Synchronizing SCSI cache/.test(log.slice(before)), 5 * 60_000);
      expect(log.slice(before), log.slice(-3000)).toMatch(/sd 0:0:0:1: \[sdb\] Synchronizing SCSI cache/);
      expect(storvsp.stats.rescans).toBe(rescans + 2);
      // Linux sends each SRB on the channel of the CPU issuing it: both queues carried I/O.
      const [primary, sub] = storvsp.openChannels;
      expect(primary.srbs).toBeGreaterThan(0);
      expect(sub.srbs, JSON.stringify(storvsp.openChannels)).toBeGreaterThan(0);
    } finally {
      vm.stop();
      await ended;
      await vm.close();
      await backend.close();
    }
  });
});
