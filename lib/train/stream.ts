/**
 * Pre-training data streamed from files: documents are read one at a time (JSON lines, gzipped or
 * not, by a text column; raw text files in chunks of lines), tokenized, joined with EOS between
 * documents and cut into blocks of a fixed length. A bounded shuffle buffer (as streaming dataset
 * libraries do) mixes blocks of nearby documents, so a batch does not hold one book's consecutive
 * blocks. Memory stays bounded by the buffer and one document; the corpus is never held whole.
 *
 * The block at each position is a pure function of (files, tokenizer, block size, buffer, seed):
 * asking for a position before the current one restarts the stream, asking past it reads on, so a
 * resumed run sees the blocks an uninterrupted one would (at the cost of re-reading up to there).
 * At the end of the files the stream starts over (the next epoch, in the same order).
 */
import * as fs from 'fs';
import * as path from 'path';
import { SiftError } from '../engine/errors';
import type { TextTokenizer } from '../tokenizers/types';
import { formatOf, readLines, readRows } from './data';
import { SeededRng, deriveSeed } from './batching';
import type { Example, ExampleSource } from './types';

export interface TextStreamOptions {
  /** JSON lines: the field holding the document (default 'text'). */
  textColumn?: string;
  /** Raw text files: lines per chunk handed to the tokenizer (default 200); EOS only at the end of the file. */
  linesPerChunk?: number;
}

/** The files a list of paths names: files as given, folders by their data files in name order. */
export function expandDataPaths(paths: string[]): string[] {
  const out: string[] = [];
  for (const p of paths) {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      throw new SiftError('E_IO', `${p}: no such file or folder`);
    }
    if (st.isDirectory()) {
      const files = fs
        .readdirSync(p)
        .filter((n) => !n.startsWith('.') && /\.(jsonl|ndjson|json|txt|text|md)(\.gz)?$/i.test(n))
        .sort();
      if (!files.length) throw new SiftError('E_IO', `${p}: the folder has no .jsonl, .txt or .md files (gzipped or not)`);
      out.push(...files.map((n) => path.join(p, n)));
    } else {
      out.push(p);
    }
  }
  if (!out.length) throw new SiftError('E_ARG', 'no data files given');
  return out;
}

/**
 * The documents of the files in order, streamed: a JSON line's text column, or a chunk of lines
 * of a raw text file. `end` says whether the piece ends a document (an EOS follows it).
 */
export async function* readDocuments(files: string[], opts: TextStreamOptions = {}): AsyncGenerator<{ text: string; end: boolean }> {
  const column = opts.textColumn ?? 'text';
  const per = opts.linesPerChunk ?? 200;
  for (const file of files) {
    if (formatOf(file) === 'jsonl') {
      let n = 0;
      for await (const row of readRows(file, { format: 'jsonl' })) {
        n++;
        const t = row[column];
        if (typeof t !== 'string') {
          throw new SiftError(
            'E_FORMAT',
            `${file}: record ${n} has no text field '${column}' (fields: ${Object.keys(row).join(', ')}; choose one with --text-column)`,
          );
        }
        if (t.length) yield { text: t, end: true };
      }
    } else if (formatOf(file) === 'text') {
      let chunk: string[] = [];
      for await (const l of readLines(file)) {
        chunk.push(l);
        if (chunk.length >= per) {
          yield { text: chunk.join('\n') + '\n', end: false };
          chunk = [];
        }
      }
      yield { text: chunk.join('\n'), end: true };
    } else {
      throw new SiftError(
        'E_ARG',
        `${file}: pre-training reads JSON lines (.jsonl) and raw text (.txt), gzipped or not; not ${formatOf(file).toUpperCase()}`,
      );
    }
  }
}

/**
 * Up to maxBytes of text from the start of the files (each file contributes its share), for
 * training a tokenizer on a sample of a corpus too large to count whole.
 */
export async function sampleText(files: string[], maxBytes: number, opts: TextStreamOptions = {}): Promise<string[]> {
  const out: string[] = [];
  const perFile = Math.max(1, Math.floor(maxBytes / files.length));
  for (const file of files) {
    let got = 0;
    for await (const d of readDocuments([file], opts)) {
      const t = d.text.length > perFile - got ? d.text.slice(0, perFile - got) : d.text;
      out.push(t);
      got += t.length;
      if (got >= perFile) break;
    }
  }
  return out;
}

export interface TokenBlockOptions extends TextStreamOptions {
  /** Tokens per block (the model's context used in training). */
  blockSize: number;
  /** Blocks held for shuffling (default 2048; 1: no shuffling, file order). */
  shuffleBuffer?: number;
  seed?: number;
}

/** The ExampleSource of causal-LM pre-training: token blocks of the files, streamed (see the file's comment). */
export class TokenBlockStream implements ExampleSource {
  readonly files: string[];
  private readonly blockSize: number;
  private readonly bufferSize: number;
  private readonly seed: number;
  private docs: AsyncGenerator<{ text: string; end: boolean }> | null = null;
  private pending: number[] = [];
  private buffer: number[][] = [];
  private rng!: SeededRng;
  private epoch = 0;
  private blocksThisEpoch = 0;
  /** Blocks handed out so far (the next block's index). */
  private served = 0;
  /** Tokens read from the files (all epochs). */
  tokensRead = 0;

  constructor(
    files: string[],
    private readonly tokenizer: TextTokenizer,
    private readonly opts: TokenBlockOptions,
  ) {
    if (!Number.isInteger(opts.blockSize) || opts.blockSize < 2)
      throw new SiftError('E_ARG', `block size must be an integer >= 2, got ${opts.blockSize}`);
    const buf = opts.shuffleBuffer ?? 2048;
    if (!Number.isInteger(buf) || buf < 1) throw new SiftError('E_ARG', `shuffle buffer must be a positive integer, got ${buf}`);
    this.files = files;
    this.blockSize = opts.blockSize;
    this.bufferSize = buf;
    this.seed = opts.seed ?? 0;
    this.restart();
  }

  /** The epoch being read (0 first). */
  get epochs(): number {
    return this.epoch;
  }

  private restart(): void {
    void this.docs?.return(undefined);
    this.docs = readDocuments(this.files, this.opts);
    this.pending = [];
    this.buffer = [];
    this.rng = new SeededRng(deriveSeed(this.seed, 0, 0x5eed));
    this.epoch = 0;
    this.blocksThisEpoch = 0;
    this.served = 0;
    this.tokensRead = 0;
  }

  /** Reads documents until a block is complete or the files end; false at the end of the files. */
  private async fill(): Promise<boolean> {
    const eos = this.tokenizer.eosTokenId;
    while (this.pending.length < this.blockSize) {
      const r = await this.docs!.next();
      if (r.done) return false;
      const ids = this.tokenizer.encode(r.value.text, null, { addSpecialTokens: false }).inputIds;
      if (r.value.end && eos !== undefined) ids.push(eos);
      this.tokensRead += ids.length;
      for (const id of ids) this.pending.push(id);
    }
    return true;
  }

  /** The next block in stream order (through the shuffle buffer). */
  private async next(): Promise<number[]> {
    while (this.buffer.length < this.bufferSize) {
      if (this.pending.length < this.blockSize && !(await this.fill())) {
        if (this.buffer.length) break;
        // End of the files with the buffer drained: the next epoch, unless the corpus has no block at all.
        if (this.blocksThisEpoch === 0) {
          throw new SiftError(
            'E_ARG',
            `the data (${this.files.join(', ')}) holds fewer than ${this.blockSize} tokens: not one block (lower --block-size or add text)`,
          );
        }
        void this.docs!.return(undefined);
        this.docs = readDocuments(this.files, this.opts);
        this.pending = [];
        this.epoch++;
        this.blocksThisEpoch = 0;
        continue;
      }
      this.buffer.push(this.pending.slice(0, this.blockSize));
      this.pending = this.pending.slice(this.blockSize);
      this.blocksThisEpoch++;
    }
    const i = this.bufferSize === 1 ? 0 : Math.floor(this.rng.next() * this.buffer.length);
    const block = this.buffer[i];
    // Swap-remove: O(1), and the order stays a function of the seed.
    this.buffer[i] = this.buffer[this.buffer.length - 1];
    this.buffer.pop();
    this.served++;
    return block;
  }

  async batch(position: number, batchSize: number): Promise<Example[]> {
    if (!Number.isInteger(position) || position < 0)
      throw new SiftError('E_ARG', `position must be a non-negative integer, got ${position}`);
    const first = position * batchSize;
    if (first < this.served) this.restart();
    while (this.served < first) await this.next();
    const out: Example[] = [];
    for (let i = 0; i < batchSize; i++) out.push({ inputIds: await this.next() });
    return out;
  }

  /** Stops reading (closes the open file). */
  close(): void {
    void this.docs?.return(undefined);
    this.docs = null;
  }
}
