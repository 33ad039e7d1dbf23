import { describe, expect, it } from 'vitest';
import { runRingDemo } from '../src/ring-demo.js';

describe('ring demo', () => {
  it('completes every request and shows the signal and backpressure steps', () => {
    const lines: string[] = [];
    const r = runRingDemo({ print: (l) => lines.push(l), requests: 5 });
    expect(r).toEqual({ requests: 5, completions: 5 });
    const text = lines.join('\n');
    expect(text).toContain('wrote 5 requests in one batch; host interrupts: 1');
    expect(text).toContain('completed 5; guest interrupts: 1');
    for (let i = 1; i <= 5; i++) expect(text).toContain(`VM_PKT_COMP trans_id=${i} len=24 payload="done ${i}"`);
    expect(text).toMatch(/host interrupts for space: 1/);
    expect(text).toContain('host:  resumes: wrote');
  });
});
