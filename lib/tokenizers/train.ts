/**
 * Learning BPE merges from word counts. Symbols are interned to integers and pair counts are
 * updated only for the words a merge touches, so a few thousand merges over a corpus of
 * megabytes take seconds. Ties are broken by the symbols' string order, so training is
 * deterministic.
 */
import { SiftError } from '../engine/errors';

export interface LearnBpeOptions {
  /** Stop when the most frequent pair occurs fewer times (default 2). */
  minFrequency?: number;
}

/**
 * The merges, in order, that BPE learns from words given as symbol sequences with their counts.
 * Every merge's parts and result are symbols of the input or of earlier merges.
 */
export function learnBpeMerges(words: Iterable<[string[], number]>, numMerges: number, opts: LearnBpeOptions = {}): [string, string][] {
  if (!Number.isSafeInteger(numMerges) || numMerges < 0)
    throw new SiftError('E_ARG', `learnBpeMerges: numMerges must be a non-negative integer, got ${numMerges}`);
  const minFreq = opts.minFrequency ?? 2;
  const symbols: string[] = [];
  const symbolId = new Map<string, number>();
  const intern = (s: string): number => {
    let id = symbolId.get(s);
    if (id === undefined) {
      id = symbols.length;
      symbols.push(s);
      symbolId.set(s, id);
    }
    return id;
  };
  const seqs: number[][] = [];
  const counts: number[] = [];
  for (const [syms, count] of words) {
    if (count <= 0 || syms.length === 0) continue;
    seqs.push(syms.map(intern));
    counts.push(count);
  }
  // A pair (a, b) of symbol ids as one number: ids stay far below 2^26.
  const SHIFT = 2 ** 26;
  const key = (a: number, b: number): number => a * SHIFT + b;
  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const addWord = (w: number, sign: 1 | -1): void => {
    const s = seqs[w];
    for (let i = 0; i + 1 < s.length; i++) {
      const k = key(s[i], s[i + 1]);
      const c = (pairCount.get(k) ?? 0) + sign * counts[w];
      if (c === 0) pairCount.delete(k);
      else pairCount.set(k, c);
      if (sign > 0) {
        let set = pairWords.get(k);
        if (!set) pairWords.set(k, (set = new Set()));
        set.add(w);
      }
    }
  };
  for (let w = 0; w < seqs.length; w++) addWord(w, 1);
  const merges: [string, string][] = [];
  while (merges.length < numMerges) {
    let best = -1;
    let bestCount = 0;
    for (const [k, c] of pairCount) {
      if (c > bestCount || (c === bestCount && best >= 0 && lessPair(k, best))) {
        best = k;
        bestCount = c;
      }
    }
    if (best < 0 || bestCount < minFreq) break;
    const a = Math.floor(best / SHIFT);
    const b = best % SHIFT;
    const merged = intern(symbols[a] + symbols[b]);
    merges.push([symbols[a], symbols[b]]);
    const touched = pairWords.get(best);
    pairWords.delete(best);
    for (const w of touched ?? []) {
      const s = seqs[w];
      addWord(w, -1);
      const next: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          next.push(merged);
          i++;
        } else next.push(s[i]);
      }
      seqs[w] = next;
      addWord(w, 1);
    }
  }
  return merges;

  function lessPair(x: number, y: number): boolean {
    const xa = symbols[Math.floor(x / SHIFT)];
    const ya = symbols[Math.floor(y / SHIFT)];
    if (xa !== ya) return xa < ya;
    return symbols[x % SHIFT] < symbols[y % SHIFT];
  }
}
