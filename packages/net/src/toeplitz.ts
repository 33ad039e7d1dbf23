/**
 * vRSS on the host: the Toeplitz hash NDIS specifies (the guest gives the 40-byte key in
 * OID_GEN_RECEIVE_SCALE_PARAMETERS), over the fields its hash types name (IPv4/IPv6 addresses,
 * plus TCP ports for the TCP types), and which queue a frame goes to (indirection table entry
 * hash % entries). The hash travels with the frame as the NBL_HASH_VALUE PPI.
 */
import { NDIS_HASH_IPV4, NDIS_HASH_IPV6, NDIS_HASH_TCP_IPV4, NDIS_HASH_TCP_IPV6 } from './rndis.js';

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const ETH_P_8021Q = 0x8100;
const IPPROTO_TCP = 6;

/** Toeplitz hash of `input[from, from + length)` with `key` (which must be >= length + 4 bytes). */
export function toeplitz(
  key: Uint8Array,
  input: Uint8Array,
  from: number,
  length: number,
  seed = 0,
  keyAt = 0,
): { hash: number; keyAt: number } {
  let hash = seed;
  // The 32-bit window of the key starting at the current input bit.
  let window = ((key[keyAt] << 24) | (key[keyAt + 1] << 16) | (key[keyAt + 2] << 8) | key[keyAt + 3]) >>> 0;
  let next = keyAt + 4;
  for (let i = 0; i < length; i++) {
    const byte = input[from + i];
    const nextKey = next < key.length ? key[next] : 0;
    for (let bit = 7; bit >= 0; bit--) {
      if ((byte >>> bit) & 1) hash = (hash ^ window) >>> 0;
      window = ((window << 1) | ((nextKey >>> bit) & 1)) >>> 0;
    }
    next++;
  }
  return { hash, keyAt: next - 4 };
}

/**
 * The RSS hash of an Ethernet frame under `hashInfo` (NDIS_HASH_* bits), or null when the
 * frame is not a type the guest asked to hash (ARP, a fragment's ports, a short frame):
 * such frames go to the default queue.
 */
export function rssHash(key: Uint8Array, hashInfo: number, frame: Uint8Array): number | null {
  let l3 = 14;
  if (frame.length < l3) return null;
  let ethertype = (frame[12] << 8) | frame[13];
  if (ethertype === ETH_P_8021Q && frame.length >= 18) {
    ethertype = (frame[16] << 8) | frame[17];
    l3 = 18;
  }
  if (ethertype === ETH_P_IP) return ipv4Hash(key, hashInfo, frame, l3);
  if (ethertype === ETH_P_IPV6) return ipv6Hash(key, hashInfo, frame, l3);
  return null;
}

function ipv4Hash(key: Uint8Array, hashInfo: number, f: Uint8Array, l3: number): number | null {
  if (f.length < l3 + 20 || f[l3] >> 4 !== 4) return null;
  const ihl = (f[l3] & 0xf) * 4;
  const fragment = (((f[l3 + 6] & 0x3f) << 8) | f[l3 + 7]) !== 0;
  const tcp = f[l3 + 9] === IPPROTO_TCP && !fragment && f.length >= l3 + ihl + 4;
  if (tcp && hashInfo & NDIS_HASH_TCP_IPV4) return l4Hash(key, f, l3 + 12, 8, l3 + ihl);
  if (hashInfo & NDIS_HASH_IPV4) return toeplitz(key, f, l3 + 12, 8).hash;
  return null;
}

function ipv6Hash(key: Uint8Array, hashInfo: number, f: Uint8Array, l3: number): number | null {
  if (f.length < l3 + 40 || f[l3] >> 4 !== 6) return null;
  // Only a TCP header right after the fixed header is hashed with its ports (no extension walk).
  const tcp = f[l3 + 6] === IPPROTO_TCP && f.length >= l3 + 44;
  if (tcp && hashInfo & NDIS_HASH_TCP_IPV6) return l4Hash(key, f, l3 + 8, 32, l3 + 40);
  if (hashInfo & NDIS_HASH_IPV6) return toeplitz(key, f, l3 + 8, 32).hash;
  return null;
}

/** Addresses then source and destination ports, as one Toeplitz input. */
function l4Hash(key: Uint8Array, f: Uint8Array, addrs: number, addrLength: number, l4: number): number {
  const first = toeplitz(key, f, addrs, addrLength);
  return toeplitz(key, f, l4, 4, first.hash, first.keyAt).hash;
}
