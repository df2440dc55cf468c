/**
 * sift-ft finetune takes the SDDMM for SIFT's weight gradients: the gradient proportion is
 * measured on the last step only (and every --grad-proportion-every steps), and the JSON, the
 * text summary and log.jsonl say which path ran.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createByteTokenizer } from '../../lib/tokenizers';
import { runCli, saveRandomModel, writeJsonl } from '../helpers/cli';
import { tinyByteLlamaConfig } from '../helpers/tiny-configs';

let tmp: string;
let base: string;
let data: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-sddmm-cli-'));
  const tok = createByteTokenizer();
  base = saveRandomModel(path.join(tmp, 'base'), tinyByteLlamaConfig(tok), tok.toFiles());
  const texts = ['the cat sat on the mat', 'a dog ran in the park', 'birds sing at dawn', 'fish swim in the sea'];
  data = writeJsonl(
    path.join(tmp, 'lm.jsonl'),
    texts.map((text) => ({ text })),
  );
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const finetune = (out: string, ...extra: string[]) =>
  runCli(
    'finetune',
    '--model',
    base,
    '--data',
    data,
    '--task',
    'causal-lm',
    '--method',
    'sift',
    '--device',
    'cpu',
    '--steps',
    '4',
    '--batch-size',
    '2',
    '--max-length',
    '16',
    '--quiet',
    '--out',
    out,
    ...extra,
  );

test('finetune --json: the SDDMM ran on the steps that did not measure the gradient proportion', async () => {
  const out = path.join(tmp, 'json');
  const r = await finetune(out, '--json');
  expect(r.err).not.toMatch(/Error/);
  expect(r.code).toBe(0);
  const res = JSON.parse(r.out);
  // Every target of the Llama layers is a linear weight: all take the SDDMM, steps 1..3; step 4 measures.
  expect(res.sparseGradient.path).toBe('sddmm');
  expect(res.sparseGradient.sddmmTargets).toBe(res.sparseGradient.targets);
  expect(res.sparseGradient.targets).toBe(7);
  expect(res.sparseGradient.sddmmSteps).toBe(3);
  expect(res.sparseGradient.denseSteps).toBe(1);
  expect(res.gradProportionStep).toBe(4);
  expect(Object.keys(res.gradProportion)).toHaveLength(7);
  expect(res.meanGradProportion).toBeGreaterThan(0);
  expect(res.meanGradProportion).toBeLessThanOrEqual(1);
  const log = fs
    .readFileSync(res.log, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  expect(log.filter((e) => e.type === 'step' && e.meanGradProportion !== undefined).map((e) => e.step)).toEqual([4]);
  const done = log.find((e) => e.type === 'done');
  expect(done.sparseGradient).toEqual(res.sparseGradient);
  expect(fs.readFileSync(res.report, 'utf8')).toMatch(/weight gradient.*SDDMM \(selected entries only\) on 7 of 7 targets, 3 of 4 steps/);
}, 120000);

test('finetune --grad-proportion-every 2: steps 2 and 4 measure; the text summary names the paths', async () => {
  const out = path.join(tmp, 'every');
  const r = await finetune(out, '--grad-proportion-every', '2');
  expect(r.err).not.toMatch(/Error/);
  expect(r.code).toBe(0);
  expect(r.out).toMatch(/gradient proportion on the selected entries \(mean over targets, step 4\): \d+\.\d%/);
  expect(r.out).toMatch(
    /weight gradient: SDDMM \(selected entries only\) on 7 of 7 targets, 2 of 4 steps \(dense on the 2 step\(s\) that measured the gradient proportion\)/,
  );
  const steps = fs
    .readFileSync(path.join(out, 'log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((e) => e.type === 'step');
  expect(steps.filter((e) => e.meanGradProportion !== undefined).map((e) => e.step)).toEqual([2, 4]);
  const bad = await finetune(path.join(tmp, 'bad'), '--grad-proportion-every', '-1');
  expect(bad.code).not.toBe(0);
  expect(bad.err).toMatch(/grad-proportion-every/);
}, 120000);

test('finetune --quantize int8: the quantized targets take the SDDMM from their layer factors too', async () => {
  const r = await finetune(path.join(tmp, 'int8'), '--quantize', 'int8', '--json');
  expect(r.err).not.toMatch(/Error/);
  expect(r.code).toBe(0);
  const res = JSON.parse(r.out);
  expect(res.sparseGradient).toEqual({ path: 'sddmm', targets: 7, sddmmTargets: 7, sddmmSteps: 3, denseSteps: 1 });
  expect(res.gradProportionStep).toBe(4);
  expect(res.meanGradProportion).toBeGreaterThan(0);
}, 120000);
