#!/usr/bin/env python3
"""PyTorch peers of bench/train.ts: one training step of GPT-2 124M (transformers' default
GPT2Config) and a LLaMA-style 220M model (hidden 1024, intermediate 2816, 12 layers, 16 heads,
vocabulary 32000), random weights and tokens, batch 8 x 512, bf16 autocast (f32 weights), for

  full  full fine-tuning, torch.optim.AdamW(fused=True)
  lora  LoRA r=8 (alpha 16) through peft on the attention and MLP projections
  sift  SIFT as the paper describes it: one selection batch picks the top-k entries of |grad| per
        target weight; afterwards a hook on each target gathers the k selected gradient entries
        as soon as the dense gradient is accumulated and frees the dense gradient; AdamW
        (fused) runs on the k sparse values (f32), which are then written back into the weights.

Prints one JSON object per run (bench: "peer-train"): tokens/s, steps/s and the peak of
torch.cuda.max_memory_allocated over the timed steps (weights and optimizer state included, as in
bench/train.ts). Timing: warm-up steps, then timed steps between two torch.cuda.synchronize().

--tiny: small configs on any device (to test this script on a CPU); --toy-model: a small
GPT-like model written here, for machines without transformers (same module names).
"""
import argparse
import contextlib
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

GPT2_TARGETS = ["c_attn", "c_proj", "c_fc"]
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def model_config(key, tiny):
    """(name, config kwargs, targets), matching bench/train.ts's modelSpec."""
    if key == "gpt2":
        if tiny:
            return "gpt2-small", dict(vocab_size=2048, n_positions=256, n_embd=128, n_layer=2, n_head=4), GPT2_TARGETS
        return "gpt2-124m", dict(), GPT2_TARGETS  # GPT2Config() defaults
    if tiny:
        cfg = dict(vocab_size=2048, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)
        return "llama-small", cfg, LLAMA_TARGETS
    cfg = dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=12,
               num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=2048,
               rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False)
    return "llama-220m", cfg, LLAMA_TARGETS


class ToyBlock(nn.Module):
    """Pre-LN block with GPT-2's module names (Linear in place of Conv1D)."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d)
        self.ln_2 = nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(d, 3 * d)
        self.attn.c_proj = nn.Linear(d, d)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(d, 4 * d)
        self.mlp.c_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(D, dim=2)
        sh = lambda t: t.view(B, T, self.heads, D // self.heads).transpose(1, 2)
        q, k, v = sh(q), sh(k), sh(v)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(D // self.heads)
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
        x = x + self.attn.c_proj(a)
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))


class ToyLM(nn.Module):
    """A small GPT-like LM for smoke tests without transformers; returns an object with .loss."""

    def __init__(self, vocab_size, n_embd, n_layer, n_head, n_positions, **_):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd)
        self.h = nn.ModuleList([ToyBlock(n_embd, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, input_ids, labels):
        T = input_ids.shape[1]
        x = self.wte(input_ids) + self.wpe(torch.arange(T, device=input_ids.device))
        for b in self.h:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1))
        return type("Out", (), {"loss": loss})()


def build_model(key, tiny, toy, device):
    name, cfg, targets = model_config(key, tiny)
    torch.manual_seed(0)
    # Build on the device when this PyTorch can (torch >= 2.0): much faster than initialising on the CPU.
    ctx = torch.device(device) if device.startswith("cuda") and hasattr(torch.device, "__enter__") else contextlib.nullcontext()
    with ctx:
        model = _build(key, cfg, toy)
    if toy:
        name += "-toy"  # not the same model as ours: never paired with our rows
    return name, model.to(device).train(), targets, cfg


def _build(key, cfg, toy):
    if toy:
        if key != "gpt2":
            raise RuntimeError("--toy-model has only a GPT-2-like model")
        return ToyLM(**cfg)
    import transformers
    if key == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg))
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))


def adamw(params, lr, device):
    """Fused AdamW where this PyTorch has it for the device, else the default implementation."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True), "fused"
    except (TypeError, RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0), "default"


def matches(name, targets):
    last = name.rsplit(".", 1)[-1]
    return last in targets


class TorchSift:
    """SIFT in PyTorch: selection from one batch, then sparse gradients gathered in hooks."""

    def __init__(self, model, targets, rate):
        self.model = model
        self.rate = rate
        self.targets = []  # (name, weight)
        for mname, m in model.named_modules():
            if matches(mname, targets) and hasattr(m, "weight"):
                self.targets.append((mname + ".weight", m.weight))
        tset = {id(w) for _, w in self.targets}
        for p in model.parameters():
            p.requires_grad_(id(p) in tset)
        self.idx, self.values, self.handles = [], [], []

    def select(self):
        """Top-k of |grad| per target from the gradients of the selection batch."""
        for _, w in self.targets:
            k = min(int(self.rate * w.numel()) + 1, w.numel())
            idx = torch.topk(w.grad.detach().abs().flatten(), k).indices.sort().values
            w.grad = None
            self.idx.append(idx)
            self.values.append(nn.Parameter(w.detach().flatten()[idx].float().clone()))
        post = hasattr(torch.Tensor, "register_post_accumulate_grad_hook")
        for i, (_, w) in enumerate(self.targets):
            if post:
                self.handles.append(w.register_post_accumulate_grad_hook(self._post_hook(i)))
            else:  # older PyTorch: gather in a grad hook; the dense grad is dropped after backward
                self.handles.append(w.register_hook(self._grad_hook(i)))
        self.post = post

    def _gather(self, i, g):
        vals = self.values[i]
        s = g.flatten()[self.idx[i]].float()
        vals.grad = s if vals.grad is None else vals.grad.add_(s)

    def _post_hook(self, i):
        def hook(w):
            self._gather(i, w.grad)
            w.grad = None  # the dense gradient is freed as soon as its k entries are taken
        return hook

    def _grad_hook(self, i):
        def hook(g):
            self._gather(i, g)
            return None
        return hook

    def after_backward(self):
        if not self.post:
            for _, w in self.targets:
                w.grad = None

    @torch.no_grad()
    def write_back(self):
        for (_, w), idx, vals in zip(self.targets, self.idx, self.values):
            w.view(-1).index_copy_(0, idx, vals.to(w.dtype))


def bench_one(key, method, rate, a):
    device = a.device
    cuda = device.startswith("cuda")
    row = dict(bench="peer-train", framework="torch", torch=torch.__version__, status="ok", device=device,
               deviceName=torch.cuda.get_device_name(0) if cuda else "cpu x%d" % torch.get_num_threads(),
               model=None, method=method, rate=rate, dtype=a.dtype, batch=a.batch, seq=a.seq)
    model = opt = sift = None
    try:
        name, model, targets, cfg = build_model(key, a.tiny, a.toy_model, device)
        row["model"] = name
        row["params"] = sum(p.numel() for p in model.parameters())
        vocab = cfg.get("vocab_size", 50257)
        g = torch.Generator().manual_seed(1234)
        ids = torch.randint(0, vocab, (a.batch, a.seq), generator=g).to(device)
        amp = cuda and a.dtype == "bf16"

        def forward_backward():
            with (torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            return loss

        if method == "full":
            params = [p for p in model.parameters() if p.requires_grad]
            opt, kind = adamw(params, 1e-5, device)
            row["trainable"] = sum(p.numel() for p in params)

            def step():
                loss = forward_backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                return loss
        elif method == "lora":
            import peft
            conv1d = key == "gpt2" and not a.toy_model
            lcfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets, fan_in_fan_out=conv1d)
            model = peft.get_peft_model(model, lcfg)
            params = [p for p in model.parameters() if p.requires_grad]
            opt, kind = adamw(params, 1e-5, device)
            row["trainable"] = sum(p.numel() for p in params)

            def step():
                loss = forward_backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                return loss
        else:
            sift = TorchSift(model, targets, rate)
            forward_backward()  # selection batch
            sift.select()
            opt, kind = adamw(sift.values, 1e-5, device)
            row["trainable"] = sum(v.numel() for v in sift.values)
            row["hook"] = "post_accumulate_grad" if sift.post else "grad"

            def step():
                loss = forward_backward()
                sift.after_backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                sift.write_back()
                return loss
        row["optimizer"] = kind
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        first = 0.0
        for _ in range(a.warmup):
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            first = time.perf_counter() - t0
        steps = a.steps or max(3, min(50, int(a.budget_s / max(first, 1e-3))))
        sync()
        if cuda:
            row["steadyBytes"] = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        loss = None
        for _ in range(steps):
            loss = step()
        sync()
        dt = time.perf_counter() - t0
        row["peakBytes"] = torch.cuda.max_memory_allocated() if cuda else None
        row["steps"] = steps
        row["warmup"] = a.warmup
        row["msPerStep"] = round(dt / steps * 1e3, 3)
        row["stepsPerSec"] = round(steps / dt, 3)
        row["tokensPerSec"] = round(a.batch * a.seq * steps / dt)
        row["loss"] = round(float(loss.item()), 4)
    except Exception as e:  # one failed run must not end the others
        row["status"] = "skipped" if isinstance(e, ImportError) else "error"
        row["error"] = ("%s: %s" % (type(e).__name__, e))[:300]
    finally:
        del model, opt, sift
        if cuda:
            torch.cuda.empty_cache()
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="gpt2,llama")
    ap.add_argument("--methods", default="sift,full,lora")
    ap.add_argument("--rates", default="0.001,0.01,0.05")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=3.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["bf16", "f32"])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--toy-model", action="store_true")
    a = ap.parse_args()
    cuda = a.device.startswith("cuda")
    a.tiny = a.tiny or not cuda
    a.batch = a.batch or (8 if not a.tiny else 4)
    a.seq = a.seq or (512 if not a.tiny else 64)
    a.dtype = a.dtype or ("bf16" if cuda else "f32")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    print("# torch %s on %s" % (torch.__version__, torch.cuda.get_device_name(0) if cuda else "cpu"), file=sys.stderr)
    for key in a.models.split(","):
        for method in a.methods.split(","):
            for rate in ([float(r) for r in a.rates.split(",")] if method == "sift" else [None]):
                print(json.dumps(bench_one(key, method, rate, a)), flush=True)


if __name__ == "__main__":
    main()
