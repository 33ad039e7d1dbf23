import { HostUsageError } from '@hvemu/common';

/**
 * Ethernet frame facts netvsp needs: header sizes, 802.1Q tags and their NDIS form
 * (ndis_pkt_8021q_info, the IEEE_8021Q_INFO PPI's value), MAC addresses.
 */

export const ETH_HLEN = 14;
/** An 802.1Q / 802.1ad tag after the MACs. */
export const VLAN_HLEN = 4;

/** 802.1Q (0x8100) or 802.1ad (0x88a8): the frame carries a 4-byte tag after the MACs. */
export function isVlanEthertype(hi: number, lo: number): boolean {
  return (hi === 0x81 && lo === 0x00) || (hi === 0x88 && lo === 0xa8);
}

/** An 802.1Q customer tag (0x8100) after the MACs: what IEEE_8021Q_INFO carries (802.1ad stays in the frame). */
export function hasCtag(frame: Uint8Array): boolean {
  return frame.length >= ETH_HLEN + VLAN_HLEN && frame[12] === 0x81 && frame[13] === 0x00;
}

/** Longer than `limit` (an untagged frame size), with room for one tag when it carries one. */
export function tooLong(frame: Uint8Array, limit: number): boolean {
  return frame.length > limit && (frame.length > limit + VLAN_HLEN || !isVlanEthertype(frame[12], frame[13]));
}

/** A tag's TCI (pcp 13-15, dei 12, vid 0-11) as ndis_pkt_8021q_info (Linux's bit layout: pri 0-2, cfi 3, vlanid 4-15). */
export function ndisVlanInfo(tci: number): number {
  return (tci >>> 13) | (((tci >>> 12) & 1) << 3) | ((tci & 0xfff) << 4);
}

/** The TCI an ndis_pkt_8021q_info names (the inverse of ndisVlanInfo). */
export function vlanTci(info: number): number {
  return ((info & 0x7) << 13) | (((info >>> 3) & 1) << 12) | ((info >>> 4) & 0xfff);
}

/** Writes an 802.1Q tag (ethertype 0x8100, then the TCI) at `at`. */
export function writeCtag(out: Uint8Array, at: number, tci: number): void {
  out[at] = 0x81;
  out[at + 1] = 0x00;
  out[at + 2] = tci >>> 8;
  out[at + 3] = tci & 0xff;
}

/** A MAC from 6 bytes or "aa:bb:cc:dd:ee:ff" (a unicast address: multicast bit clear). */
export function parseMac(mac: Uint8Array | string): Uint8Array {
  let bytes: Uint8Array;
  if (typeof mac === 'string') {
    const parts = mac.split(/[:-]/);
    if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{2}$/.test(p))) throw new HostUsageError(`netvsp: bad MAC address ${mac}`);
    bytes = Uint8Array.from(parts.map((p) => parseInt(p, 16)));
  } else bytes = mac.slice();
  if (bytes.length !== 6 || bytes[0] & 1) throw new HostUsageError('netvsp: a MAC is 6 bytes of a unicast address');
  return bytes;
}

export function formatMac(mac: Uint8Array): string {
  return [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
}
