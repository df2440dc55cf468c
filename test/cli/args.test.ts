/**
 * parseCommand's Hugging Face aliases where transformers spells "not set" with a value of its own:
 * max_steps -1 (TrainingArguments' default, present in every dumped configuration).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FlagSpec, parseCommand } from '../../lib/cli/args';

const spec: Record<string, FlagSpec> = {
  steps: { type: 'number', help: 'optimizer steps', integer: true, min: 1 },
  epochs: { type: 'number', help: 'passes over the data' },
};
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-args-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('max_steps -1 leaves --steps unset, as in transformers', () => {
  test('in a configuration file (a TrainingArguments dump has max_steps: -1 beside num_train_epochs)', () => {
    const file = path.join(dir, 'hf.yaml');
    fs.writeFileSync(file, 'num_train_epochs: 3.0\nmax_steps: -1\n');
    const r = parseCommand(['--config', file], spec);
    expect(r.flags.steps).toBeUndefined();
    expect(r.flags.epochs).toBe(3);
    expect(r.sources.steps).toBeUndefined();
  });

  test('on the command line, in both spellings; other values are still checked', () => {
    expect(parseCommand(['--max_steps', '-1', '--epochs', '2'], spec).flags).toEqual({ _: [], epochs: 2 });
    expect(parseCommand(['--max-steps=-1'], spec).flags.steps).toBeUndefined();
    expect(parseCommand(['--max_steps', '7'], spec).flags.steps).toBe(7);
    expect(() => parseCommand(['--max_steps', '-2'], spec)).toThrow(/must be >= 1/);
    // --steps itself has no such spelling.
    expect(() => parseCommand(['--steps', '-1'], spec)).toThrow(/must be >= 1/);
  });
});
