/**
 * onnxruntime-node (a dev dependency) run in a child process: jest's sandbox has its own typed
 * array classes, which the native binding rejects. Tests skip with a message when it cannot load.
 */
import { execFileSync, spawnSync } from 'child_process';
import * as path from 'path';

const RUNNER = path.join(__dirname, 'ort-runner.js');

function probe(): string {
  const r = spawnSync(process.execPath, ['-e', "require('onnxruntime-node')"], { encoding: 'utf8', timeout: 60000 });
  if (r.status === 0) return '';
  return (r.stderr || r.error?.message || 'unknown error').split('\n').find((l) => l.trim()) ?? 'unknown error';
}

export const ortMissing = probe();
export const ortAvailable = ortMissing === '';

export interface OrtResult {
  inputs: string[];
  outputs: Record<string, { dims: number[]; data: number[] }>;
}

export function runOrt(model: string, feeds: Record<string, number[][]>): OrtResult {
  const f: Record<string, { dims: number[]; data: number[] }> = {};
  for (const [k, rows] of Object.entries(feeds)) f[k] = { dims: [rows.length, rows[0].length], data: rows.flat() };
  const out = execFileSync(process.execPath, [RUNNER], {
    input: JSON.stringify({ model, feeds: f }),
    encoding: 'utf8',
    timeout: 60000,
    maxBuffer: 1 << 28,
  });
  return JSON.parse(out) as OrtResult;
}
