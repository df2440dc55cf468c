/**
 * Conversations ({messages: [{role, content}, ...]}) as training examples: the conversation is
 * rendered with the model's chat template (or DEFAULT_CHAT_TEMPLATE), tokenized as one text, and
 * only the tokens of the assistant's turns (their content and the end-of-turn token that closes
 * them) are labels, as transformers' assistant masks and TRL's assistant-only loss compute them.
 *
 * The assistant's text is found in the rendered string, whatever the template:
 * - a template with {% generation %} blocks marks it itself;
 * - otherwise each assistant content is wrapped in two private-use marker characters (inside its
 *   leading and trailing whitespace, so that `| trim` and `.strip()` act as on the real text),
 *   and the rendering with markers, once they are removed, must equal the real one;
 * - otherwise (a template that rewrites the content) each turn is the difference between the
 *   conversation up to it with a generation prompt and the conversation up to and with it.
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

const OPEN = '\uE000';
const CLOSE = '\uE001';
const GEN_OPEN = '\uE002';
const GEN_CLOSE = '\uE003';
const MARKERS = /[\uE000-\uE003]/;

/** The messages of a row, checked: a non-empty array of {role, content} with known roles, text contents and an assistant turn. */
export function chatMessages(value: unknown, rowNo: number, column = 'messages'): ChatMessage[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new SiftError('E_FORMAT', `row ${rowNo}: chat rows need '${column}', a non-empty list of {role, content} messages`);
  }
  const out: ChatMessage[] = [];
  value.forEach((m, i) => {
    if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new SiftError('E_FORMAT', `row ${rowNo}: message ${i + 1} is not an object with role and content`);
    const { role, content } = m as Record<string, unknown>;
    if (typeof role !== 'string' || !(CHAT_ROLES as readonly string[]).includes(role)) {
      throw new SiftError('E_FORMAT', `row ${rowNo}: message ${i + 1} has role ${JSON.stringify(role)} (expected ${CHAT_ROLES.join(', ')})`);
    }
    if (typeof content !== 'string') throw new SiftError('E_FORMAT', `row ${rowNo}: message ${i + 1} (${role}) has content of type ${content === null ? 'null' : Array.isArray(content) ? 'array' : typeof content}; expected text`);
    out.push({ ...(m as Record<string, unknown>), role, content });
  });
  if (!out.some((m) => m.role === 'assistant')) throw new SiftError('E_FORMAT', `row ${rowNo}: no assistant message, so nothing to learn from`);
  return out;
}

export interface RenderedChat {
  text: string;
  /** [start, end) of each assistant turn's text (and its end-of-turn token) in `text`. */
  spans: [number, number][];
}

function render(template: string, messages: ChatMessage[], extra: Record<string, unknown>, addGenerationPrompt = false, markGeneration?: [string, string]): string {
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
  const clean = !messages.some((m) => MARKERS.test(m.content));
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
  if (clean) {
    const wrapped = messages.map((m) => {
      if (m.role !== 'assistant') return m;
      const lead = /^\s*/.exec(m.content)![0];
      const core = m.content.trim();
      const trail = core.length ? /\s*$/.exec(m.content)![0] : '';
      return { ...m, content: lead + OPEN + core + CLOSE + trail };
    });
    const marked = render(template, wrapped, vars);
    const leads = messages.filter((m) => m.role === 'assistant').map((m) => /^\s*/.exec(m.content)![0]);
    const slack = messages.filter((m) => m.role === 'assistant').map((m) => (m.content.trim().length ? /\s*$/.exec(m.content)![0].length : 0));
    let stripped = '';
    const spans: [number, number][] = [];
    let open = -1;
    let ok = true;
    for (const ch of marked) {
      if (ch === OPEN) {
        if (open >= 0) ok = false;
        open = stripped.length;
      } else if (ch === CLOSE) {
        if (open < 0) ok = false;
        else {
          // Leading whitespace the template kept belongs to the content too.
          const lead = leads[spans.length] ?? '';
          const start = lead && stripped.slice(open - lead.length, open) === lead ? open - lead.length : open;
          spans.push([start, withEndMarker(text, stripped.length, markers, slack[spans.length] ?? 0)]);
        }
        open = -1;
      } else stripped += ch;
    }
    if (ok && open < 0 && stripped === text && spans.length === messages.filter((m) => m.role === 'assistant').length) {
      // A span may only reach its end marker once the marker follows the content in the real text.
      return { text, spans: spans.map(([s, e]) => [s, Math.min(e, text.length)]) };
    }
  }
  // The template rewrites the content: compare renderings of the conversation's prefixes.
  const spans: [number, number][] = [];
  messages.forEach((m, k) => {
    if (m.role !== 'assistant') return;
    const before = render(template, messages.slice(0, k), vars, true);
    const upTo = render(template, messages.slice(0, k + 1), vars);
    if (!upTo.startsWith(before) || !text.startsWith(upTo)) {
      throw new SiftError('E_UNSUPPORTED', `the chat template renders assistant message ${k + 1} differently within the conversation than at its end, so its tokens cannot be located; give the template {% generation %} blocks around the assistant's text`);
    }
    let end = upTo.length;
    while (end > before.length && /\s/.test(upTo[end - 1])) end--;
    spans.push([before.length, end]);
  });
  return { text, spans };
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
