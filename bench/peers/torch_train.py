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

  qlora LoRA r=8 on NF4 target layers (bitsandbytes Linear4bit, double-quantized, bf16 compute),
        QLoRA-style; the rest of the model stays as built

--tiny: small configs on any device (to test this script on a CPU); --toy-model: GPT-2 and LLaMA
re-written here in plain PyTorch (same structure, dropout, initialisation and module names as
transformers'), for machines without transformers; rows then say impl "pytorch re-implementation".
--config PATH: a LLaMA-family config.json (e.g. bench/configs/llama-3-8b.json) instead of --models,
random weights held in bf16 (rows say weights "bf16"); full fine-tuning then runs AdamW on bf16
weights. A run that does not fit the card gives a row with status "oom"; a missing library
(peft, bitsandbytes) a row with status "skipped" and the reason.
"""
import argparse
import contextlib
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

GPT2_TARGETS = ["c_attn", "c_proj", "c_fc"]
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def model_config(key, tiny, config_path=None):
    """(name, config kwargs, targets), matching bench/train.ts's modelSpec; or a config.json's."""
    if config_path:
        with open(config_path) as f:
            cfg = json.load(f)
        return os.path.splitext(os.path.basename(config_path))[0], cfg, LLAMA_TARGETS
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


class ToyConv1D(nn.Module):
    """transformers' Conv1D: weight [in, out], y = x @ W + b."""

    def __init__(self, nin, nout, std):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nin, nout) * std)
        self.bias = nn.Parameter(torch.zeros(nout))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


def causal_attention(q, k, v, p, training):
    sdpa = getattr(F, "scaled_dot_product_attention", None)
    if sdpa is not None:
        return sdpa(q, k, v, dropout_p=p if training else 0.0, is_causal=True)
    T = q.shape[-2]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return F.dropout(s.softmax(-1), p, training) @ v


class ToyGPT2Block(nn.Module):
    """GPT-2's block as transformers writes it (Conv1D, pre-LN, gelu_new, dropout 0.1), same names."""

    def __init__(self, d, heads, n_layer, p):
        super().__init__()
        self.heads, self.p = heads, p
        proj_std = 0.02 / math.sqrt(2 * n_layer)
        self.ln_1 = nn.LayerNorm(d)
        self.ln_2 = nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.c_attn = ToyConv1D(d, 3 * d, 0.02)
        self.attn.c_proj = ToyConv1D(d, d, proj_std)
        self.mlp = nn.Module()
        self.mlp.c_fc = ToyConv1D(d, 4 * d, 0.02)
        self.mlp.c_proj = ToyConv1D(4 * d, d, proj_std)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(D, dim=2)
        sh = lambda t: t.view(B, T, self.heads, D // self.heads).transpose(1, 2)
        a = causal_attention(sh(q), sh(k), sh(v), self.p, self.training).transpose(1, 2).reshape(B, T, D)
        x = x + F.dropout(self.attn.c_proj(a), self.p, self.training)
        h = self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))
        return x + F.dropout(h, self.p, self.training)


class ToyGPT2(nn.Module):
    """GPT2LMHeadModel re-written here for machines without transformers (tied head, dropout 0.1)."""

    def __init__(self, vocab_size, n_embd, n_layer, n_head, n_positions, **_):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd)
        nn.init.normal_(self.wte.weight, std=0.02)
        nn.init.normal_(self.wpe.weight, std=0.01)
        self.h = nn.ModuleList([ToyGPT2Block(n_embd, n_head, n_layer, 0.1) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)

    def forward(self, input_ids, labels):
        T = input_ids.shape[1]
        x = F.dropout(self.wte(input_ids) + self.wpe(torch.arange(T, device=input_ids.device)), 0.1, self.training)
        for b in self.h:
            x = b(x)
        return lm_output(self.ln_f(x) @ self.wte.weight.t(), labels)


class ToyRMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class ToyLlamaBlock(nn.Module):
    """LLaMA's decoder layer (RMSNorm, rotary, SwiGLU, no biases), transformers' module names."""

    def __init__(self, d, inner, heads, eps, kv_heads=None):
        super().__init__()
        self.heads = heads
        self.kv_heads = kv_heads or heads
        kv = self.kv_heads * (d // heads)
        self.input_layernorm = ToyRMSNorm(d, eps)
        self.post_attention_layernorm = ToyRMSNorm(d, eps)
        self.self_attn = nn.Module()
        for n, out in (("q_proj", d), ("k_proj", kv), ("v_proj", kv), ("o_proj", d)):
            setattr(self.self_attn, n, nn.Linear(d, out, bias=False))
        self.mlp = nn.Module()
        self.mlp.gate_proj = nn.Linear(d, inner, bias=False)
        self.mlp.up_proj = nn.Linear(d, inner, bias=False)
        self.mlp.down_proj = nn.Linear(inner, d, bias=False)

    def forward(self, x, cos, sin):
        B, T, D = x.shape
        a = self.self_attn
        h = self.input_layernorm(x)
        sh = lambda t, n: t.view(B, T, n, D // self.heads).transpose(1, 2)
        q, k, v = sh(a.q_proj(h), self.heads), sh(a.k_proj(h), self.kv_heads), sh(a.v_proj(h), self.kv_heads)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if self.kv_heads != self.heads:  # grouped-query attention: each k/v head serves heads/kv_heads queries
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        x = x + a.o_proj(causal_attention(q, k, v, 0.0, self.training).transpose(1, 2).reshape(B, T, D))
        h = self.post_attention_layernorm(x)
        return x + self.mlp.down_proj(F.silu(self.mlp.gate_proj(h)) * self.mlp.up_proj(h))


class ToyLlama(nn.Module):
    """LlamaForCausalLM re-written here for machines without transformers (untied head)."""

    def __init__(self, vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
                 rms_norm_eps=1e-6, rope_theta=10000.0, num_key_value_heads=None, tie_word_embeddings=False, **_):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab_size, hidden_size)
        self.layers = nn.ModuleList([ToyLlamaBlock(hidden_size, intermediate_size, num_attention_heads, rms_norm_eps,
                                                   num_key_value_heads)
                                     for _ in range(num_hidden_layers)])
        self.norm = ToyRMSNorm(hidden_size, rms_norm_eps)
        self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        if tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        hd = hidden_size // num_attention_heads
        self.inv_freq = rope_theta ** (-torch.arange(0, hd, 2).float() / hd)

    def forward(self, input_ids, labels):
        T = input_ids.shape[1]
        f = torch.outer(torch.arange(T, device=input_ids.device).float(), self.inv_freq.to(input_ids.device))
        emb = torch.cat((f, f), dim=-1)
        x = self.embed_tokens(input_ids)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        for b in self.layers:
            x = b(x, cos, sin)
        return lm_output(self.lm_head(self.norm(x)), labels)


def lm_output(logits, labels):
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1))
    return type("Out", (), {"loss": loss})()


def build_model(key, tiny, toy, device, config_path=None):
    name, cfg, targets = model_config(key, tiny, config_path)
    torch.manual_seed(0)
    # Build on the device when this PyTorch can (torch >= 2.0): much faster than initialising on the CPU.
    ctx = torch.device(device) if device.startswith("cuda") and hasattr(torch.device, "__enter__") else contextlib.nullcontext()
    with ctx:
        model = _build(key, cfg, toy)
    model = model.to(device)
    if config_path:  # billion-parameter shapes: bf16 weights, as they are published
        model = model.to(torch.bfloat16)
    return name, model.train(), targets, cfg


def quantize_nf4(model, targets):
    """The target nn.Linear layers replaced by bitsandbytes' NF4 Linear4bit (double-quantized
    absmax, block 64, bf16 compute), quantized on the layer's device, as QLoRA loads a base."""
    import bitsandbytes as bnb
    for _, parent in list(model.named_modules()):
        for cname, c in list(parent.named_children()):
            if cname in targets and isinstance(c, nn.Linear):
                q = bnb.nn.Linear4bit(c.in_features, c.out_features, bias=c.bias is not None,
                                      compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4")
                q.weight = bnb.nn.Params4bit(c.weight.data.to("cpu"), requires_grad=False,
                                             compress_statistics=True, quant_type="nf4")
                setattr(parent, cname, q.to(c.weight.device))
                del c


def _build(key, cfg, toy):
    if toy:
        return ToyGPT2(**cfg) if key == "gpt2" else ToyLlama(**cfg)
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
        name, model, targets, cfg = build_model(key, a.tiny, a.toy_model, device, a.config)
        row["model"] = name
        row["impl"] = "pytorch re-implementation" if a.toy_model else "transformers"
        row["weights"] = "bf16" if a.config else "f32"
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

        if method in ("full", "lora", "qlora"):
            if method in ("lora", "qlora"):
                import peft
                if method == "qlora":
                    import bitsandbytes  # noqa: F401 (a missing library skips the row before the model changes)
                    quantize_nf4(model, targets)
                    row["quantize"] = "nf4 (bitsandbytes Linear4bit, double quant)"
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
        oom = "out of memory" in str(e).lower()
        row["status"] = "skipped" if isinstance(e, ImportError) else "oom" if oom else "error"
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
    ap.add_argument("--config", help="a LLaMA-family config.json: its shape (random bf16 weights) instead of --models")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: every core, as sift-ft uses)")
    a = ap.parse_args()
    cuda = a.device.startswith("cuda")
    if not cuda:
        torch.set_num_threads(a.threads or os.cpu_count() or 1)
    a.tiny = (a.tiny or not cuda) and not a.config
    a.batch = a.batch or (8 if not a.tiny else 4)
    a.seq = a.seq or (512 if not a.tiny else 64)
    a.dtype = a.dtype or ("bf16" if cuda else "f32")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    print("# torch %s on %s" % (torch.__version__, torch.cuda.get_device_name(0) if cuda else "cpu"), file=sys.stderr)
    for key in (["llama"] if a.config else a.models.split(",")):
        for method in a.methods.split(","):
            for rate in ([float(r) for r in a.rates.split(",")] if method == "sift" else [None]):
                print(json.dumps(bench_one(key, method, rate, a)), flush=True)


if __name__ == "__main__":
    main()
