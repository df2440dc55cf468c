/**
 * The demo's data, made in code from a seed: short English reviews of products and films whose
 * sentiment comes from the words and from the sentence's structure (negation flips it; after
 * "but" the second clause decides), so that a classifier has to read more than one keyword.
 */
/** mulberry32: a small seeded generator, so that the corpus is the same on every machine. */
export class SeededRng {
  private s: number;
  constructor(seed: number) {
    this.s = (Math.floor(seed) ^ 0x5bd1e995) >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

const PRODUCTS = ['phone', 'laptop', 'camera', 'blender', 'headset', 'keyboard', 'jacket', 'backpack', 'lamp', 'kettle', 'watch', 'speaker', 'tablet', 'printer', 'chair', 'monitor'];
const FILMS = ['movie', 'film', 'documentary', 'sequel', 'thriller', 'comedy', 'drama', 'series', 'musical', 'cartoon'];
const PRODUCT_ASPECTS = ['battery', 'screen', 'design', 'price', 'sound', 'build quality', 'delivery', 'handle', 'fabric', 'software', 'display', 'packaging'];
const FILM_ASPECTS = ['plot', 'acting', 'soundtrack', 'ending', 'script', 'cast', 'pacing', 'dialogue', 'camera work', 'story'];
const POS = ['great', 'excellent', 'wonderful', 'superb', 'amazing', 'lovely', 'brilliant', 'fantastic', 'solid', 'delightful', 'impressive', 'good'];
const NEG = ['terrible', 'awful', 'poor', 'dreadful', 'boring', 'disappointing', 'weak', 'horrible', 'bad', 'flimsy', 'clumsy', 'mediocre'];
const POS_VERB = ['loved', 'enjoyed', 'liked', 'adored', 'recommend'];
const NEG_VERB = ['hated', 'disliked', 'regret buying', 'returned', 'cannot stand'];
const INTENS = ['', '', '', 'really ', 'very ', 'truly ', 'quite ', 'pretty '];
const NEUTRAL = [
  'I bought the {p} last {when}.',
  'The {p} arrived on {day}.',
  'We watched the {f} on {day} evening.',
  'My friend told me about this {p}.',
  'The {f} runs for about two hours.',
  'The {p} comes in three colours.',
  'I saw the {f} with my {who}.',
  'The store had the {p} on sale in {month}.',
];
const WHEN = ['week', 'month', 'year', 'summer', 'winter'];
const DAYS = ['Monday', 'Tuesday', 'Friday', 'Saturday', 'Sunday'];
const MONTHS = ['March', 'June', 'October', 'December'];
const WHO = ['sister', 'brother', 'parents', 'friends', 'kids'];

export interface Review {
  text: string;
  /** 1 positive, 0 negative. */
  label: number;
}

function pick<T>(rng: SeededRng, a: readonly T[]): T {
  return a[Math.floor(rng.next() * a.length)];
}

function clause(rng: SeededRng, film: boolean, positive: boolean): string {
  const aspect = pick(rng, film ? FILM_ASPECTS : PRODUCT_ASPECTS);
  // Negation: "was not great" is negative; the adjective's own polarity is flipped.
  const negate = rng.next() < 0.3;
  const adjPositive = negate ? !positive : positive;
  const adj = pick(rng, adjPositive ? POS : NEG);
  return `the ${aspect} was ${negate ? 'not ' : pick(rng, INTENS)}${adj}`;
}

/** One review with its label. */
export function makeReview(rng: SeededRng): Review {
  const film = rng.next() < 0.5;
  const thing = pick(rng, film ? FILMS : PRODUCTS);
  const positive = rng.next() < 0.5;
  const r = rng.next();
  let text: string;
  if (r < 0.35) {
    // "The X was A, but the Y was B": the clause after "but" carries the verdict.
    text = `The ${thing} was ${pick(rng, !positive ? POS : NEG)}, but ${clause(rng, film, positive)}.`;
  } else if (r < 0.6) {
    text = `${cap(clause(rng, film, positive))} and ${clause(rng, film, positive)}.`;
  } else if (r < 0.8) {
    if (rng.next() < 0.7) text = `I ${pick(rng, positive ? POS_VERB : NEG_VERB)} this ${thing}.`;
    else if (positive) text = `I did not ${pick(rng, ['hate', 'dislike'])} this ${thing}, ${clause(rng, film, true)}.`;
    else text = `I did not ${pick(rng, ['love', 'enjoy', 'like'])} this ${thing}.`;
  } else {
    text = `This ${thing} is ${pick(rng, INTENS)}${pick(rng, positive ? POS : NEG)}; ${clause(rng, film, positive)}.`;
  }
  return { text, label: positive ? 1 : 0 };
}

function cap(s: string): string {
  return s[0].toUpperCase() + s.slice(1);
}

function neutral(rng: SeededRng): string {
  return pick(rng, NEUTRAL)
    .replace('{p}', pick(rng, PRODUCTS))
    .replace('{f}', pick(rng, FILMS))
    .replace('{when}', pick(rng, WHEN))
    .replace('{day}', pick(rng, DAYS))
    .replace('{month}', pick(rng, MONTHS))
    .replace('{who}', pick(rng, WHO));
}

/** Pre-training text: documents of a few sentences mixing reviews and neutral remarks. */
export function pretrainCorpus(seed: number, docs: number): string[] {
  const rng = new SeededRng(seed);
  const out: string[] = [];
  for (let i = 0; i < docs; i++) {
    if (rng.next() < 0.5) {
      // Some reviews come with a verdict, as review sites print them: pre-training then learns
      // sentiment as a feature, which is what makes a pre-trained model worth fine-tuning sparsely.
      const r = makeReview(rng);
      out.push(`${r.text} ${VERDICT} ${r.label ? 'good' : 'bad'}.`);
      continue;
    }
    const n = 2 + Math.floor(rng.next() * 3);
    const s: string[] = [];
    for (let j = 0; j < n; j++) s.push(rng.next() < 0.3 ? neutral(rng) : makeReview(rng).text);
    out.push(s.join(' '));
  }
  return out;
}

/** The words after a review whose next token is the verdict. */
export const VERDICT = 'Overall:';

/**
 * Labelled reviews for the downstream task (a different seed from the pre-training text). With
 * `prompt`, each text ends in the verdict cue, so that the classifier reads the last token's state.
 */
export function sentimentDataset(seed: number, n: number, prompt = true): Review[] {
  const rng = new SeededRng(seed);
  return Array.from({ length: n }, () => {
    const r = makeReview(rng);
    return prompt ? { text: `${r.text} ${VERDICT}`, label: r.label } : r;
  });
}
