/**
 * Data readers that stream: JSONL (one object per line), CSV and TSV (RFC 4180 quoting: a field
 * that starts with a double quote may hold delimiters, doubled quotes and newlines) and raw text
 * (one row per line, or one per file). Rows come out one at a time, so a large file is never held
 * whole; bad input throws E_FORMAT naming the file and the line.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as readline from 'readline';
import * as zlib from 'zlib';
import { SiftError } from '../engine/errors';
import type { Row } from './types';

export type DataFormat = 'jsonl' | 'csv' | 'tsv' | 'text';

export interface ReadOptions {
  /** Default from the extension: .jsonl/.json/.ndjson, .csv, .tsv, anything else is raw text. */
  format?: DataFormat;
  /** CSV/TSV: the first line names the columns (default true unless `columns` is given). */
  header?: boolean;
  /** CSV/TSV column names (without a header, or overriding it); default without header: '0', '1', ... */
  columns?: string[];
  /** Raw text: one row `{text}` per non-empty line (default) or one row for the whole file. */
  textUnit?: 'line' | 'file';
}

/** The format a path's extension stands for (a trailing .gz is looked through). */
export function formatOf(file: string): DataFormat {
  const ext = path.extname(isGzipName(file) ? file.slice(0, -3) : file).toLowerCase();
  if (ext === '.jsonl' || ext === '.ndjson' || ext === '.json') return 'jsonl';
  if (ext === '.csv') return 'csv';
  if (ext === '.tsv') return 'tsv';
  return 'text';
}

function isGzipName(file: string): boolean {
  return file.toLowerCase().endsWith('.gz');
}

function formatError(file: string, line: number, msg: string): SiftError {
  return new SiftError('E_FORMAT', `${file}:${line}: ${msg}`);
}

/**
 * The lines of a text file, streamed; a file whose name ends in .gz is gunzipped on the fly
 * (node:zlib), so a compressed corpus is never held whole either.
 */
export async function* readLines(file: string): AsyncGenerator<string> {
  let stream: fs.ReadStream;
  try {
    fs.accessSync(file, fs.constants.R_OK);
    if (fs.statSync(file).isDirectory()) throw new SiftError('E_IO', `${file} is a directory, not a data file`);
    stream = fs.createReadStream(file);
  } catch (e) {
    if (e instanceof SiftError) throw e;
    throw new SiftError('E_IO', `cannot read ${file}: ${(e as Error).message}`);
  }
  const gunzip = isGzipName(file) ? zlib.createGunzip() : null;
  if (gunzip) stream.pipe(gunzip);
  const input = gunzip ?? stream;
  input.setEncoding('utf8');
  const rl = readline.createInterface({ input, crlfDelay: Infinity });
  try {
    let first = true;
    for await (const l of rl) {
      // A UTF-8 byte-order mark would otherwise stick to the first column name.
      yield first && l.charCodeAt(0) === 0xfeff ? l.slice(1) : l;
      first = false;
    }
  } catch (e) {
    if (e instanceof SiftError) throw e;
    const code = (e as NodeJS.ErrnoException).code ?? '';
    if (gunzip && code.startsWith('Z_')) throw new SiftError('E_FORMAT', `${file}: not a valid gzip file (${(e as Error).message})`);
    throw new SiftError('E_IO', `cannot read ${file}: ${(e as Error).message}`);
  } finally {
    rl.close();
    gunzip?.destroy();
    stream.destroy();
  }
}

/**
 * Splits delimited records. A record may continue over several physical lines while a quoted field
 * is open, so this keeps its state between calls: feed lines, take the finished records.
 */
export class DelimitedParser {
  private fields: string[] = [];
  private field = '';
  private inQuotes = false;
  private quotedField = false;
  private afterQuote = false;
  /** Line on which the record being parsed started (1-based). */
  startLine = 0;

  constructor(
    private readonly delimiter: string,
    private readonly file: string,
  ) {}

  get pending(): boolean {
    return this.inQuotes;
  }

  /** Feeds one physical line; returns the fields of a completed record, or null while a quote is open. */
  feed(line: string, lineNo: number): string[] | null {
    if (!this.inQuotes) {
      this.startLine = lineNo;
      this.fields = [];
      this.field = '';
      this.quotedField = false;
      this.afterQuote = false;
    } else {
      this.field += '\n';
    }
    const d = this.delimiter;
    for (let i = 0; i < line.length; i++) {
      const c = line[i];
      if (this.inQuotes) {
        if (c === '"') {
          if (line[i + 1] === '"') {
            this.field += '"';
            i++;
          } else {
            this.inQuotes = false;
            this.afterQuote = true;
          }
        } else {
          this.field += c;
        }
        continue;
      }
      if (c === d) {
        this.fields.push(this.field);
        this.field = '';
        this.quotedField = false;
        this.afterQuote = false;
      } else if (c === '"' && this.field.length === 0 && !this.quotedField) {
        this.inQuotes = true;
        this.quotedField = true;
      } else if (this.afterQuote) {
        if (c === ' ' || c === '\r') continue;
        throw formatError(
          this.file,
          lineNo,
          `unexpected character '${c}' after a closing quote (a quote inside a quoted field is written "")`,
        );
      } else {
        this.field += c;
      }
    }
    if (this.inQuotes) return null;
    this.fields.push(this.field);
    return this.fields;
  }
}

/** Streams the rows of a data file. */
export async function* readRows(file: string, opts: ReadOptions = {}): AsyncGenerator<Row> {
  const format = opts.format ?? formatOf(file);
  if (!['jsonl', 'csv', 'tsv', 'text'].includes(format)) {
    throw new SiftError('E_ARG', `unknown data format '${format}' (expected jsonl, csv, tsv or text)`);
  }
  if (format === 'text') {
    if (opts.textUnit === 'file') {
      let text: string;
      try {
        const raw = fs.readFileSync(file);
        text = (isGzipName(file) ? zlib.gunzipSync(raw) : raw).toString('utf8');
      } catch (e) {
        throw new SiftError('E_IO', `cannot read ${file}: ${(e as Error).message}`);
      }
      yield { text };
      return;
    }
    for await (const l of readLines(file)) if (l.trim().length) yield { text: l };
    return;
  }
  if (format === 'jsonl') {
    let n = 0;
    for await (const l of readLines(file)) {
      n++;
      if (!l.trim()) continue;
      let v: unknown;
      try {
        v = JSON.parse(l);
      } catch (e) {
        throw formatError(file, n, `invalid JSON (${(e as Error).message})`);
      }
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw formatError(file, n, 'expected a JSON object per line');
      yield v as Row;
    }
    return;
  }
  const parser = new DelimitedParser(format === 'csv' ? ',' : '\t', file);
  let columns: string[] | null = opts.columns ?? null;
  let wantHeader = opts.header ?? !opts.columns;
  let n = 0;
  for await (const l of readLines(file)) {
    n++;
    if (!parser.pending && l.length === 0) continue;
    const fields = parser.feed(l, n);
    if (!fields) continue;
    if (wantHeader) {
      wantHeader = false;
      if (!columns) {
        columns = fields.map((f) => f.trim());
        const dup = columns.find((c, i) => columns!.indexOf(c) !== i);
        if (dup !== undefined) throw formatError(file, parser.startLine, `duplicate column name '${dup}' in the header`);
      }
      continue;
    }
    if (!columns) columns = fields.map((_, i) => String(i));
    if (fields.length !== columns.length) {
      throw formatError(file, parser.startLine, `expected ${columns.length} fields (${columns.join(', ')}), got ${fields.length}`);
    }
    const row: Row = {};
    columns.forEach((c, i) => (row[c] = fields[i]));
    yield row;
  }
  if (parser.pending) throw formatError(file, parser.startLine, 'unterminated quoted field');
}

/** All rows of a data file. */
export async function loadRows(file: string, opts: ReadOptions = {}): Promise<Row[]> {
  const out: Row[] = [];
  for await (const r of readRows(file, opts)) out.push(r);
  return out;
}
