// Shared by the concurrency test and its producer worker: which payload each sequence number
// carries, so the consumer can check every byte.
export const DOORBELL_DATA = 0;
export const DOORBELL_SPACE = 1;

/** Payload length of packet `seq`: 0 .. about a third of the ring, varying. */
export function payloadLength(seq, dataSize) {
  const max = Math.floor(dataSize / 3);
  return (seq * 2654435761) % (max + 1);
}

export function fillPayload(seq, target, length) {
  for (let i = 0; i < length; i++) target[i] = (seq + i * 31) & 0xff;
}

export function checkPayload(seq, bytes, length) {
  if (bytes.length < length || bytes.length > ((length + 16 + 7) & ~7)) return `length ${bytes.length} for ${length}`;
  for (let i = 0; i < length; i++) if (bytes[i] !== ((seq + i * 31) & 0xff)) return `byte ${i}`;
  for (let i = length; i < bytes.length; i++) if (bytes[i] !== 0) return `padding byte ${i}`;
  return null;
}
