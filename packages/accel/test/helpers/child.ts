/**
 * Runs a script of test/children in its own Node process. For repros whose failure mode is a
 * process abort (a native crash, a fatal V8 error): the test asserts the child's exit instead
 * of dying with it. The scripts import the compiled package (`npm test` builds it first).
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The last stdout line parsed as JSON, when there is one. */
  json: unknown;
}

export function runChild(script: string, args: readonly string[] = [], timeoutMs = 30_000, nodeFlags: readonly string[] = []): ChildResult {
  const path = fileURLToPath(new URL(`../children/${script}`, import.meta.url));
  const r = spawnSync(process.execPath, [...nodeFlags, path, ...args], { encoding: 'utf8', timeout: timeoutMs });
  const lines = r.stdout.trim().split('\n');
  let json: unknown;
  try {
    json = JSON.parse(lines[lines.length - 1]);
  } catch {
    json = undefined;
  }
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, json };
}

/** For expect messages. */
export function describeChild(r: ChildResult): string {
  return `status ${r.status}, signal ${r.signal}\nstdout: ${r.stdout}\nstderr: ${r.stderr.slice(-2000)}`;
}
