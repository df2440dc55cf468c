/**
 * SentencePiece `tokenizer.model` files (sentencepiece_model.proto's ModelProto, read with
 * protobufjs from proto/) as tokenizers with the TextTokenizer interface: BPE (merge the adjacent
 * pair whose joined piece scores highest, leftmost on ties) and Unigram (Viterbi best path, unknown
 * characters at min score - 10), byte fallback, user-defined pieces kept whole, and the
 * normalizer's flags (extra whitespace removal, dummy prefix, whitespace escaped as U+2581).
 * Precompiled character maps are approximated by Unicode NFKC.
 */
import * as fs from 'fs';
import { SiftError } from '../engine/errors';
import { spmType, decodeMessage, toNum } from '../onnx/proto';
import { truncate } from './tokenizer';
import type { TextTokenizer, Encoding, BatchEncoding, EncodeOptions, BatchEncodeOptions, DecodeOptions, TextInput } from './types';

export const SPIECE_UNDERLINE = '\u2581';

export enum PieceType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

export interface SentencePiece {
  piece: string;
  score: number;
  type: PieceType;
}

export interface SentencePieceOptions {
  /** Prepend the BOS piece when adding special tokens (LLaMA: yes; default true when bos_id >= 0). */
  addBos?: boolean;
  /** Append the EOS piece when adding special tokens (default false). */
  addEos?: boolean;
}

// biome-ignore lint/suspicious/noExplicitAny: protobufjs decodes to untyped messages
type Msg = any;

const UNK_PENALTY = 10;
const MAX_PIECES = 1 << 22;

export class SentencePieceTokenizer implements TextTokenizer {
  readonly pieces: SentencePiece[];
  readonly modelType: 'unigram' | 'bpe';
  readonly byteFallback: boolean;
  readonly unkId: number;
  readonly bosTokenId: number | undefined;
  readonly eosTokenId: number | undefined;
  readonly padTokenId: number | undefined;
  private readonly ids = new Map<string, number>();
  private readonly byteIds = new Array<number>(256).fill(-1);
  private readonly userDefined: string[];
  private readonly maxPieceChars: number;
  private readonly minScore: number;
  private readonly addDummyPrefix: boolean;
  private readonly removeExtraWhitespaces: boolean;
  private readonly escapeWhitespaces: boolean;
  private readonly nfkc: boolean;
  private readonly addBos: boolean;
  private readonly addEos: boolean;

  constructor(model: Msg, opts: SentencePieceOptions = {}) {
    const pieces = (model.pieces ?? []) as Msg[];
    if (!pieces.length) throw new SiftError('E_FORMAT', 'tokenizer.model: no pieces');
    if (pieces.length > MAX_PIECES) throw new SiftError('E_FORMAT', `tokenizer.model: ${pieces.length} pieces`);
    this.pieces = pieces.map((p, i) => {
      const piece = typeof p.piece === 'string' ? p.piece : '';
      const type = toNum(p.type ?? 1, 'piece type') as PieceType;
      if (!piece && type !== PieceType.UNUSED) throw new SiftError('E_FORMAT', `tokenizer.model: piece ${i} is empty`);
      if (!(type >= 1 && type <= 6)) throw new SiftError('E_FORMAT', `tokenizer.model: piece ${i} has unknown type ${type}`);
      const score = Number(p.score ?? 0);
      return { piece, score: Number.isFinite(score) ? score : 0, type };
    });
    const ts = model.trainer_spec ?? {};
    const mt = toNum(ts.model_type ?? 1, 'model_type');
    if (mt !== 1 && mt !== 2)
      throw new SiftError(
        'E_UNSUPPORTED',
        `tokenizer.model: model type ${mt === 3 ? 'WORD' : mt === 4 ? 'CHAR' : mt} is not supported (BPE and Unigram)`,
      );
    this.modelType = mt === 2 ? 'bpe' : 'unigram';
    this.byteFallback = !!ts.byte_fallback;
    const idOf = (v: unknown, d: number) => {
      const n = v === undefined || v === null ? d : toNum(v, 'special id');
      return n >= 0 && n < this.pieces.length ? n : undefined;
    };
    let unk = this.pieces.findIndex((p) => p.type === PieceType.UNKNOWN);
    if (unk < 0) unk = idOf(ts.unk_id, 0) ?? -1;
    if (unk < 0) throw new SiftError('E_FORMAT', 'tokenizer.model: no unknown piece');
    this.unkId = unk;
    this.bosTokenId = idOf(ts.bos_id, 1);
    this.eosTokenId = idOf(ts.eos_id, 2);
    this.padTokenId = idOf(ts.pad_id, -1);
    this.pieces.forEach((p, i) => {
      if (p.type === PieceType.BYTE) {
        const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(p.piece);
        if (!m) throw new SiftError('E_FORMAT', `tokenizer.model: byte piece '${p.piece}'`);
        this.byteIds[parseInt(m[1], 16)] = i;
        return;
      }
      if (!this.ids.has(p.piece)) this.ids.set(p.piece, i);
    });
    if (this.byteFallback && this.byteIds.some((v) => v < 0))
      throw new SiftError('E_FORMAT', 'tokenizer.model: byte_fallback without all 256 byte pieces');
    this.userDefined = this.pieces
      .filter((p) => p.type === PieceType.USER_DEFINED)
      .map((p) => p.piece)
      .sort((a, b) => b.length - a.length);
    this.maxPieceChars = Math.max(1, ...this.pieces.map((p) => [...p.piece].length));
    const normal = this.pieces.filter((p) => p.type === PieceType.NORMAL).map((p) => p.score);
    this.minScore = normal.length ? Math.min(...normal) : 0;
    const ns = model.normalizer_spec ?? {};
    this.addDummyPrefix = ns.add_dummy_prefix ?? true;
    this.removeExtraWhitespaces = ns.remove_extra_whitespaces ?? true;
    this.escapeWhitespaces = ns.escape_whitespaces ?? true;
    const name = String(ns.name ?? '');
    const charsmap = ns.precompiled_charsmap as Uint8Array | undefined;
    this.nfkc = /nfkc/i.test(name) || (!!charsmap && charsmap.length > 0 && name !== 'identity');
    this.addBos = opts.addBos ?? this.bosTokenId !== undefined;
    this.addEos = opts.addEos ?? false;
  }

  static fromBuffer(bytes: Uint8Array, opts: SentencePieceOptions = {}): SentencePieceTokenizer {
    return new SentencePieceTokenizer(decodeMessage<Msg>(spmType('ModelProto'), bytes, 'tokenizer.model'), opts);
  }

  static fromFile(file: string, opts: SentencePieceOptions = {}): SentencePieceTokenizer {
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(file);
    } catch (e) {
      throw new SiftError('E_IO', `cannot read ${file}: ${(e as Error).message}`);
    }
    return SentencePieceTokenizer.fromBuffer(bytes, opts);
  }

  get vocabSize(): number {
    return this.pieces.length;
  }

  idToPiece(id: number): string | undefined {
    return this.pieces[id]?.piece;
  }

  pieceToId(piece: string): number | undefined {
    return this.ids.get(piece);
  }

  /** The text as the model sees it (normalized, whitespace escaped). */
  normalize(text: string): string {
    let t = this.nfkc ? text.normalize('NFKC') : text;
    if (this.removeExtraWhitespaces) t = t.replace(/ +/g, ' ').replace(/^ | $/g, '');
    if (!t) return '';
    if (this.addDummyPrefix) t = ' ' + t;
    return this.escapeWhitespaces ? t.replace(/ /g, SPIECE_UNDERLINE) : t;
  }

  /** Token ids of a text, without special tokens. */
  tokenize(text: string): number[] {
    const norm = this.normalize(text);
    const out: number[] = [];
    // User-defined pieces are atomic: split them out, encode the rest with the model.
    let rest = norm;
    while (rest.length) {
      let cut = -1;
      let which = '';
      if (this.userDefined.length) {
        for (let i = 0; i < rest.length && cut < 0; i++) {
          for (const u of this.userDefined)
            if (rest.startsWith(u, i)) {
              cut = i;
              which = u;
              break;
            }
        }
      }
      const seg = cut < 0 ? rest : rest.slice(0, cut);
      if (seg) this.modelType === 'bpe' ? this.encodeBpe(seg, out) : this.encodeUnigram(seg, out);
      if (cut < 0) break;
      out.push(this.ids.get(which)!);
      rest = rest.slice(cut + which.length);
    }
    return out;
  }

  private usable(piece: string): number | undefined {
    const id = this.ids.get(piece);
    if (id === undefined) return undefined;
    const t = this.pieces[id].type;
    return t === PieceType.NORMAL || t === PieceType.USER_DEFINED ? id : undefined;
  }

  private emitUnknown(sym: string, out: number[], fuse: boolean): void {
    if (this.byteFallback) {
      for (const b of Buffer.from(sym, 'utf8')) out.push(this.byteIds[b]);
      return;
    }
    if (fuse && out.length && out[out.length - 1] === this.unkId) return;
    out.push(this.unkId);
  }

  private encodeBpe(text: string, out: number[]): void {
    const sym = [...text];
    const n = sym.length;
    const prev = sym.map((_, i) => i - 1);
    const next = sym.map((_, i) => (i + 1 < n ? i + 1 : -1));
    const alive = sym.map(() => true);
    // Max-heap of candidate merges by score, leftmost first on ties.
    const heap: { l: number; r: number; score: number; text: string }[] = [];
    const less = (a: (typeof heap)[0], b: (typeof heap)[0]) => a.score < b.score || (a.score === b.score && a.l > b.l);
    const push = (l: number, r: number) => {
      if (l < 0 || r < 0) return;
      const t = sym[l] + sym[r];
      const id = this.usable(t);
      if (id === undefined) return;
      heap.push({ l, r, score: this.pieces[id].score, text: t });
      let i = heap.length - 1;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (!less(heap[p], heap[i])) break;
        [heap[p], heap[i]] = [heap[i], heap[p]];
        i = p;
      }
    };
    const pop = () => {
      const top = heap[0];
      const last = heap.pop()!;
      if (heap.length) {
        heap[0] = last;
        let i = 0;
        for (;;) {
          const a = 2 * i + 1;
          const b = a + 1;
          let m = i;
          if (a < heap.length && less(heap[m], heap[a])) m = a;
          if (b < heap.length && less(heap[m], heap[b])) m = b;
          if (m === i) break;
          [heap[m], heap[i]] = [heap[i], heap[m]];
          i = m;
        }
      }
      return top;
    };
    for (let i = 0; i + 1 < n; i++) push(i, i + 1);
    while (heap.length) {
      const c = pop();
      if (!alive[c.l] || !alive[c.r] || next[c.l] !== c.r || sym[c.l] + sym[c.r] !== c.text) continue;
      sym[c.l] = c.text;
      alive[c.r] = false;
      next[c.l] = next[c.r];
      if (next[c.r] >= 0) prev[next[c.r]] = c.l;
      push(prev[c.l], c.l);
      push(c.l, next[c.l]);
    }
    for (let i = 0; i >= 0 && i < n; i = next[i]) {
      const id = this.usable(sym[i]);
      if (id !== undefined) out.push(id);
      else this.emitUnknown(sym[i], out, true);
    }
  }

  private encodeUnigram(text: string, out: number[]): void {
    const chars = [...text];
    const n = chars.length;
    const best = new Float64Array(n + 1).fill(-Infinity);
    const from = new Int32Array(n + 1).fill(-1);
    const pieceAt = new Int32Array(n + 1).fill(-1);
    best[0] = 0;
    const unkScore = this.minScore - UNK_PENALTY;
    for (let i = 0; i < n; i++) {
      if (best[i] === -Infinity) continue;
      let s = '';
      let single = false;
      for (let len = 1; len <= this.maxPieceChars && i + len <= n; len++) {
        s += chars[i + len - 1];
        const id = this.usable(s);
        if (id === undefined) continue;
        if (len === 1) single = true;
        // User-defined pieces win over any segmentation that would split them.
        const sc = best[i] + (this.pieces[id].type === PieceType.USER_DEFINED ? 0 : this.pieces[id].score);
        if (sc > best[i + len]) {
          best[i + len] = sc;
          from[i + len] = i;
          pieceAt[i + len] = id;
        }
      }
      if (!single) {
        const sc = best[i] + unkScore;
        if (sc > best[i + 1]) {
          best[i + 1] = sc;
          from[i + 1] = i;
          pieceAt[i + 1] = -1;
        }
      }
    }
    const path: [number, number][] = [];
    for (let e = n; e > 0; e = from[e]) path.push([from[e], pieceAt[e]]);
    path.reverse();
    for (const [s, id] of path) {
      if (id >= 0) out.push(id);
      else this.emitUnknown(chars[s], out, true);
    }
  }

  private withSpecials(a: number[], b: number[] | null): { ids: number[]; types: number[] } {
    const bos = this.addBos && this.bosTokenId !== undefined ? [this.bosTokenId] : [];
    const eos = this.addEos && this.eosTokenId !== undefined ? [this.eosTokenId] : [];
    const first = [...bos, ...a, ...eos];
    if (!b) return { ids: first, types: first.map(() => 0) };
    const second = [...bos, ...b, ...eos];
    return { ids: [...first, ...second], types: [...first.map(() => 0), ...second.map(() => 1)] };
  }

  encode(text: string, pair?: string | null, opts: EncodeOptions = {}): Encoding {
    let a = this.tokenize(text);
    let b = pair !== undefined && pair !== null ? this.tokenize(pair) : null;
    const special = opts.addSpecialTokens ?? true;
    const doTrunc = opts.truncation ?? opts.maxLength !== undefined;
    if (doTrunc && opts.maxLength !== undefined) {
      const extra = special ? this.withSpecials([], b ? [] : null).ids.length : 0;
      const strategy = opts.truncation === true || opts.truncation === undefined ? 'longest_first' : opts.truncation || 'longest_first';
      const [ta, tb] = truncate(
        a.map(String),
        b ? b.map(String) : null,
        Math.max(0, opts.maxLength - extra),
        strategy,
        opts.truncationSide ?? 'right',
      );
      a = ta.map(Number);
      b = tb ? tb.map(Number) : null;
    }
    const r = special ? this.withSpecials(a, b) : { ids: [...a, ...(b ?? [])], types: [...a.map(() => 0), ...(b ?? []).map(() => 1)] };
    return { inputIds: r.ids, attentionMask: r.ids.map(() => 1), tokenTypeIds: r.types };
  }

  encodeBatch(texts: TextInput[], opts: BatchEncodeOptions = {}): BatchEncoding {
    const encs = texts.map((t) => (Array.isArray(t) ? this.encode(t[0], t[1], opts) : this.encode(t, null, opts)));
    const padding = opts.padding ?? 'longest';
    let len = Math.max(0, ...encs.map((e) => e.inputIds.length));
    if (padding === 'max_length' && opts.maxLength !== undefined) len = opts.maxLength;
    if (opts.padToMultipleOf) len = Math.ceil(len / opts.padToMultipleOf) * opts.padToMultipleOf;
    const out: BatchEncoding = { inputIds: [], attentionMask: [], tokenTypeIds: [] };
    const pad = this.padTokenId ?? this.eosTokenId ?? 0;
    for (const e of encs) {
      const k = padding === false ? 0 : Math.max(0, len - e.inputIds.length);
      const fill = <T>(v: T) => new Array<T>(k).fill(v);
      const left = opts.paddingSide === 'left';
      out.inputIds.push(left ? [...fill(pad), ...e.inputIds] : [...e.inputIds, ...fill(pad)]);
      out.attentionMask.push(left ? [...fill(0), ...e.attentionMask] : [...e.attentionMask, ...fill(0)]);
      out.tokenTypeIds.push(left ? [...fill(0), ...e.tokenTypeIds] : [...e.tokenTypeIds, ...fill(0)]);
    }
    return out;
  }

  decode(ids: ArrayLike<number | bigint>, opts: DecodeOptions = {}): string {
    let text = '';
    let bytes: number[] = [];
    const flush = () => {
      if (bytes.length) text += Buffer.from(bytes).toString('utf8');
      bytes = [];
    };
    for (let i = 0; i < ids.length; i++) {
      const id = Number(ids[i]);
      const p = this.pieces[id];
      if (!p) throw new SiftError('E_INDEX', `decode: id ${id} outside the vocabulary of ${this.pieces.length}`);
      if (p.type === PieceType.CONTROL || p.type === PieceType.UNKNOWN) {
        if (opts.skipSpecialTokens && p.type === PieceType.CONTROL) continue;
        if (opts.skipSpecialTokens && p.type === PieceType.UNKNOWN) continue;
      }
      if (p.type === PieceType.BYTE) {
        bytes.push(parseInt(p.piece.slice(3, 5), 16));
        continue;
      }
      flush();
      text += p.piece.replace(/\u2581/g, ' ');
    }
    flush();
    // The dummy prefix's space, as SentencePiece (and tokenizer.json's Strip decoder) removes it.
    if (this.addDummyPrefix && text.startsWith(' ')) text = text.slice(1);
    return text;
  }
}

/** Loads a SentencePiece `tokenizer.model` (or `spiece.model`, `sentencepiece.bpe.model`). */
export function loadSentencePiece(file: string, opts: SentencePieceOptions = {}): SentencePieceTokenizer {
  return SentencePieceTokenizer.fromFile(file, opts);
}
