/**
 * A SCSI controller's bus: disks at (target, LUN) addresses, hot added and removed while the
 * guest runs. It routes each command to its LUN and answers what belongs to the target rather
 * than a disk: REPORT LUNS, and INQUIRY to an empty LUN of a target that has others (peripheral
 * qualifier 3, as SPC says, so a scan goes on). A command for a target with no disks, a path
 * other than 0, or another command for an empty LUN is refused as an invalid LUN (with LOGICAL
 * UNIT NOT SUPPORTED sense): Linux then drops that device, which is how a hot remove lands.
 */
import { HostUsageError } from '@hvemu/common';
import * as C from './scsi/cdb.js';
import { dataIn, illegalRequest, type ScsiCommand, type ScsiDisk, type ScsiResult } from './scsi/disk.js';

export interface LunAddress {
  readonly target: number;
  readonly lun: number;
}

export interface ControllerResult extends ScsiResult {
  /** No disk answers at this address (the SRB's status says INVALID_LUN). */
  readonly invalidLun?: boolean;
}

/** Linux storvsc's SCSI limits: 2 targets, 255 LUNs each (IDE: 1 target, 64 LUNs). */
export const STORVSC_MAX_TARGETS = 2;
export const STORVSC_MAX_LUNS_PER_TARGET = 255;

export class ScsiController {
  private readonly disks = new Map<number, ScsiDisk>();
  private readonly listeners = new Set<(change: 'add' | 'remove', address: LunAddress) => void>();

  constructor(
    readonly maxTargets = STORVSC_MAX_TARGETS,
    readonly maxLuns = STORVSC_MAX_LUNS_PER_TARGET,
  ) {}

  /** Puts `disk` at `address` (a hot add once the guest runs). HostUsageError if taken or out of range. */
  attach(address: LunAddress, disk: ScsiDisk): void {
    const key = this.key(address);
    if (this.disks.has(key)) throw new HostUsageError(`target ${address.target} LUN ${address.lun} has a disk already`);
    this.disks.set(key, disk);
    for (const l of this.listeners) l('add', address);
  }

  /** Takes the disk at `address` away (a hot remove); returns it. HostUsageError if there is none. */
  detach(address: LunAddress): ScsiDisk {
    const key = this.key(address);
    const disk = this.disks.get(key);
    if (!disk) throw new HostUsageError(`no disk at target ${address.target} LUN ${address.lun}`);
    this.disks.delete(key);
    for (const l of this.listeners) l('remove', address);
    return disk;
  }

  disk(address: LunAddress): ScsiDisk | undefined {
    return this.disks.get(this.key(address));
  }

  /** Every disk with its address, by target then LUN. */
  entries(): { address: LunAddress; disk: ScsiDisk }[] {
    return [...this.disks.entries()]
      .sort(([a], [b]) => a - b)
      .map(([key, disk]) => ({ address: { target: key >> 16, lun: key & 0xffff }, disk }));
  }

  lunsOf(target: number): number[] {
    return this.entries()
      .filter((e) => e.address.target === target)
      .map((e) => e.address.lun);
  }

  /** Hears every add and remove (the VSP tells the guest to rescan). Returns the unsubscribe. */
  onChange(listener: (change: 'add' | 'remove', address: LunAddress) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Runs `cmd` for the LUN the guest addressed. Never rejects for guest input. */
  async execute(pathId: number, target: number, lun: number, cmd: ScsiCommand): Promise<ControllerResult> {
    // The common case first, without building the target's LUN list.
    const disk = pathId === 0 && cmd.cdb[0] !== C.REPORT_LUNS ? this.disks.get(target * 0x10000 + lun) : undefined;
    if (disk) return disk.execute(cmd);
    const luns = pathId === 0 ? this.lunsOf(target) : [];
    if (luns.length === 0) return noLun();
    if (cmd.cdb[0] === C.REPORT_LUNS) return reportLuns(cmd, luns);
    const standardInquiry = cmd.cdb[0] === C.INQUIRY && cmd.cdb.length >= 6 && (cmd.cdb[1] & C.INQUIRY_EVPD) === 0;
    if (standardInquiry) {
      const data = C.standard_inquiry.encodeNew({ peripheral: C.PERIPHERAL_NO_LUN, response_format: 0x02, additional_length: 31 });
      return dataIn(cmd, data, C.inquiry_cdb.decode(cmd.cdb).allocation_length);
    }
    return noLun();
  }

  private key(a: LunAddress): number {
    if (!Number.isInteger(a?.target) || a.target < 0 || a.target >= this.maxTargets) {
      throw new HostUsageError(`target ${String(a?.target)} outside 0..${this.maxTargets - 1}`);
    }
    if (!Number.isInteger(a.lun) || a.lun < 0 || a.lun >= this.maxLuns)
      throw new HostUsageError(`LUN ${String(a.lun)} outside 0..${this.maxLuns - 1}`);
    return a.target * 0x10000 + a.lun;
  }
}

function noLun(): ControllerResult {
  return { ...illegalRequest(C.ASC_LOGICAL_UNIT_NOT_SUPPORTED), invalidLun: true };
}

/** REPORT LUNS: the target's LUNs in single-level format (SAM-5 peripheral device addressing). */
function reportLuns(cmd: ScsiCommand, luns: number[]): ScsiResult {
  const f = C.report_luns_cdb.decode(cmd.cdb);
  if (f.allocation_length < 16) return illegalRequest(C.ASC_INVALID_FIELD_IN_CDB);
  const out = new Uint8Array(8 + luns.length * 8);
  new DataView(out.buffer).setUint32(0, luns.length * 8, false);
  luns.forEach((lun, i) => {
    out[8 + i * 8] = lun > 0xff ? 0x40 | (lun >> 8) : 0;
    out[9 + i * 8] = lun & 0xff;
  });
  return dataIn(cmd, out, f.allocation_length);
}
