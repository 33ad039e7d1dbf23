/**
 * Integration-component (IC) wire structures, named as in Linux include/linux/hyperv.h and
 * include/uapi/linux/hyperv.h. Every IC packet's payload is vmbuspipe_hdr + icmsg_hdr + body.
 */
import { defineStruct } from '@hvemu/common';

/** struct vmbuspipe_hdr: pipe framing in front of each IC message. */
export const vmbuspipe_hdr = defineStruct('vmbuspipe_hdr', 8, [
  [0, 'flags', 'u32'], // VMBUS_PIPE_TYPE_DATA for IC messages
  [4, 'msgsize', 'u32'], // bytes after this header
]);
export const VMBUS_PIPE_TYPE_DATA = 1;

/** struct icmsg_hdr (after the pipe header). */
export const icmsg_hdr = defineStruct('icmsg_hdr', 20, [
  [0, 'icverframe_major', 'u16'],
  [2, 'icverframe_minor', 'u16'],
  [4, 'icmsgtype', 'u16'],
  [6, 'icvermsg_major', 'u16'],
  [8, 'icvermsg_minor', 'u16'],
  [10, 'icmsgsize', 'u16'],
  [12, 'status', 'u32'],
  [16, 'ictransaction_id', 'u8'],
  [17, 'icflags', 'u8'],
  [18, 'reserved', 'u16'],
]);
/** Offset of the message body in the packet payload (Linux ICMSG_HDR). */
export const ICMSG_HDR = vmbuspipe_hdr.size + icmsg_hdr.size;

export const ICMSGTYPE_NEGOTIATE = 0;
export const ICMSGTYPE_HEARTBEAT = 1;
export const ICMSGTYPE_KVPEXCHANGE = 2;
export const ICMSGTYPE_SHUTDOWN = 3;
export const ICMSGTYPE_TIMESYNC = 4;
export const ICMSGTYPE_VSS = 5;

export const ICMSGHDRFLAG_TRANSACTION = 1;
export const ICMSGHDRFLAG_REQUEST = 2;
export const ICMSGHDRFLAG_RESPONSE = 4;

export const HV_S_OK = 0x00000000;
export const HV_E_FAIL = 0x80004005;
export const HV_S_CONT = 0x80070103;
export const HV_ERROR_NOT_SUPPORTED = 0x80070032;
export const HV_ERROR_MACHINE_LOCKED = 0x800704f7;
export const HV_ERROR_DEVICE_NOT_CONNECTED = 0x8007048f;
export const HV_INVALIDARG = 0x80070057;
export const HV_GUID_NOTFOUND = 0x80041002;

/** struct icmsg_negotiate (body of ICMSGTYPE_NEGOTIATE), followed by the version lists. */
export const icmsg_negotiate = defineStruct('icmsg_negotiate', 8, [
  [0, 'icframe_vercnt', 'u16'],
  [2, 'icmsg_vercnt', 'u16'],
  [4, 'reserved', 'u32'],
]);
/** struct ic_version: one entry of the negotiate lists. */
export const ic_version = defineStruct('ic_version', 4, [
  [0, 'major', 'u16'],
  [2, 'minor', 'u16'],
]);
/** Linux refuses negotiate messages with more versions than this in either list. */
export const IC_MAX_VERSION_COUNT = 100;

/** struct shutdown_msg_data */
export const shutdown_msg_data = defineStruct('shutdown_msg_data', 2060, [
  [0, 'reason_code', 'u32'],
  [4, 'timeout_seconds', 'u32'],
  [8, 'flags', 'u32'],
  [12, 'display_message', { bytes: 2048 }],
]);
/** shutdown flags (Linux shutdown_onchannelcallback): bit 0 force; 0/1 power off, 2/3 reboot, 4/5 hibernate. */
export const SHUTDOWN_FLAG_FORCE = 1;
export const SHUTDOWN_FLAG_REBOOT = 2;
export const SHUTDOWN_FLAG_HIBERNATE = 4;

/** struct heartbeat_msg_data */
export const heartbeat_msg_data = defineStruct('heartbeat_msg_data', 40, [
  [0, 'seq_num', 'u64'],
  [8, 'reserved', { bytes: 32 }], // u32 reserved[8]
]);

/** struct ictimesync_data (service versions before 4.0) */
export const ictimesync_data = defineStruct('ictimesync_data', 25, [
  [0, 'parenttime', 'u64'],
  [8, 'childtime', 'u64'],
  [16, 'roundtriptime', 'u64'],
  [24, 'flags', 'u8'],
]);
/** struct ictimesync_ref_data (service version 4.0) */
export const ictimesync_ref_data = defineStruct('ictimesync_ref_data', 22, [
  [0, 'parenttime', 'u64'],
  [8, 'vmreferencetime', 'u64'],
  [16, 'flags', 'u8'],
  [17, 'leapflags', 'u8'],
  [18, 'stratum', 'u8'],
  [19, 'reserved', { bytes: 3 }],
]);
export const ICTIMESYNCFLAG_PROBE = 0;
export const ICTIMESYNCFLAG_SYNC = 1;
export const ICTIMESYNCFLAG_SAMPLE = 2;
/** 100 ns intervals between 1601-01-01 and 1970-01-01 (Windows FILETIME epoch). */
export const WLTIMEDELTA = 116444736000000000n;

// ---- KVP (include/uapi/linux/hyperv.h) ----
export const HV_KVP_EXCHANGE_MAX_KEY_SIZE = 512;
export const HV_KVP_EXCHANGE_MAX_VALUE_SIZE = 2048;
export const KVP_OP_GET = 0;
export const KVP_OP_SET = 1;
export const KVP_OP_DELETE = 2;
export const KVP_OP_ENUMERATE = 3;
export const KVP_OP_GET_IP_INFO = 4;
export const KVP_OP_SET_IP_INFO = 5;
export const KVP_POOL_EXTERNAL = 0;
export const KVP_POOL_GUEST = 1;
export const KVP_POOL_AUTO = 2;
export const KVP_POOL_AUTO_EXTERNAL = 3;
export const KVP_POOL_AUTO_INTERNAL = 4;
export const KVP_POOL_COUNT = 5;
export const REG_SZ = 1;
export const REG_U32 = 4;
export const REG_U64 = 8;

export const hv_kvp_hdr = defineStruct('hv_kvp_hdr', 4, [
  [0, 'operation', 'u8'],
  [1, 'pool', 'u8'],
  [2, 'pad', 'u16'],
]);
/** struct hv_kvp_exchg_msg_value */
export const hv_kvp_exchg_msg_value = defineStruct('hv_kvp_exchg_msg_value', 2572, [
  [0, 'value_type', 'u32'],
  [4, 'key_size', 'u32'],
  [8, 'value_size', 'u32'],
  [12, 'key', { bytes: HV_KVP_EXCHANGE_MAX_KEY_SIZE }],
  [524, 'value', { bytes: HV_KVP_EXCHANGE_MAX_VALUE_SIZE }],
]);
/** struct hv_kvp_msg_delete */
export const hv_kvp_msg_delete = defineStruct('hv_kvp_msg_delete', 516, [
  [0, 'key_size', 'u32'],
  [4, 'key', { bytes: HV_KVP_EXCHANGE_MAX_KEY_SIZE }],
]);
/** sizeof(struct hv_kvp_msg): header + the largest body (hv_kvp_ipaddr_value, 7426 bytes). */
export const HV_KVP_MSG_SIZE = 7430;

/** Class GUIDs (include/linux/hyperv.h) and Hyper-V's instance GUIDs for the ICs. */
export const HV_SHUTDOWN_GUID = '0e0b6031-5213-4934-818b-38d90ced39db';
export const HV_TS_GUID = '9527e630-d0ae-497b-adce-e80ab0175caf';
export const HV_HEART_BEAT_GUID = '57164f39-9115-4e78-ab55-382f3bd5422d';
export const HV_KVP_GUID = 'a9a0f4e7-5a45-4d96-b827-8a841e8c03e6';
export const SHUTDOWN_INSTANCE_GUID = 'b6650ff7-33bc-4840-8048-e0676786f393';
export const TIMESYNC_INSTANCE_GUID = '2dd1ce17-079e-403c-b352-a1921ee207ee';
export const KVP_INSTANCE_GUID = '242ff919-07db-4180-9c2e-b86cb68c8c55';
/** hvemu's own (Linux matches ICs by class GUID only). */
export const HEARTBEAT_INSTANCE_GUID = 'fd5fd8d5-6d53-4f3e-b8a5-2bd4f1c2a0e1';

/** Largest IC message either side sends (OpenVMM's MAX_MESSAGE_SIZE; KVP is the largest user). */
export const IC_MAX_MESSAGE_SIZE = 13312;
