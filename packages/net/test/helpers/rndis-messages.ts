/**
 * RNDIS control messages as a guest builds them (Linux's layout: the information buffer right
 * after the request body), and their completions decoded, for the control tests and fuzz.
 */
import {
  encodeRndisMessage,
  rndis_config_parameter_info,
  rndis_halt_request,
  rndis_initialize_request,
  rndis_keepalive_request,
  rndis_query_complete,
  rndis_query_request,
  rndis_reset_request,
  rndis_set_request,
  RNDIS_CONFIG_PARAM_TYPE_STRING,
  RNDIS_HEADER_SIZE,
  RNDIS_MSG_HALT,
  RNDIS_MSG_INIT,
  RNDIS_MSG_KEEPALIVE,
  RNDIS_MSG_QUERY,
  RNDIS_MSG_RESET,
  RNDIS_MSG_SET,
} from '@hvemu/net';

export const u32 = (b: Uint8Array, at: number): number => new DataView(b.buffer, b.byteOffset).getUint32(at, true);

export function initMessage(reqId: number, major = 1): Uint8Array {
  return encodeRndisMessage(RNDIS_MSG_INIT, rndis_initialize_request, {
    req_id: reqId,
    major_ver: major,
    minor_ver: 0,
    max_xfer_size: 0x4000,
  });
}

export function queryMessage(reqId: number, oid: number, info: Uint8Array = new Uint8Array(0)): Uint8Array {
  const value = { req_id: reqId, oid, info_buflen: info.length, info_buf_offset: rndis_query_request.size };
  return encodeRndisMessage(RNDIS_MSG_QUERY, rndis_query_request, value, info);
}

/** SET of `oid`; `place` overrides where the request says its information buffer is. */
export function setMessage(
  reqId: number,
  oid: number,
  info: Uint8Array,
  place: { info_buflen?: number; info_buf_offset?: number } = {},
): Uint8Array {
  const value = { req_id: reqId, oid, info_buflen: info.length, info_buf_offset: rndis_set_request.size, ...place };
  return encodeRndisMessage(RNDIS_MSG_SET, rndis_set_request, value, info);
}

export const keepaliveMessage = (reqId: number): Uint8Array =>
  encodeRndisMessage(RNDIS_MSG_KEEPALIVE, rndis_keepalive_request, { req_id: reqId });
export const resetMessage = (): Uint8Array => encodeRndisMessage(RNDIS_MSG_RESET, rndis_reset_request, { reserved: 0 });
export const haltMessage = (reqId: number): Uint8Array => encodeRndisMessage(RNDIS_MSG_HALT, rndis_halt_request, { req_id: reqId });

/** A QUERY_C decoded, its buffer where the completion says it is. */
export function queryAnswer(answer: Uint8Array): { reqId: number; status: number; data: Uint8Array } {
  const c = rndis_query_complete.decode(answer, RNDIS_HEADER_SIZE);
  const at = RNDIS_HEADER_SIZE + c.info_buf_offset;
  return { reqId: c.req_id, status: c.status, data: answer.slice(at, at + c.info_buflen) };
}

/** The status of a SET_C / KEEPALIVE_C / INIT_C (the u32 after the request id). */
export const answerStatus = (answer: Uint8Array): number => u32(answer, RNDIS_HEADER_SIZE + 4);

export function utf16(text: string): Uint8Array {
  const out = new Uint8Array(text.length * 2);
  for (let i = 0; i < text.length; i++) new DataView(out.buffer).setUint16(i * 2, text.charCodeAt(i), true);
  return out;
}

type ConfigFields = Parameters<typeof rndis_config_parameter_info.encode>[0];

/**
 * rndis_config_parameter_info with its name then value after it (rndis_filter_set_device_mac's
 * layout); `patch` overrides any field (hostile offsets and lengths).
 */
export function configParameter(
  name: string,
  value: Uint8Array,
  type = RNDIS_CONFIG_PARAM_TYPE_STRING,
  patch: ConfigFields = {},
): Uint8Array {
  const n = utf16(name);
  const head = rndis_config_parameter_info.size;
  const info = new Uint8Array(head + n.length + value.length);
  rndis_config_parameter_info.encode(
    {
      parameter_name_offset: head,
      parameter_name_length: n.length,
      parameter_type: type,
      parameter_value_offset: head + n.length,
      parameter_value_length: value.length,
      ...patch,
    },
    info,
  );
  info.set(n, head);
  info.set(value, head + n.length);
  return info;
}

/** NetworkAddress as Linux sends it: 12 hex digits ("%pm"), UTF-16. */
export const networkAddress = (hex: string): Uint8Array => configParameter('NetworkAddress', utf16(hex));
