/**
 * The IC framework shared by every service: building host messages, validating guest
 * responses, and the version negotiation both sides run first.
 */
import { HvemuError } from '@hvemu/common';
import {
  ic_version,
  IC_MAX_MESSAGE_SIZE,
  IC_MAX_VERSION_COUNT,
  ICMSG_HDR,
  icmsg_hdr,
  icmsg_negotiate,
  ICMSGHDRFLAG_REQUEST,
  ICMSGHDRFLAG_RESPONSE,
  ICMSGHDRFLAG_TRANSACTION,
  ICMSGTYPE_NEGOTIATE,
  VMBUS_PIPE_TYPE_DATA,
  vmbuspipe_hdr,
} from './protocol.js';

export interface IcVersion {
  major: number;
  minor: number;
}

export const versionText = (v: IcVersion): string => `${v.major}.${v.minor}`;
const sameVersion = (a: IcVersion, b: IcVersion): boolean => a.major === b.major && a.minor === b.minor;

/** A guest IC message that breaks the framework: dropped and logged; the service waits or times out. */
export class IcProtocolError extends HvemuError {
  readonly outcome = 'message-dropped' as const;
}

export interface IcHeader {
  framework: IcVersion;
  messageType: number;
  messageVersion: IcVersion;
  messageSize: number;
  status: number;
  transactionId: number;
  flags: number;
}

/** Builds a complete IC packet payload: pipe header, IC header, body. */
export function buildIcMessage(header: Omit<IcHeader, 'messageSize'>, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(ICMSG_HDR + body.length);
  vmbuspipe_hdr.encode({ flags: VMBUS_PIPE_TYPE_DATA, msgsize: icmsg_hdr.size + body.length }, out, 0);
  icmsg_hdr.encode(
    {
      icverframe_major: header.framework.major,
      icverframe_minor: header.framework.minor,
      icmsgtype: header.messageType,
      icvermsg_major: header.messageVersion.major,
      icvermsg_minor: header.messageVersion.minor,
      icmsgsize: body.length,
      status: header.status >>> 0,
      ictransaction_id: header.transactionId & 0xff,
      icflags: header.flags,
    },
    out,
    vmbuspipe_hdr.size,
  );
  out.set(body, ICMSG_HDR);
  return out;
}

/** Parses and checks the framing of an IC packet payload from the guest. */
export function parseIcMessage(payload: Uint8Array): { header: IcHeader; body: Uint8Array } {
  if (payload.length < ICMSG_HDR) throw new IcProtocolError(`IC message of ${payload.length} bytes is shorter than its headers`);
  if (payload.length > IC_MAX_MESSAGE_SIZE)
    throw new IcProtocolError(`IC message of ${payload.length} bytes exceeds ${IC_MAX_MESSAGE_SIZE}`);
  const h = icmsg_hdr.decode(payload, vmbuspipe_hdr.size);
  const header: IcHeader = {
    framework: { major: h.icverframe_major, minor: h.icverframe_minor },
    messageType: h.icmsgtype,
    messageVersion: { major: h.icvermsg_major, minor: h.icvermsg_minor },
    messageSize: h.icmsgsize,
    status: h.status,
    transactionId: h.ictransaction_id,
    flags: h.icflags,
  };
  // The guest answers in the buffer it was sent: the body is whatever follows the headers
  // (ring payloads are padded to 8 bytes, so it may be longer than icmsgsize).
  return { header, body: payload.subarray(ICMSG_HDR) };
}

/** Host request flags. */
export const HOST_REQUEST_FLAGS = ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_REQUEST;
/** What the guest sets in its answer (Linux: TRANSACTION | RESPONSE). */
export function isResponse(flags: number): boolean {
  return (flags & ICMSGHDRFLAG_RESPONSE) !== 0;
}

/** The body of a NEGOTIATE message: framework versions, then service versions. */
export function encodeNegotiate(frameworks: readonly IcVersion[], services: readonly IcVersion[]): Uint8Array {
  const body = new Uint8Array(icmsg_negotiate.size + 4 * (frameworks.length + services.length));
  icmsg_negotiate.encode({ icframe_vercnt: frameworks.length, icmsg_vercnt: services.length }, body, 0);
  [...frameworks, ...services].forEach((v, i) => ic_version.encode(v, body, icmsg_negotiate.size + 4 * i));
  return body;
}

export function decodeNegotiate(body: Uint8Array): { frameworks: IcVersion[]; services: IcVersion[] } {
  const n = icmsg_negotiate.decode(body);
  if (n.icframe_vercnt > IC_MAX_VERSION_COUNT || n.icmsg_vercnt > IC_MAX_VERSION_COUNT) {
    throw new IcProtocolError(`negotiate lists ${n.icframe_vercnt}/${n.icmsg_vercnt} versions (max ${IC_MAX_VERSION_COUNT})`);
  }
  const count = n.icframe_vercnt + n.icmsg_vercnt;
  if (body.length < icmsg_negotiate.size + 4 * count)
    throw new IcProtocolError(`negotiate body of ${body.length} bytes for ${count} versions`);
  const all = Array.from({ length: count }, (_, i) => ic_version.decode(body, icmsg_negotiate.size + 4 * i));
  return { frameworks: all.slice(0, n.icframe_vercnt), services: all.slice(n.icframe_vercnt) };
}

/** The negotiate request a host sends first (framework 1.0 header, like Hyper-V). */
export function buildNegotiateRequest(transactionId: number, frameworks: readonly IcVersion[], services: readonly IcVersion[]): Uint8Array {
  return buildIcMessage(
    {
      framework: { major: 1, minor: 0 },
      messageType: ICMSGTYPE_NEGOTIATE,
      messageVersion: { major: 1, minor: 0 },
      status: 0,
      transactionId,
      flags: HOST_REQUEST_FLAGS,
    },
    encodeNegotiate(frameworks, services),
  );
}

/**
 * What the guest chose, from its negotiate response: one framework and one service version,
 * both of which the host offered; null when the guest found no common version.
 */
export function chosenVersions(
  body: Uint8Array,
  offered: { frameworks: readonly IcVersion[]; services: readonly IcVersion[] },
): { framework: IcVersion; service: IcVersion } | null {
  const { frameworks, services } = decodeNegotiate(body);
  if (frameworks.length === 0 || services.length === 0) return null;
  const framework = frameworks[0];
  const service = services[0];
  if (!offered.frameworks.some((v) => sameVersion(v, framework)) || !offered.services.some((v) => sameVersion(v, service))) {
    throw new IcProtocolError(`guest chose ${versionText(framework)}/${versionText(service)}, which the host did not offer`);
  }
  return { framework, service };
}

/** The guest side of negotiation (Linux vmbus_prep_negotiate_resp): its first version the host also lists. */
export function guestNegotiate(
  hostBody: Uint8Array,
  guest: { frameworks: readonly IcVersion[]; services: readonly IcVersion[] },
): { body: Uint8Array; chosen: { framework: IcVersion; service: IcVersion } | null } {
  const host = decodeNegotiate(hostBody);
  const framework = guest.frameworks.find((g) => host.frameworks.some((h) => sameVersion(g, h)));
  const service = guest.services.find((g) => host.services.some((h) => sameVersion(g, h)));
  if (!framework || !service) return { body: encodeNegotiate([], []), chosen: null };
  return { body: encodeNegotiate([framework], [service]), chosen: { framework, service } };
}
