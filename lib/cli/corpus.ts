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

const PRODUCTS = [
  'phone',
  'laptop',
  'camera',
  'blender',
  'headset',
  'keyboard',
  'jacket',
  'backpack',
  'lamp',
  'kettle',
  'watch',
  'speaker',
  'tablet',
  'printer',
  'chair',
  'monitor',
];
const FILMS = ['movie', 'film', 'documentary', 'sequel', 'thriller', 'comedy', 'drama', 'series', 'musical', 'cartoon'];
const PRODUCT_ASPECTS = [
  'battery',
  'screen',
  'design',
  'price',
  'sound',
  'build quality',
  'delivery',
  'handle',
  'fabric',
  'software',
  'display',
  'packaging',
];
const FILM_ASPECTS = ['plot', 'acting', 'soundtrack', 'ending', 'script', 'cast', 'pacing', 'dialogue', 'camera work', 'story'];
const POS = [
  'great',
  'excellent',
  'wonderful',
  'superb',
  'amazing',
  'lovely',
  'brilliant',
  'fantastic',
  'solid',
  'delightful',
  'impressive',
  'good',
];
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

/** What a review talks about and the words it judges with. */
interface Domain {
  things: readonly string[];
  aspects: readonly string[];
  pos: readonly string[];
  neg: readonly string[];
}

const PRODUCT: Domain = { things: PRODUCTS, aspects: PRODUCT_ASPECTS, pos: POS, neg: NEG };
const FILM: Domain = { things: FILMS, aspects: FILM_ASPECTS, pos: POS, neg: NEG };
/**
 * The fine-tuning domain: restaurants, absent from the pre-training text, judged mostly with
 * adjectives the pre-trained model has never read ("bland", "cozy"): the model knows how reviews
 * work (negation, "but", the verdict) but must learn what the new words mean.
 */
const RESTAURANT: Domain = {
  things: ['restaurant', 'cafe', 'bistro', 'diner', 'pizzeria', 'bakery', 'noodle bar', 'steakhouse'],
  aspects: ['service', 'waiter', 'soup', 'dessert', 'portion', 'menu', 'coffee', 'atmosphere', 'bread', 'salad'],
  pos: ['tasty', 'delicious', 'cozy', 'friendly', 'fresh', 'generous', 'crispy', 'juicy', 'charming', 'spotless', ...POS.slice(0, 4)],
  neg: ['bland', 'stale', 'rude', 'greasy', 'soggy', 'cramped', 'noisy', 'overpriced', 'burnt', 'grimy', ...NEG.slice(0, 4)],
};

export type DomainName = 'general' | 'restaurant';

function clause(rng: SeededRng, d: Domain, positive: boolean): string {
  const aspect = pick(rng, d.aspects);
  // Negation: "was not great" is negative; the adjective's own polarity is flipped.
  const negate = rng.next() < 0.3;
  const adjPositive = negate ? !positive : positive;
  const adj = pick(rng, adjPositive ? d.pos : d.neg);
  return `the ${aspect} was ${negate ? 'not ' : pick(rng, INTENS)}${adj}`;
}

/** One review with its label: products and films ('general', the pre-training domain) or restaurants. */
export function makeReview(rng: SeededRng, domain: DomainName = 'general'): Review {
  const d = domain === 'restaurant' ? RESTAURANT : rng.next() < 0.5 ? FILM : PRODUCT;
  const thing = pick(rng, d.things);
  const positive = rng.next() < 0.5;
  const r = rng.next();
  let text: string;
  if (r < 0.35) {
    // "The X was A, but the Y was B": the clause after "but" carries the verdict.
    text = `The ${thing} was ${pick(rng, !positive ? d.pos : d.neg)}, but ${clause(rng, d, positive)}.`;
  } else if (r < 0.6) {
    text = `${cap(clause(rng, d, positive))} and ${clause(rng, d, positive)}.`;
  } else if (r < 0.8) {
    if (rng.next() < 0.7) text = `I ${pick(rng, positive ? POS_VERB : NEG_VERB)} this ${thing}.`;
    else if (positive) text = `I did not ${pick(rng, ['hate', 'dislike'])} this ${thing}, ${clause(rng, d, true)}.`;
    else text = `I did not ${pick(rng, ['love', 'enjoy', 'like'])} this ${thing}.`;
  } else {
    text = `This ${thing} is ${pick(rng, INTENS)}${pick(rng, positive ? d.pos : d.neg)}; ${clause(rng, d, positive)}.`;
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

/**
 * Pre-training text: documents of one to three reviews, each followed by its verdict as review
 * sites print them ("Overall: good."), sometimes after a neutral remark. The verdict is a token the
 * language model can only predict by reading the review (negation, "but"), so pre-training has to
 * learn sentiment as a feature: that is what makes the pre-trained model worth fine-tuning sparsely.
 */
export function pretrainCorpus(seed: number, docs: number): string[] {
  const rng = new SeededRng(seed);
  const out: string[] = [];
  for (let i = 0; i < docs; i++) {
    const n = 1 + Math.floor(rng.next() * 3);
    const s: string[] = [];
    for (let j = 0; j < n; j++) {
      if (rng.next() < 0.25) s.push(neutral(rng));
      const r = makeReview(rng);
      s.push(`${r.text} ${VERDICT} ${r.label ? 'good' : 'bad'}.`);
    }
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
export function sentimentDataset(seed: number, n: number, prompt = true, domain: DomainName = 'general'): Review[] {
  const rng = new SeededRng(seed);
  return Array.from({ length: n }, () => {
    const r = makeReview(rng, domain);
    return prompt ? { text: `${r.text} ${VERDICT}`, label: r.label } : r;
  });
}
