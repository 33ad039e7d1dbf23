/**
 * `hvemu run --control PATH`: a Unix-domain socket through which the host changes a running VM.
 * One command per line, one JSON object answered per line (`{"ok":true,...}` or
 * `{"ok":false,"error":"..."}`), so `socat - UNIX-CONNECT:PATH` or any script can drive it:
 *
 *   stats                 the balloon's figures (and whether one is there)
 *   balloon SIZE          the RAM the guest should keep (QEMU-style size: 384M, 1G); the balloon inflates or deflates toward it
 *   balloon none          no target: the balloon stays as it is (the default)
 *   hot-add SIZE          adds RAM above the guest's and offers it through the balloon (answers when the guest did)
 *   shutdown              the power button (the shutdown IC)
 *   help                  the commands
 *
 * Every input is checked: an unknown command, a bad size or a line longer than 1 KiB is an
 * error answer (the long line also closes that connection); at most 8 connections at once.
 */
import { existsSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { HvemuError } from '@hvemu/common';

/** What the control socket drives: the balloon (when the VM has one) and the power button. */
export interface ControlTarget {
  balloon?: {
    setTarget(bytes: number | null): void;
    hotAdd(bytes: number): Promise<unknown>;
    stats(): unknown;
  } | null;
  /** Asks the guest to shut down; false when it cannot be asked (no shutdown IC up yet). */
  shutdown(): boolean;
}

/** The socket path is unusable (exists, or cannot be bound). */
export class ControlSocketError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

const MAX_LINE = 1024;
const MAX_CONNECTIONS = 8;
const HELP = ['stats', 'balloon SIZE | none', 'hot-add SIZE', 'shutdown', 'help'];

export interface ControlServer {
  readonly path: string;
  close(): Promise<void>;
}

/** Listens on `path` (which must not exist); `parseSize` reads SIZE arguments. */
export async function startControlServer(
  path: string,
  target: ControlTarget,
  parseSize: (text: string) => number | null,
  log: (line: string) => void,
): Promise<ControlServer> {
  if (existsSync(path)) throw new ControlSocketError(`--control ${path}: the path exists (remove it, or name another)`);
  const sockets = new Set<Socket>();
  const server = createServer((socket) => serve(socket, sockets, target, parseSize, log));
  server.maxConnections = MAX_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) => reject(new ControlSocketError(`--control ${path}: cannot listen: ${error.message}`)));
    server.listen(path, () => resolve());
  });
  server.unref();
  return { path, close: () => closeServer(server, sockets, path) };
}

function closeServer(server: Server, sockets: Set<Socket>, path: string): Promise<void> {
  for (const s of sockets) s.destroy();
  return new Promise((resolve) =>
    server.close(() => {
      try {
        unlinkSync(path);
      } catch {
        // already gone
      }
      resolve();
    }),
  );
}

function serve(
  socket: Socket,
  sockets: Set<Socket>,
  target: ControlTarget,
  parseSize: (text: string) => number | null,
  log: (line: string) => void,
): void {
  sockets.add(socket);
  socket.unref();
  socket.on('close', () => sockets.delete(socket));
  socket.on('error', () => socket.destroy());
  let pending = '';
  // Answers go out in the order the commands came, even when one (hot-add) takes a while.
  let queue: Promise<void> = Promise.resolve();
  socket.on('data', (chunk: Buffer) => {
    pending += chunk.toString('utf8');
    let newline: number;
    while ((newline = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, newline).replace(/\r$/, '');
      pending = pending.slice(newline + 1);
      if (line.length > MAX_LINE) return refuseLong(socket);
      queue = queue.then(() => answer(socket, line, target, parseSize, log));
    }
    if (pending.length > MAX_LINE) refuseLong(socket);
  });
}

function refuseLong(socket: Socket): void {
  socket.end(`${JSON.stringify({ ok: false, error: `a command line is at most ${MAX_LINE} bytes` })}\n`);
}

async function answer(
  socket: Socket,
  line: string,
  target: ControlTarget,
  parseSize: (text: string) => number | null,
  log: (line: string) => void,
): Promise<void> {
  let reply: Record<string, unknown>;
  try {
    reply = { ok: true, ...(await run(line.trim(), target, parseSize, log)) };
  } catch (error) {
    reply = { ok: false, error: error instanceof Error ? error.message : String(error) };
  }
  if (!socket.destroyed) socket.write(`${JSON.stringify(reply, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
}

async function run(
  line: string,
  target: ControlTarget,
  parseSize: (text: string) => number | null,
  log: (line: string) => void,
): Promise<Record<string, unknown>> {
  const [command, ...args] = line.split(/\s+/);
  const size = (what: string): number => {
    const bytes = args.length === 1 ? parseSize(args[0]) : null;
    if (bytes === null || bytes <= 0 || bytes % 4096 !== 0)
      throw new Error(`${what} takes one size in whole pages (256M, 1G, bytes), not '${args.join(' ')}'`);
    return bytes;
  };
  const balloon = (): NonNullable<ControlTarget['balloon']> => {
    if (!target.balloon) throw new Error('this VM has no balloon (hvemu run --balloon)');
    return target.balloon;
  };
  switch (command) {
    case 'help':
      return { commands: HELP };
    case 'stats':
      return { balloon: target.balloon ? target.balloon.stats() : null };
    case 'balloon': {
      const bytes = args.length === 1 && args[0] === 'none' ? null : size('balloon');
      balloon().setTarget(bytes);
      log(`hvemu run: control: balloon target ${bytes === null ? 'none' : `${bytes >> 20} MiB`}`);
      return { target: bytes };
    }
    case 'hot-add': {
      const bytes = size('hot-add');
      log(`hvemu run: control: hot add ${bytes >> 20} MiB`);
      return { hotAdd: await balloon().hotAdd(bytes) };
    }
    case 'shutdown':
      if (!target.shutdown()) throw new Error('the guest has no shutdown IC up to ask');
      return {};
    case '':
      throw new Error('an empty line (commands: ' + HELP.join(', ') + ')');
    default:
      throw new Error(`unknown command '${command.slice(0, 40)}' (commands: ${HELP.join(', ')})`);
  }
}
