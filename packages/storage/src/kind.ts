/**
 * A storage controller as a registrable device kind: the VM builder, the CLI (`--disk`) and
 * replay build it by name. A disk is a file spec ({ path, readOnly, sectorSize }) or a backend
 * the caller made (an in-memory disk); addresses default to target 0, LUN = its place in the list.
 */
import { HostUsageError, type Logger } from '@hvemu/common';
import type { DeviceKind } from '@hvemu/vmbus';
import type { DiskBackend } from './backend/backend.js';
import { FileBackend } from './backend/file.js';
import { ScsiController } from './controller.js';
import { DEFAULT_SCSI_INSTANCE, StorvspDevice } from './device.js';
import { HV_SCSI_GUID } from './protocol.js';
import { ScsiDisk } from './scsi/disk.js';

/** A disk image file: what `hvemu run --disk PATH[,ro][,sector=4096]` describes. */
export interface DiskSpec {
  readonly path: string;
  readonly readOnly?: boolean;
  readonly sectorSize?: 512 | 4096;
  readonly target?: number;
  readonly lun?: number;
}

/** A disk over a backend the caller made. */
export interface BackendDiskSpec {
  readonly backend: DiskBackend;
  readonly readOnly?: boolean;
  readonly sectorSize?: 512 | 4096;
  readonly target?: number;
  readonly lun?: number;
  readonly serial?: string;
}

export interface StorageControllerSpec {
  readonly disks?: readonly (DiskSpec | BackendDiskSpec)[];
  /** The offer's if_instance (give each controller its own). */
  readonly instanceId?: string;
  readonly maxSubchannels?: number;
  readonly maxTransferBytes?: number;
}

/** The kind name a SCSI controller is offered (and traced) under. */
export const SCSI_KIND = 'scsi';

/** Builds the controller and its disks (opening image files now, so a bad path fails at configuration). */
export function createStorageController(spec: StorageControllerSpec, logger?: Logger): StorvspDevice {
  const controller = new ScsiController();
  const instanceId = spec.instanceId ?? DEFAULT_SCSI_INSTANCE;
  (spec.disks ?? []).forEach((d, i) => {
    const backend = 'backend' in d ? d.backend : FileBackend.open(d.path, { readOnly: d.readOnly });
    const disk = new ScsiDisk(backend, {
      sectorSize: d.sectorSize,
      readOnly: d.readOnly,
      serial: 'serial' in d && d.serial ? d.serial : `${instanceId.slice(0, 8)}-${d.target ?? 0}-${d.lun ?? i}`,
      maxTransferBytes: spec.maxTransferBytes,
      logger,
    });
    if (backend.byteLength % disk.sectorSize !== 0) {
      throw new HostUsageError(`disk ${i}: ${backend.byteLength} bytes is not a multiple of the ${disk.sectorSize}-byte sector`);
    }
    controller.attach({ target: d.target ?? 0, lun: d.lun ?? i }, disk);
  });
  return new StorvspDevice({
    controller,
    instanceId,
    maxSubchannels: spec.maxSubchannels,
    maxTransferBytes: spec.maxTransferBytes,
    logger,
  });
}

/** A DeviceKind offering a SCSI controller with `spec`'s disks (register it on a DeviceRegistry). */
export function storageDeviceKind(spec: StorageControllerSpec, name = SCSI_KIND): DeviceKind<StorvspDevice> {
  return {
    name,
    offer: { interfaceType: HV_SCSI_GUID, interfaceInstance: spec.instanceId ?? DEFAULT_SCSI_INSTANCE },
    create: (env) => createStorageController(spec, env.logger),
  };
}
