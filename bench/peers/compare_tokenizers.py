#!/usr/bin/env python3
"""Compares sift-ft's tokenization of the family tokenizer fixtures with transformers' AutoTokenizer
loading the same folders: ids (with and without special tokens), decodes, special-token ids, the
chat template rendered by apply_chat_template, and the chat task's assistant labels against the
assistant spans of the rendered conversation (each assistant message's content and the
end-of-turn token after it, located with the fast tokenizer's offsets).

    node dist/bench/tokenizers.js > ours.json
    python3 bench/peers/compare_tokenizers.py ours.json

Prints one JSON line per family ({"bench":"tokenizers", "family", "mismatches": [...]}) and exits 1
when any family differs.
"""
import json
import sys

from transformers import AutoTokenizer


def assistant_labels(tok, text, conversation, ids):
    """Labels as the chat task defines them, computed with transformers' offsets."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    specials = sorted({t for t in tok.all_special_tokens} | {str(t) for t in tok.added_tokens_decoder.values() if t.special}, key=len, reverse=True)
    spans = []
    pos = 0
    for m in conversation:
        if m["role"] != "assistant":
            continue
        core = m["content"].strip()
        start = text.index(core, pos)
        end = start + len(core)
        # The template may keep the content's own whitespace; the end-of-turn token follows it.
        trail = len(m["content"]) - len(m["content"].rstrip())
        lead = m["content"][: len(m["content"]) - len(m["content"].lstrip())]
        if lead and text[start - len(lead):start] == lead:
            start -= len(lead)
        for k in range(trail + 1):
            hit = next((s for s in specials if text.startswith(s, end + k)), None)
            if hit:
                end = end + k + len(hit)
                break
            if end + k >= len(text) or not text[end + k].isspace():
                break
        spans.append((start, end))
        pos = end
    labels = []
    for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
        inside = any((s < b and e > a) if e > s else (a <= s < b) for a, b in spans)
        labels.append(i if inside else -100)
    return enc["input_ids"], labels


def main():
    ours = json.load(open(sys.argv[1]))
    texts = ours["texts"]
    failed = False
    for family, o in ours["families"].items():
        tok = AutoTokenizer.from_pretrained(o["dir"])
        bad = []

        def cmp(what, a, b):
            if a != b:
                bad.append({"what": what, "ours": a, "transformers": b})

        for k, t in enumerate(texts):
            ids = tok(t)["input_ids"]
            cmp(f"encode[{k}]", o["encode"][k], ids)
            cmp(f"encode_plain[{k}]", o["encode_plain"][k], tok(t, add_special_tokens=False)["input_ids"])
            cmp(f"decode[{k}]", o["decode"][k], tok.decode(ids))
            cmp(f"decode_skip[{k}]", o["decode_skip"][k], tok.decode(ids, skip_special_tokens=True))
        cmp("specials", o["specials"], {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id, "unk": tok.unk_token_id})
        conv = o["conversation"]
        text = tok.apply_chat_template(conv, tokenize=False)
        cmp("template", o["template"], text)
        cmp("template_prompt", o["template_prompt"], tok.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True))
        cmp("chat_ids", o["chat_ids"], tok.apply_chat_template(conv, tokenize=True))
        ids, labels = assistant_labels(tok, text, conv, o["chat_ids"])
        cmp("chat_labels", o["chat_labels"], labels)
        failed = failed or bool(bad)
        print(json.dumps({"bench": "tokenizers", "family": family, "checks": 4 * len(texts) + 5, "mismatches": bad}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
