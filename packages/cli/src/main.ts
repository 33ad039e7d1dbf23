#!/usr/bin/env node
/**
 * The `hvemu` command line: `demo` (what `npm start` runs), `run` (a Linux kernel), `replay`,
 * `trace show`, `ring-demo`.
 *
 * Each verb declares its options once (a util.parseArgs table) and its positional arguments;
 * anything else (an unknown or misspelt flag, a flag without its value, a value where none is
 * taken, an extra or missing positional, a malformed number or direction) is refused before
 * the verb runs, with one line naming the valid form, exit code 2. Errors while a verb runs
 * are one line too (no stack trace; HVEMU_DEBUG=1 prints it).
 */
import { closeSync, openSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { HvemuError } from '@hvemu/common';
import type { ShowFilter } from './trace-show.js';
// The verbs load what they need when they run: a refused command line costs a Node start-up, not the whole emulator.

type OptionTable = NonNullable<ParseArgsConfig['options']>;
type Values = Record<string, string | boolean | undefined>;

interface Verb {
  /** The valid form, as usage errors name it. */
  usage: string;
  /** What it does, for `hvemu help`. */
  help: string;
  options: OptionTable;
  /** Names of the positional arguments, all required, in order. */
  positionals: string[];
  run(values: Values, positionals: string[]): Promise<number> | number;
}

/** A command line that names no valid form of the command: exit code 2, one line. */
class UsageError extends HvemuError {
  readonly outcome = 'host-error' as const;
}

const HELP_OPTION: OptionTable = { help: { type: 'boolean', short: 'h' } };

const VERBS: Record<string, Verb> = {
  demo: {
    usage: 'hvemu demo [--sim] [--trace FILE]',
    help: `a VM with the integration components and a Linux-like guest, printed as a timeline:
a KVM guest where /dev/kvm works, else (or with --sim) the simulated partition;
--trace captures a VMBus trace to FILE`,
    options: { sim: { type: 'boolean' }, trace: { type: 'string' } },
    positionals: [],
    run: demo,
  },
  replay: {
    usage: 'hvemu replay TRACE [--device NAME] [--json]',
    help: `rebuilds the trace's devices on a fresh host, drives it with the recorded guest
events and VMM calls, and compares everything the host does with the recording;
prints the first divergence; exit code 0 when the whole trace matches, 1 on a
divergence, 2 when the trace cannot be replayed; --device replays one device's
channel alone; --json prints one JSON object`,
    options: { device: { type: 'string' }, json: { type: 'boolean' } },
    positionals: ['TRACE'],
    run: replay,
  },
  'trace show': {
    usage: 'hvemu trace show FILE [--json] [--relid N] [--direction guest-to-host|host-to-guest] [--from SECONDS] [--to SECONDS]',
    help: `a trace as a readable timeline (times in reference-time seconds), streamed;
--json prints JSON Lines (header, each event, dropped notices, footer, summary)`,
    options: {
      json: { type: 'boolean' },
      relid: { type: 'string' },
      direction: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
    },
    positionals: ['FILE'],
    run: traceShow,
  },
  run: {
    usage:
      'hvemu run --kernel FILE [--cmdline TEXT] [--initrd FILE] [--memory SIZE] [--cpus N] [--timeout SECONDS] [--disk PATH[,ro][,sector=4096]]... [--net tap=NAME[,mac=MAC]]... [--balloon] [--control SOCKET] [--devices LIST] [--trace FILE] [--events]',
    help: `boots a Linux kernel (an uncompressed vmlinux through its PVH entry, or a bzImage)
on KVM with hvemu's Hyper-V, VMBus and integration components, ACPI and a COM1 console on
stdout; --memory takes QEMU-style sizes (256M, 8G; default 256M), --cpus (default 1),
--timeout in seconds (default 600), --disk a raw image on the synthetic SCSI controller
(repeatable: /dev/sda, /dev/sdb, ...; ro: read-only; sector=4096: 4 KiB logical sectors),
--net a synthetic NIC on a Linux TAP (repeatable: eth0, eth1, ...; the TAP is created if
missing and needs CAP_NET_ADMIN; mac= its address, default 00:15:5d:00:00:01, :02, ...),
--balloon offers dynamic memory (hv_balloon; it does nothing until given a target),
--control a Unix socket taking one command per line while the VM runs (balloon SIZE|none,
hot-add SIZE, stats, shutdown, help; one JSON answer per line),
--devices the VMBus devices to offer, comma-separated
(default: every integration component), --trace records the session for hvemu replay,
--events logs the host's side (offers, VMBus actions, the end) on stderr; exit code 0
powered off, 3 reset, 4 crashed (the Hyper-V crash MSRs and the guest's panic message),
5 timed out, 6 triple fault, 7 emulation failure (registers and instruction bytes on
stderr), 8 stopped (a second SIGINT/SIGTERM; the first asks the guest to shut down
through the shutdown IC), 1 failed otherwise, 2 a command line or file hvemu cannot use`,
    options: {
      disk: { type: 'string', multiple: true },
      net: { type: 'string', multiple: true },
      balloon: { type: 'boolean' },
      control: { type: 'string' },
      devices: { type: 'string' },
      trace: { type: 'string' },
      events: { type: 'boolean' },
      kernel: { type: 'string' },
      cmdline: { type: 'string' },
      initrd: { type: 'string' },
      memory: { type: 'string' },
      cpus: { type: 'string' },
      timeout: { type: 'string' },
    },
    positionals: [],
    run: runVerb,
  },
  'ring-demo': {
    usage: 'hvemu ring-demo',
    help: 'a simulated guest and host exchanging packets over one VMBus ring pair',
    options: {},
    positionals: [],
    run: ringDemo,
  },
  help: {
    usage: 'hvemu help',
    help: 'this text',
    options: {},
    positionals: [],
    run: () => {
      process.stdout.write(USAGE);
      return 0;
    },
  },
};

const USAGE = `usage: hvemu <command>

commands:
${Object.values(VERBS)
  .map((v) => `  ${v.usage.replace(/^hvemu /, '')}\n${v.help.replace(/^/gm, '              ')}`)
  .join('\n')}
`;

async function main(argv: string[]): Promise<number> {
  const [command = 'help', ...rest] = argv;
  if (command === '--help' || command === '-h') return VERBS.help.run({}, []);
  let name = command;
  let args = rest;
  if (command === 'trace') {
    const [sub, ...more] = rest;
    if (sub !== 'show')
      return usageError('hvemu trace', sub === undefined ? 'missing subcommand' : `unknown subcommand '${sub}'`, VERBS['trace show'].usage);
    name = 'trace show';
    args = more;
  }
  const verb = Object.hasOwn(VERBS, name) ? VERBS[name] : undefined;
  if (!verb) {
    process.stderr.write(`hvemu: unknown command '${command}' (commands: ${Object.keys(VERBS).join(', ')}; see hvemu help)\n`);
    return 2;
  }
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseCommandLine(verb, args);
  } catch (error) {
    if (error instanceof UsageError) return usageError(`hvemu ${name}`, error.message, verb.usage);
    throw error;
  }
  if (parsed.values.help) {
    process.stdout.write(`usage: ${verb.usage}\n${verb.help}\n`);
    return 0;
  }
  try {
    return await verb.run(parsed.values, parsed.positionals);
  } catch (error) {
    if (error instanceof UsageError) return usageError(`hvemu ${name}`, error.message, verb.usage);
    return failure(`hvemu ${name}`, error);
  }
}

/** Parses `args` against the verb's table; every way to miss the valid form is a UsageError. */
function parseCommandLine(verb: Verb, args: string[]): { values: Values; positionals: string[] } {
  let result;
  try {
    result = parseArgs({ args, options: { ...verb.options, ...HELP_OPTION }, strict: true, allowPositionals: true, tokens: true });
  } catch (error) {
    // Node's messages run on ("... To specify a positional argument ..."): the first sentence names the problem.
    const message = (error as Error).message ?? String(error);
    const ambiguous = /^Option '(-[^' ]+)[^']*' argument is ambiguous/.exec(message);
    if (ambiguous)
      throw new UsageError(
        `option ${ambiguous[1]} needs a value, and the next argument is a flag (write ${ambiguous[1]}=VALUE for a value starting with '-')`,
      );
    const first = message.split(/\.\s|\n/)[0];
    throw new UsageError(first.charAt(0).toLowerCase() + first.slice(1));
  }
  const seen = new Set<string>();
  for (const token of result.tokens ?? []) {
    if (token.kind !== 'option' || verb.options[token.name]?.multiple) continue;
    if (seen.has(token.name)) throw new UsageError(`option --${token.name} given twice`);
    seen.add(token.name);
  }
  const values = result.values as Values;
  if (values.help) return { values, positionals: [] };
  const { positionals } = result;
  if (positionals.length < verb.positionals.length) throw new UsageError(`missing ${verb.positionals[positionals.length]}`);
  if (positionals.length > verb.positionals.length) throw new UsageError(`unexpected argument '${positionals[verb.positionals.length]}'`);
  for (const [i, p] of positionals.entries()) if (p === '') throw new UsageError(`${verb.positionals[i]} is empty`);
  for (const [key, value] of Object.entries(values)) {
    if (value === '') throw new UsageError(`--${key} needs a non-empty value`);
  }
  return { values, positionals };
}

function usageError(who: string, message: string, usage: string): number {
  process.stderr.write(`${who}: ${message} (usage: ${usage})\n`);
  return 2;
}

/** An error while a verb ran, in one line: exit 2 for what the caller gave (a file that is not there, not a trace, not writable), 1 otherwise. */
function failure(who: string, error: unknown): number {
  const message = error instanceof Error ? error.message : String(error);
  if (process.env.HVEMU_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
  if (error instanceof HvemuError) {
    process.stderr.write(`${who}: ${oneLine(message)}\n`);
    return 2;
  }
  process.stderr.write(`${who}: internal error: ${oneLine(message)} (HVEMU_DEBUG=1 prints the stack)\n`);
  return 1;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, '; ');
}

async function demo(values: Values): Promise<number> {
  const { kvmAvailable, runKvmDemo } = await import('./kvm-demo.js');
  const { runVmDemo } = await import('./vm-demo.js');
  const trace = values.trace as string | undefined;
  // The trace file first: an unwritable path fails here, in one line, before any VM starts.
  if (trace !== undefined) await checkTraceWritable(trace);
  const kvm = kvmAvailable();
  if (kvm.ok && !values.sim) {
    process.stdout.write(
      'hvemu demo: a KVM guest (C, Linux-like VMBus and IC drivers) with heartbeat, shutdown, timesync and KVP offered\n\n',
    );
    const r = await runKvmDemo((line) => process.stdout.write(`${line}\n`), trace);
    return r.exitCode === 0 && r.shutdownStatus === 0 ? 0 : 1;
  }
  const why = kvm.ok ? '--sim' : `no usable KVM here: ${kvm.reason}`;
  process.stdout.write('hvemu demo: a VM with heartbeat, shutdown, timesync and KVP integration components\n');
  process.stdout.write(`(simulated partition and a Linux-like TypeScript guest; ${why})\n\n`);
  const r = await runVmDemo((line) => process.stdout.write(`${line}\n`), trace);
  return r.shutdownStatus === 0 && r.heartbeats === 3 ? 0 : 1;
}

async function checkTraceWritable(path: string): Promise<void> {
  const { TraceOutputError } = await import('@hvemu/trace');
  try {
    closeSync(openSync(path, 'w'));
  } catch (error) {
    throw new TraceOutputError(path, error);
  }
}

/** `--devices a,b`: known VMBus device kinds, each once; undefined means the default set. */
async function parseDeviceList(text: string | undefined, withStorage: boolean): Promise<string[] | undefined> {
  if (text === undefined) return undefined;
  const { defaultDevices } = await import('@hvemu/vm');
  const names = text.split(',').map((n) => n.trim());
  const known = defaultDevices(withStorage ? { storage: {} } : {}).names;
  for (const name of names) {
    if (!known.includes(name)) throw new UsageError(`--devices: '${name}' is not a VMBus device kind (${known.join(', ')})`);
  }
  if (new Set(names).size !== names.length) throw new UsageError(`--devices ${text} names a device twice`);
  return names;
}

/** `--disk PATH[,ro][,sector=512|4096]`: one disk of the SCSI controller (targets in order: sda, sdb, ...). */
function parseDisk(text: string): { path: string; readOnly: boolean; sectorSize: 512 | 4096 } {
  const [path, ...flags] = text.split(',');
  if (!path) throw new UsageError(`--disk ${text}: the image path comes first (PATH[,ro][,sector=4096])`);
  let readOnly = false;
  let sectorSize: 512 | 4096 = 512;
  for (const flag of flags) {
    if (flag === 'ro') readOnly = true;
    else if (flag === 'sector=512' || flag === 'sector=4096') sectorSize = Number(flag.slice(7)) as 512 | 4096;
    else throw new UsageError(`--disk ${text}: '${flag}' is not ro, sector=512 or sector=4096`);
  }
  return { path, readOnly, sectorSize };
}

/** Linux's IFNAMSIZ less the NUL: the longest interface name. */
const MAX_IFNAME = 15;

/**
 * `--net tap=NAME[,mac=MAC]`: one NIC (eth0, eth1, ... in order) on the TAP NAME. The default
 * MAC is Hyper-V's OUI 00:15:5d with the NIC's number, so two NICs never share one.
 */
function parseNic(text: string, index: number): { tap: string; mac: string } {
  const [first, ...flags] = text.split(',');
  const tap = first.startsWith('tap=') ? first.slice(4) : '';
  if (!tap) throw new UsageError(`--net ${text}: the TAP comes first (tap=NAME[,mac=MAC])`);
  if (tap.length > MAX_IFNAME || !/^[A-Za-z0-9_.-]+$/.test(tap) || tap === '.' || tap === '..')
    throw new UsageError(`--net ${text}: '${tap}' is not an interface name (1-${MAX_IFNAME} of A-Z a-z 0-9 _ . -)`);
  let mac = `00:15:5d:00:00:${(index + 1).toString(16).padStart(2, '0')}`;
  for (const flag of flags) {
    if (!flag.startsWith('mac=')) throw new UsageError(`--net ${text}: '${flag}' is not mac=MAC`);
    mac = flag.slice(4);
    const octets = mac.split(':');
    if (octets.length !== 6 || !octets.every((o) => /^[0-9a-fA-F]{2}$/.test(o)))
      throw new UsageError(`--net ${text}: '${mac}' is not a MAC address (six hex octets with ':')`);
    if (parseInt(octets[0], 16) & 1) throw new UsageError(`--net ${text}: ${mac} is a multicast address, not a NIC's`);
  }
  return { tap, mac };
}

async function runVerb(values: Values): Promise<number> {
  const { parseSize, runLinux } = await import('./run.js');
  const kernel = values.kernel as string | undefined;
  if (kernel === undefined) throw new UsageError('--kernel FILE is required');
  const memoryBytes = parseSize((values.memory as string | undefined) ?? '256M');
  if (memoryBytes === null || memoryBytes % 4096 !== 0 || memoryBytes < 16 << 20) {
    throw new UsageError(`--memory ${String(values.memory)} is not a size of at least 16M in whole pages (256M, 8G, bytes)`);
  }
  const cpus = Number((values.cpus as string | undefined) ?? '1');
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 255)
    throw new UsageError(`--cpus ${String(values.cpus)} is not an integer from 1 to 255`);
  const timeoutSeconds = Number((values.timeout as string | undefined) ?? '600');
  if (!(timeoutSeconds > 0 && Number.isFinite(timeoutSeconds)))
    throw new UsageError(`--timeout ${String(values.timeout)} is not a positive number of seconds`);
  const disks = ((values.disk as string[] | undefined) ?? []).map(parseDisk);
  const nics = ((values.net as string[] | undefined) ?? []).map(parseNic);
  const taps = nics.map((n) => n.tap);
  if (new Set(taps).size !== taps.length) throw new UsageError(`--net names a TAP twice (${taps.join(', ')})`);
  const macs = nics.map((n) => n.mac.toLowerCase());
  if (new Set(macs).size !== macs.length) throw new UsageError(`--net gives two NICs one MAC (${macs.join(', ')})`);
  const devices = await parseDeviceList(values.devices as string | undefined, disks.length > 0);
  const trace = values.trace as string | undefined;
  if (trace !== undefined && nics.length > 0)
    throw new UsageError('--trace with --net: NIC channels are not recorded for replay yet (their frames come from the TAP)');
  if (trace !== undefined && values.balloon === true)
    throw new UsageError(
      '--trace with --balloon: the dynamic memory channel is not replayable yet (replay has no RAM map to release from)',
    );
  const control = values.control as string | undefined;
  if (control !== undefined && (control === '' || Buffer.byteLength(control) > 107))
    throw new UsageError(`--control ${control}: a Unix socket path is 1-107 bytes`);
  if (trace !== undefined) await checkTraceWritable(trace);
  return runLinux({
    kernel,
    devices,
    disks,
    nics,
    balloon: values.balloon === true,
    control,
    trace,
    events: values.events === true,
    initrd: values.initrd as string | undefined,
    commandLine: values.cmdline as string | undefined,
    memoryBytes,
    cpus,
    timeoutSeconds,
    console: (bytes) => process.stdout.write(bytes),
    log: (line) => process.stderr.write(`${line}\n`),
  });
}

async function ringDemo(): Promise<number> {
  const { runRingDemo } = await import('./ring-demo.js');
  const started = performance.now();
  const print = (line: string): void => {
    const t = (performance.now() - started).toFixed(3).padStart(8);
    process.stdout.write(`[${t} ms] ${line}\n`);
  };
  print('hvemu ring demo (simulated guest; the KVM demo VM arrives with the VMBus issue)');
  const r = runRingDemo({ print });
  print(`done: ${r.requests} requests, ${r.completions} completions`);
  return r.completions === r.requests ? 0 : 1;
}

async function replay(values: Values, [file]: string[]): Promise<number> {
  const { TraceReader } = await import('@hvemu/trace');
  const { runReplay } = await import('./replay.js');
  const reader = TraceReader.open(file);
  try {
    const report = runReplay(reader, { device: values.device as string | undefined });
    const out = new LineWriter();
    if (values.json) out.line(JSON.stringify(report.json));
    else for (const line of report.lines) out.line(line);
    out.flush();
    for (const w of (report.json.warnings as string[] | undefined) ?? []) process.stderr.write(`hvemu replay: warning: ${w}\n`);
    return report.matched ? 0 : 1;
  } finally {
    reader.close();
  }
}

async function traceShow(values: Values, [file]: string[]): Promise<number> {
  const { TraceFormatError, TraceReader } = await import('@hvemu/trace');
  const { traceLines } = await import('./trace-show.js');
  const filter: ShowFilter = {
    relid: values.relid === undefined ? undefined : u32Option('relid', values.relid as string),
    direction: directionOption(values.direction as string | undefined),
    from: values.from === undefined ? undefined : secondsOption('from', values.from as string),
    to: values.to === undefined ? undefined : secondsOption('to', values.to as string),
  };
  if (filter.from !== undefined && filter.to !== undefined && filter.from > filter.to)
    throw new UsageError(`--from ${values.from} is after --to ${values.to}`);
  const reader = TraceReader.open(file);
  const out = new LineWriter();
  try {
    const lines = traceLines(reader, filter, values.json === true);
    let r = lines.next();
    for (; !r.done; r = lines.next()) if (!out.line(r.value)) await out.drained();
    out.flush();
    if (r.value.truncated)
      process.stderr.write(`hvemu trace show: warning: ${file} is truncated (no footer): ${r.value.events} events read\n`);
    return 0;
  } catch (error) {
    out.flush();
    // A trace cut or corrupt part way: what came before it was shown; the error says where.
    if (error instanceof TraceFormatError) {
      process.stderr.write(`hvemu trace show: ${error.message}\n`);
      return 1;
    }
    throw error;
  } finally {
    reader.close();
  }
}

function u32Option(name: string, text: string): number {
  if (!/^\d{1,10}$/.test(text) || Number(text) > 0xffffffff)
    throw new UsageError(`--${name} ${text} is not a channel relid (an integer 0..4294967295)`);
  return Number(text);
}

function directionOption(text: string | undefined): ShowFilter['direction'] {
  if (text === undefined || text === 'guest-to-host' || text === 'host-to-guest') return text;
  throw new UsageError(`--direction ${text} is not guest-to-host or host-to-guest`);
}

/** Decimal seconds as reference time (100 ns units), exactly: up to 7 decimals. */
function secondsOption(name: string, text: string): bigint {
  const m = /^(\d{1,12})(?:\.(\d{1,7}))?$/.exec(text);
  if (!m) throw new UsageError(`--${name} ${text} is not a time in seconds (e.g. 12 or 3.25, at most 7 decimals)`);
  return BigInt(m[1]) * 10_000_000n + BigInt((m[2] ?? '').padEnd(7, '0'));
}

/**
 * Lines to stdout in 64 KiB writes (one write per line is most of the cost of a long trace
 * show). line() says false when stdout is full (a pipe to a slow reader): the caller awaits
 * drained() before the next line, so output waits for the reader instead of piling up in memory.
 */
class LineWriter {
  private parts: string[] = [];
  private size = 0;
  line(text: string): boolean {
    this.parts.push(text, '\n');
    this.size += text.length + 1;
    return this.size >= 1 << 16 ? this.flush() : true;
  }
  flush(): boolean {
    if (this.size === 0) return true;
    const ok = process.stdout.write(this.parts.join(''));
    this.parts = [];
    this.size = 0;
    return ok;
  }
  drained(): Promise<void> {
    return new Promise((resolve) => process.stdout.once('drain', resolve));
  }
}

// `hvemu trace show x | head`: a closed pipe is the reader being done, not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});
process.exitCode = await main(process.argv.slice(2));
