import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { readRows, loadRows, formatOf } from '../../lib/train/data';
import { SiftError } from '../../lib';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-data-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const write = (name: string, text: string) => {
  const p = path.join(dir, name);
  fs.writeFileSync(p, text);
  return p;
};

async function errorOf(p: Promise<unknown>): Promise<SiftError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return e as SiftError;
  }
  throw new Error('expected an error');
}

describe('readRows', () => {
  test('format from the extension', () => {
    expect(formatOf('a.jsonl')).toBe('jsonl');
    expect(formatOf('a.CSV')).toBe('csv');
    expect(formatOf('a.tsv')).toBe('tsv');
    expect(formatOf('a.txt')).toBe('text');
  });

  test('JSONL, skipping blank lines', async () => {
    const p = write('a.jsonl', '{"text": "hi", "label": 1}\n\n{"input_ids": [1, 2]}\n');
    expect(await loadRows(p)).toEqual([{ text: 'hi', label: 1 }, { input_ids: [1, 2] }]);
  });

  test('JSONL errors name the file and line', async () => {
    const p = write('bad.jsonl', '{"a": 1}\n{"a": \n');
    const e = await errorOf(loadRows(p));
    expect(e.code).toBe('E_FORMAT');
    expect(e.message).toContain('bad.jsonl:2');
    const q = write('arr.jsonl', '[1, 2]\n');
    expect((await errorOf(loadRows(q))).message).toContain('arr.jsonl:1');
  });

  test('CSV with quotes, doubled quotes, embedded delimiters and newlines, CRLF and a BOM', async () => {
    const p = write('a.csv', '\ufeffsentence,label\r\n"hello, world",1\r\n"she said ""hi""",0\r\n"two\nlines",1\r\nplain,0\r\n');
    expect(await loadRows(p)).toEqual([
      { sentence: 'hello, world', label: '1' },
      { sentence: 'she said "hi"', label: '0' },
      { sentence: 'two\nlines', label: '1' },
      { sentence: 'plain', label: '0' },
    ]);
  });

  test('TSV with a header, without one, and with given columns', async () => {
    const p = write('a.tsv', 'sentence\tlabel\na b\t1\textra\n');
    expect(await loadRows(write('h.tsv', 'sentence\tlabel\na b\t1\nc\t0\n'))).toEqual([
      { sentence: 'a b', label: '1' },
      { sentence: 'c', label: '0' },
    ]);
    expect(await loadRows(write('n.tsv', 'x\t1\ny\t0\n'), { header: false })).toEqual([
      { 0: 'x', 1: '1' },
      { 0: 'y', 1: '0' },
    ]);
    expect(await loadRows(write('c.tsv', 'x\t1\n'), { columns: ['text', 'label'] })).toEqual([{ text: 'x', label: '1' }]);
    const e = await errorOf(loadRows(p));
    expect(e.code).toBe('E_FORMAT');
    expect(e.message).toMatch(/a\.tsv:2: expected 2 fields/);
  });

  test('CSV errors: unterminated quote, text after a closing quote, duplicate header', async () => {
    expect((await errorOf(loadRows(write('u.csv', 'a,b\n"x,1\n2,3\n')))).message).toMatch(/u\.csv:2: unterminated/);
    expect((await errorOf(loadRows(write('q.csv', 'a,b\n"x"y,1\n')))).message).toMatch(/q\.csv:2/);
    expect((await errorOf(loadRows(write('d.csv', 'a,a\n1,2\n')))).message).toMatch(/duplicate column/);
  });

  test('raw text: one row per non-empty line, or per file', async () => {
    const p = write('a.txt', 'first line\n\nsecond\n');
    expect(await loadRows(p)).toEqual([{ text: 'first line' }, { text: 'second' }]);
    expect(await loadRows(p, { textUnit: 'file' })).toEqual([{ text: 'first line\n\nsecond\n' }]);
  });

  test('streams: rows come before the file is read whole', async () => {
    const lines = Array.from({ length: 20000 }, (_, i) => JSON.stringify({ i })).join('\n');
    const p = write('big.jsonl', lines);
    let n = 0;
    for await (const r of readRows(p)) {
      expect(r.i).toBe(n);
      if (++n === 5) break;
    }
    expect(n).toBe(5);
  });

  test('a missing file is E_IO', async () => {
    expect((await errorOf(loadRows(path.join(dir, 'nope.jsonl')))).code).toBe('E_IO');
  });

  const sst2 = path.resolve(__dirname, '../../../shared/data/sst2/dev.tsv');
  const haveSst2 = fs.existsSync(sst2);
  (haveSst2 ? test : test.skip)('SST-2 dev.tsv from ../shared/data reads as sentence/label rows', async () => {
    const rows = await loadRows(sst2);
    expect(rows.length).toBe(6735);
    expect(Object.keys(rows[0])).toEqual(['sentence', 'label']);
    expect(new Set(rows.map((r) => r.label))).toEqual(new Set(['0', '1']));
  });
  if (!haveSst2) console.log(`SST-2 test skipped: ${sst2} is absent (../shared/data is not on this machine)`);
});
