/**
 * Conversations ({messages: [{role, content}, ...]}) as training examples: the conversation is
 * rendered with the model's chat template (or DEFAULT_CHAT_TEMPLATE), tokenized as one text, and
 * only the tokens of the assistant's turns (their content and the end-of-turn token that closes
 * them) are labels, as transformers' assistant masks and TRL's assistant-only loss compute them.
 *
 * The assistant's text is found in the rendered string, whatever the template:
 * - a template with {% generation %} blocks marks it itself;
 * - otherwise each assistant content is wrapped in a pair of private-use marker characters of its
 *   own (inside its leading and trailing whitespace, so that `| trim` and `.strip()` act as on the
 *   real text), and the rendering with markers, once they are removed, must equal the real one;
 * - a turn whose markers do not both come through (a template that rewrites the content) is the
 *   difference between the conversation up to it with a generation prompt and the conversation up
 *   to and with it, or else the end of its content written right before its closing marker.
 * Character spans become token labels through the tokenizer's offsets.
 */
import { SiftError } from '../engine/errors';
import { renderChatTemplate, hasGenerationBlocks } from '../tokenizers/tokenizer';
import type { ChatMessage } from '../tokenizers/tokenizer';
import type { TextTokenizer } from '../tokenizers/types';

/**
 * The template used when the tokenizer has none: ChatML, as TRL's setup_chat_format writes it.
 * On a tokenizer without <|im_start|> / <|im_end|> tokens the markers are tokenized as text.
 */
export const DEFAULT_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/** Roles a chat row may use. */
export const CHAT_ROLES = ['system', 'user', 'assistant', 'tool'] as const;

/** What the chat task needs of a tokenizer beyond TextTokenizer (HfTokenizer has all of it). */
export interface ChatCapableTokenizer extends TextTokenizer {
  chatTemplate?(name?: string): string | undefined;
  specialToken?(name: 'bos' | 'eos' | 'unk' | 'pad' | 'cls' | 'sep' | 'mask'): string | undefined;
  readonly specialTokenStrings?: string[];
  encodeWithOffsets?(text: string, opts?: { addSpecialTokens?: boolean }): { inputIds: number[]; offsets: [number, number][] } | null;
}

// Private-use characters that mark text in a rendering: the generation blocks, and the start and
// end of each assistant turn (one pair per turn, so that a marker the template drops is noticed).
const GEN_OPEN = '\uE002';
const GEN_CLOSE = '\uE003';
const OPEN_BASE = 0xe100;
const CLOSE_BASE = 0xe900;
const REASONING_BASE = 0xf100;
const MAX_MARKED_TURNS = 0x700;
const MARKERS = /[\uE000-\uE003\uE100-\uF7FF]/;

/** The messages of a row, checked: a non-empty array of {role, content} with known roles, text contents and an assistant turn. */
export function chatMessages(value: unknown, rowNo: number, column = 'messages'): ChatMessage[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new SiftError('E_FORMAT', `row ${rowNo}: chat rows need '${column}', a non-empty list of {role, content} messages`);
  }
  const out: ChatMessage[] = [];
  value.forEach((m, i) => {
    if (m === null || typeof m !== 'object' || Array.isArray(m))
      throw new SiftError('E_FORMAT', `row ${rowNo}: message ${i + 1} is not an object with role and content`);
    const { role, content } = m as Record<string, unknown>;
    if (typeof role !== 'string' || !(CHAT_ROLES as readonly string[]).includes(role)) {
      throw new SiftError(
        'E_FORMAT',
        `row ${rowNo}: message ${i + 1} has role ${JSON.stringify(role)} (expected ${CHAT_ROLES.join(', ')})`,
      );
    }
    if (typeof content !== 'string')
      throw new SiftError(
        'E_FORMAT',
        `row ${rowNo}: message ${i + 1} (${role}) has content of type ${content === null ? 'null' : Array.isArray(content) ? 'array' : typeof content}; expected text`,
      );
    out.push({ ...(m as Record<string, unknown>), role, content });
  });
  if (!out.some((m) => m.role === 'assistant'))
    throw new SiftError('E_FORMAT', `row ${rowNo}: no assistant message, so nothing to learn from`);
  return out;
}

export interface RenderedChat {
  text: string;
  /** [start, end) of each assistant turn's text (and its end-of-turn token) in `text`. */
  spans: [number, number][];
}

function render(
  template: string,
  messages: ChatMessage[],
  extra: Record<string, unknown>,
  addGenerationPrompt = false,
  markGeneration?: [string, string],
): string {
  return renderChatTemplate(template, messages, { extra, addGenerationPrompt, markGeneration });
}

/**
 * Extends a span over the end-of-turn token written right after it, if any, past at most `slack`
 * whitespace characters (the content's own trailing whitespace, when the template keeps it).
 */
function withEndMarker(text: string, end: number, markers: string[], slack: number): number {
  for (let k = 0; k <= slack; k++) {
    for (const m of markers) if (m && text.startsWith(m, end + k)) return end + k + m.length;
    if (!/\s/.test(text[end + k] ?? '')) break;
  }
  return end;
}

/**
 * Renders a conversation and locates its assistant turns. `vars` are the template's variables
 * (bos_token, eos_token, ...); `endMarkers` the strings that may close a turn (special tokens).
 */
export function renderChat(template: string, messages: ChatMessage[], vars: Record<string, unknown>, endMarkers: string[]): RenderedChat {
  const markers = [...endMarkers].sort((a, b) => b.length - a.length);
  const clean = !messages.some(
    (m) => MARKERS.test(m.content) || (typeof m.reasoning_content === 'string' && MARKERS.test(m.reasoning_content)),
  );
  if (clean && hasGenerationBlocks(template)) {
    const marked = render(template, messages, vars, false, [GEN_OPEN, GEN_CLOSE]);
    const spans: [number, number][] = [];
    let text = '';
    let open = -1;
    for (const ch of marked) {
      if (ch === GEN_OPEN) open = text.length;
      else if (ch === GEN_CLOSE) {
        if (open >= 0) spans.push([open, text.length]);
        open = -1;
      } else text += ch;
    }
    return { text, spans };
  }
  const text = render(template, messages, vars);
  const turns = messages.map((m, k) => (m.role === 'assistant' ? k : -1)).filter((k) => k >= 0);
  const spans: ([number, number] | null)[] = turns.map(() => null);
  // Closing positions of turns whose opening marker the template dropped (e.g. with a reasoning part).
  const closes: (number | null)[] = turns.map(() => null);
  if (clean && turns.length <= MAX_MARKED_TURNS) {
    const wrapped = messages.map((m, k) => {
      const j = turns.indexOf(k);
      if (j < 0) return m;
      const lead = /^\s*/.exec(m.content)![0];
      const core = m.content.trim();
      const trail = core.length ? /\s*$/.exec(m.content)![0] : '';
      const out: ChatMessage = {
        ...m,
        content: lead + String.fromCharCode(OPEN_BASE + j) + core + String.fromCharCode(CLOSE_BASE + j) + trail,
      };
      // A separate reasoning part (Qwen3's reasoning_content) is the assistant's text too, where the template writes it.
      const r = m.reasoning_content;
      if (typeof r === 'string' && r.trim())
        out.reasoning_content = /^\s*/.exec(r)![0] + String.fromCharCode(REASONING_BASE + j) + r.trimStart();
      return out;
    });
    const marked = render(template, wrapped, vars);
    const opens = new Map<number, number>();
    const shut = new Map<number, number>();
    const reasons = new Map<number, number>();
    const seen = new Set<number>();
    let stripped = '';
    for (const ch of marked) {
      const c = ch.charCodeAt(0);
      if (c >= OPEN_BASE && c < OPEN_BASE + turns.length) {
        if (seen.has(c)) opens.delete(c - OPEN_BASE);
        else opens.set(c - OPEN_BASE, stripped.length);
        seen.add(c);
      } else if (c >= CLOSE_BASE && c < CLOSE_BASE + turns.length) {
        if (seen.has(c)) shut.delete(c - CLOSE_BASE);
        else shut.set(c - CLOSE_BASE, stripped.length);
        seen.add(c);
      } else if (c >= REASONING_BASE && c < REASONING_BASE + turns.length) {
        if (!seen.has(c)) reasons.set(c - REASONING_BASE, stripped.length);
        seen.add(c);
      } else stripped += ch;
    }
    // Markers only count where, once removed, the rendering is the real one.
    if (stripped === text) {
      turns.forEach((k, j) => {
        const o = opens.get(j);
        const c = shut.get(j);
        if (c !== undefined) closes[j] = c;
        if (o === undefined || c === undefined || o > c) return;
        const content = messages[k].content;
        // Leading whitespace the template kept belongs to the content too; so does the
        // end-of-turn token after it (past the content's own trailing whitespace).
        const lead = /^\s*/.exec(content)![0];
        let startAt = lead && text.slice(o - lead.length, o) === lead ? o - lead.length : o;
        const r = reasons.get(j);
        if (r !== undefined && r < startAt) startAt = r;
        const slack = content.trim().length ? /\s*$/.exec(content)![0].length : 0;
        spans[j] = [startAt, withEndMarker(text, c, markers, slack)];
      });
    }
  }
  turns.forEach((k, j) => {
    if (spans[j]) return;
    spans[j] = prefixSpan(template, messages, k, vars, text) ?? suffixSpan(text, messages[k].content, closes[j], markers);
    if (!spans[j]) {
      throw new SiftError(
        'E_UNSUPPORTED',
        `the chat template rewrites assistant message ${k + 1} so that its text cannot be found in the rendered conversation; give the template {% generation %} blocks around the assistant's text`,
      );
    }
  });
  return { text, spans: spans as [number, number][] };
}

/**
 * A turn as the difference between the conversation up to it with a generation prompt and the
 * conversation up to and with it (trailing whitespace left out), when the full rendering starts
 * with the latter.
 */
function prefixSpan(
  template: string,
  messages: ChatMessage[],
  k: number,
  vars: Record<string, unknown>,
  text: string,
): [number, number] | null {
  let before: string;
  let upTo: string;
  try {
    before = render(template, messages.slice(0, k), vars, true);
    upTo = render(template, messages.slice(0, k + 1), vars);
  } catch {
    return null;
  }
  if (!upTo.startsWith(before) || !text.startsWith(upTo) || upTo.length === before.length) return null;
  let end = upTo.length;
  while (end > before.length && /\s/.test(upTo[end - 1])) end--;
  return [before.length, end];
}

/**
 * A turn whose opening marker the template dropped with part of the content (Qwen3 drops the
 * reasoning of earlier answers): the longest end of the content written right before its
 * closing marker, and the end-of-turn token after it.
 */
function suffixSpan(text: string, content: string, close: number | null, markers: string[]): [number, number] | null {
  if (close === null) return null;
  const core = content.trim();
  let n = 0;
  while (n < core.length && n < close && text[close - n - 1] === core[core.length - n - 1]) n++;
  // Whitespace the match reached into belongs to the template's text before the content.
  while (n > 0 && /\s/.test(text[close - n])) n--;
  if (n === 0) return null;
  return [close - n, withEndMarker(text, close, markers, 0)];
}

export interface ChatEncoding {
  inputIds: number[];
  /** Token ids of the assistant's turns, -100 elsewhere. */
  labels: number[];
}

/**
 * Tokenizes a rendered conversation with labels on the assistant spans. Tokenizers with offsets
 * tokenize the text whole; others tokenize the pieces between span boundaries separately.
 */
export function encodeRenderedChat(tok: ChatCapableTokenizer, chat: RenderedChat, leadingBos: boolean): ChatEncoding {
  const inputIds: number[] = [];
  const labels: number[] = [];
  if (leadingBos && tok.bosTokenId !== undefined) {
    inputIds.push(tok.bosTokenId);
    labels.push(-100);
  }
  const withOffsets = typeof tok.encodeWithOffsets === 'function' ? tok.encodeWithOffsets(chat.text, { addSpecialTokens: false }) : null;
  if (withOffsets) {
    withOffsets.inputIds.forEach((id, i) => {
      const [s, e] = withOffsets.offsets[i];
      // A token that spells no text (a dummy-prefix piece) belongs where it stands.
      const inside = chat.spans.some(([a, b]) => (e > s ? s < b && e > a : s >= a && s < b));
      inputIds.push(id);
      labels.push(inside ? id : -100);
    });
    return { inputIds, labels };
  }
  const cuts = [...new Set([0, chat.text.length, ...chat.spans.flat()])].sort((a, b) => a - b);
  for (let i = 0; i + 1 < cuts.length; i++) {
    const [s, e] = [cuts[i], cuts[i + 1]];
    if (e <= s) continue;
    const inside = chat.spans.some(([a, b]) => s >= a && e <= b);
    for (const id of tok.encode(chat.text.slice(s, e), null, { addSpecialTokens: false }).inputIds) {
      inputIds.push(id);
      labels.push(inside ? id : -100);
    }
  }
  return { inputIds, labels };
}
