/**
 * Loading the parity fixtures of test/fixtures (made by make_fixtures.py): the config, the weights
 * (param.*), the batch (input.*), the reference outputs (output.*) and gradients (grad.*).
 */
import * as fs from 'fs';
import * as path from 'path';
import { Tensor } from '../../lib';
import { loadSafetensors } from '../../lib/io/safetensors';
import type { HFConfig } from '../../lib/models';

export const FIXTURE_DIR = path.join(__dirname, '..', 'fixtures');
export const FIXTURE_NAMES = [
  'gpt2-lm',
  'gpt2-cls',
  'bert-cls',
  'roberta-cls',
  'roberta-reg',
  'llama-lm',
  'llama-lm-tied',
  'llama-cls',
  'llama-lm-yarn',
  'qwen2-lm',
  'qwen2-cls',
  'qwen3-lm',
  'qwen3-cls',
  'mistral-lm',
  'mistral-cls',
  'gemma-lm',
  'gemma-cls',
  'gemma2-lm',
  'gemma2-cls',
  'phi3-lm',
  'phi3-lm-short',
  'phi3-cls',
];

export interface Fixture {
  name: string;
  config: HFConfig;
  params: Map<string, Tensor>;
  inputs: Map<string, Tensor>;
  outputs: Map<string, Tensor>;
  grads: Map<string, Tensor>;
  metadata: Record<string, string>;
  dispose(): void;
}

export function fixturePath(name: string): string {
  return path.join(FIXTURE_DIR, name, 'fixture.safetensors');
}

export function missingFixtures(): string[] {
  return FIXTURE_NAMES.filter((n) => !fs.existsSync(fixturePath(n)) || !fs.existsSync(path.join(FIXTURE_DIR, n, 'config.json')));
}

export function loadFixture(name: string): Fixture {
  const config = JSON.parse(fs.readFileSync(path.join(FIXTURE_DIR, name, 'config.json'), 'utf8')) as HFConfig;
  const { tensors, metadata } = loadSafetensors(fixturePath(name));
  const part = (prefix: string) => new Map([...tensors].filter(([k]) => k.startsWith(prefix)).map(([k, t]) => [k.slice(prefix.length), t]));
  return {
    name,
    config,
    metadata,
    params: part('param.'),
    inputs: part('input.'),
    outputs: part('output.'),
    grads: part('grad.'),
    dispose: () => {
      for (const t of tensors.values()) t.dispose();
    },
  };
}

/** Max |a - b| over max |b| (or `floor` when larger): the error relative to the tensor's scale. */
export function relError(actual: ArrayLike<number>, expected: ArrayLike<number>, floor = 0): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(Number(actual[i]) - Number(expected[i]));
    num = Number.isNaN(d) ? Infinity : Math.max(num, d);
    den = Math.max(den, Math.abs(Number(expected[i])));
  }
  den = Math.max(den, floor);
  return den === 0 ? num : num / den;
}
