#!/usr/bin/env python3
"""PyTorch peers of the kernel benchmarks (bench/select.ts, bench/adamw.ts, bench/gemm.ts), same
shapes on the same card. Prints one JSON object per measurement:

  peer-topk        torch.topk(s, k) on a score tensor s = |g| (f32 or bf16), k = round(rate * numel),
                   as bench/select.ts times ours; op "topk_abs" also includes g.abs().flatten().
  peer-adamw-dense torch.optim.AdamW(fused=True) over one 4096x11008 f32 tensor (full fine-tuning's
                   optimizer cost per tensor).
  peer-adamw       the sparse step of bench/adamw.ts done in PyTorch: fused AdamW on the k f32
                   master values of every LLaMA-7B-shaped weight (evenly spaced indices, the same as
                   ours), then weight.view(-1).index_copy_(idx, master.to(bf16)) per tensor.
  peer-gemm        torch.matmul for bench/gemm.ts's transformer shapes (bf16 and f32).
  peer-attention   torch.nn.functional.scaled_dot_product_attention forward, and its backward
                   (torch.autograd.grad), at bench/attention.ts's shapes (bf16, causal; PyTorch
                   picks its flash / memory-efficient kernel).

Timing: CUDA events around each call (perf_counter on the CPU), warm-up first, median of repeats;
inputs rotate so that the working set exceeds the L2 cache (about 50-60 MB on H100/H200).
--quick: small sizes and few repeats (to test this script on a CPU).
"""
import argparse
import json
import statistics
import sys
import time

import torch

L2_BYTES = 64 << 20
LAYER_SHAPES = [("q", 4096, 4096), ("k", 4096, 4096), ("v", 4096, 4096), ("o", 4096, 4096),
                ("gate", 11008, 4096), ("up", 11008, 4096), ("down", 4096, 11008)]
DT = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def timer(device, fn, warmup, repeats):
    """Median milliseconds of fn(i) over repeats calls (fn gets the repeat index to rotate inputs)."""
    cuda = device.startswith("cuda")
    for i in range(warmup):
        fn(i)
    ts = []
    for i in range(repeats):
        if cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn(i)
            e.record()
            e.synchronize()
            ts.append(s.elapsed_time(e))
        else:
            t0 = time.perf_counter()
            fn(i)
            ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def copies(make, nbytes):
    """Enough distinct inputs that cycling through them spills the L2 cache."""
    n = max(1, min(4, -(-2 * L2_BYTES // max(nbytes, 1))))
    return [make(i) for i in range(n)]


def device_name(device):
    return torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"


def bench_topk(a, out):
    sizes = a.sizes.split(",") if a.sizes else (["1024x4096", "4096x4096"] if a.quick else ["4096x4096", "4096x11008", "8192x28672"])
    for dtype in a.dtypes.split(","):
        for size in sizes:
            r, c = map(int, size.split("x"))
            numel = r * c
            esz = torch.tensor([], dtype=DT[dtype]).element_size()
            gs = copies(lambda i: torch.randn(r, c, device=a.device, generator=None).to(DT[dtype]), numel * esz)
            ss = [g.abs().flatten() for g in gs]
            for rate in [float(x) for x in a.rates.split(",")]:
                k = max(1, round(rate * numel))
                for op, fn in (("topk", lambda i: torch.topk(ss[i % len(ss)], k)),
                               ("topk_abs", lambda i: torch.topk(gs[i % len(gs)].abs().flatten(), k))):
                    ms = timer(a.device, fn, a.warmup, a.repeats)
                    out(dict(bench="peer-topk", op=op, device=a.device, deviceName=device_name(a.device), dtype=dtype,
                             shape=size, numel=numel, rate=rate, k=k, ms=round(ms, 4)))
            del gs, ss


def bench_adamw_dense(a, out):
    r, c = (1024, 4096) if a.quick else (4096, 11008)
    ps = copies(lambda i: torch.nn.Parameter(torch.randn(r, c, device=a.device) * 0.02), r * c * 16)
    for p in ps:
        p.grad = torch.randn_like(p) * 1e-3
    try:
        opts = [torch.optim.AdamW([p], lr=1e-4, weight_decay=0.01, fused=True) for p in ps]
        kind = "fused"
    except (TypeError, RuntimeError, ValueError):
        opts = [torch.optim.AdamW([p], lr=1e-4, weight_decay=0.01) for p in ps]
        kind = "default"
    ms = timer(a.device, lambda i: opts[i % len(opts)].step(), a.warmup, a.repeats)
    out(dict(bench="peer-adamw-dense", optimizer=kind, device=a.device, deviceName=device_name(a.device),
             shape="%dx%d" % (r, c), params=r * c, ms=round(ms, 4)))


def bench_adamw_sparse(a, out):
    """The sparse step of bench/adamw.ts in PyTorch (same shapes, rates and index pattern)."""
    cuda = a.device.startswith("cuda")
    layers = a.layers or (1 if a.quick else 32 if cuda else 4)
    shapes = [(1024, 1024) if a.quick else (rr, cc) for _ in range(layers) for (_, rr, cc) in LAYER_SHAPES]
    weights = [torch.full((rr, cc), 0.01, dtype=DT[a.weight_dtype], device=a.device) for rr, cc in shapes]
    for rate in [float(x) for x in a.adamw_rates.split(",")]:
        stride = max(1, round(1 / rate))
        idx, masters = [], []
        for t, (rr, cc) in enumerate(shapes):
            i = torch.arange(t % stride, rr * cc, stride, device=a.device, dtype=torch.int64)
            idx.append(i)
            m = torch.nn.Parameter(torch.full((i.numel(),), 0.01, device=a.device))
            m.grad = torch.randn(i.numel(), device=a.device)
            masters.append(m)
        try:
            opt = torch.optim.AdamW(masters, lr=1e-4, weight_decay=0.01, fused=True)
            kind = "fused"
        except (TypeError, RuntimeError, ValueError):
            opt = torch.optim.AdamW(masters, lr=1e-4, weight_decay=0.01)
            kind = "default"

        @torch.no_grad()
        def step(_):
            opt.step()
            for w, i, m in zip(weights, idx, masters):
                w.view(-1).index_copy_(0, i, m.to(w.dtype))

        ms = timer(a.device, step, a.warmup, max(3, a.repeats // 2))
        out(dict(bench="peer-adamw", optimizer=kind, device=a.device, deviceName=device_name(a.device),
                 weightDtype=a.weight_dtype, layers=layers, tensors=len(shapes), params=sum(r * c for r, c in shapes),
                 rate=rate, k=sum(i.numel() for i in idx), ms=round(ms, 4)))
        del idx, masters, opt


def bench_gemm(a, out):
    # bench/gemm.ts's transformer shapes: forward x @ W^T (NT), input gradient g @ W (NN), weight
    # gradient g^T @ x (TN, K = tokens).
    shapes = [("gpt2 qkv/out 4096x768x768", 4096, 768, 768, "NT"), ("gpt2 mlp-up 4096x3072x768", 4096, 3072, 768, "NT"),
              ("gpt2 mlp-down 4096x768x3072", 4096, 768, 3072, "NT"), ("llama mlp 4096x2816x1024", 4096, 2816, 1024, "NT"),
              ("gpt2 dgrad mlp-up 4096x768x3072", 4096, 768, 3072, "NN"),
              ("gpt2 dgrad mlp-down 4096x3072x768", 4096, 3072, 768, "NN"),
              ("gpt2 wgrad qkv/out 768x768x4096", 768, 768, 4096, "TN"),
              ("gpt2 wgrad mlp-up 3072x768x4096", 3072, 768, 4096, "TN"),
              ("gpt2 wgrad mlp-down 768x3072x4096", 768, 3072, 4096, "TN"),
              ("llama wgrad mlp 2816x1024x4096", 2816, 1024, 4096, "TN")]
    if a.quick:
        shapes = [shapes[0], shapes[6]]
    for dtype in ("bf16", "f32"):
        for name, M, N, K, layout in shapes:
            x = torch.randn(K, M, device=a.device).to(DT[dtype]) if layout == "TN" else torch.randn(M, K, device=a.device).to(DT[dtype])
            w = torch.randn(N, K, device=a.device).to(DT[dtype]) if layout == "NT" else torch.randn(K, N, device=a.device).to(DT[dtype])
            if layout == "NT":
                f = lambda i: x @ w.t()
            elif layout == "TN":
                f = lambda i: x.t() @ w
            else:
                f = lambda i: x @ w
            ms = timer(a.device, f, a.warmup, a.repeats)
            out(dict(bench="peer-gemm", device=a.device, deviceName=device_name(a.device), dtype=dtype, shape=name,
                     M=M, N=N, K=K, layout=layout, ms=round(ms, 4), gflops=round(2 * M * N * K / (ms / 1e3) / 1e9, 1)))


def bench_attention(a, out):
    import torch.nn.functional as F
    cuda = a.device.startswith("cuda")
    shapes = [("gpt2-124m layer", 8, 12, 512, 64, True, 0.1), ("llama-220m layer", 8, 16, 512, 64, True, 0.0)]
    if a.quick or not cuda:
        shapes = [("small", 1, 4, 64 if a.quick else 128, 64, True, 0.1)]
    dtype = "bf16" if cuda else "f32"
    sdpa = getattr(F, "scaled_dot_product_attention", None)
    kernel = "sdpa"
    if sdpa is None:  # torch < 2.0: the unfused product (a smoke test of this script only)
        kernel = "math"

        def sdpa(q, k, v, dropout_p=0.0, is_causal=False):
            s = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
            if is_causal:
                s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).triu(1), float("-inf"))
            return F.dropout(s.softmax(-1), dropout_p) @ v
    for name, B, H, T, D, causal, p in shapes:
        q, k, v = (torch.randn(B, H, T, D, device=a.device).to(DT[dtype]).requires_grad_() for _ in range(3))
        g = torch.randn(B, H, T, D, device=a.device).to(DT[dtype])
        fwd = timer(a.device, lambda i: sdpa(q, k, v, dropout_p=p, is_causal=causal),
                    a.warmup, a.repeats)
        o = sdpa(q, k, v, dropout_p=p, is_causal=causal)
        bwd = timer(a.device, lambda i: torch.autograd.grad(o, (q, k, v), g, retain_graph=True), a.warmup, a.repeats)
        flops = 4 * B * H * T * T * D / (2 if causal else 1)
        out(dict(bench="peer-attention", device=a.device, deviceName=device_name(a.device), shape=name, dtype=dtype, kernel=kernel,
                 B=B, H=H, T=T, D=D, causal=causal, dropout=p, fwdMs=round(fwd, 4), bwdMs=round(bwd, 4),
                 fwdTflops=round(flops / (fwd / 1e3) / 1e12, 2), bwdTflops=round(2.5 * flops / (bwd / 1e3) / 1e12, 2)))
        del q, k, v, g, o


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default="topk,adamw-dense,adamw,gemm,attention")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--rates", default="0.01,0.05")
    ap.add_argument("--adamw-rates", default="0.01,0.05")
    ap.add_argument("--weight-dtype", default="bf16")
    ap.add_argument("--sizes", default="")
    ap.add_argument("--layers", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    a.repeats = a.repeats or (3 if a.quick else 20 if a.device.startswith("cuda") else 5)
    if a.quick:
        a.warmup = min(a.warmup, 1)
    torch.manual_seed(0)
    print("# torch %s on %s" % (torch.__version__, device_name(a.device)), file=sys.stderr)

    def out(row):
        row["torch"] = torch.__version__
        print(json.dumps(row), flush=True)

    benches = {"topk": bench_topk, "adamw-dense": bench_adamw_dense, "adamw": bench_adamw_sparse, "gemm": bench_gemm,
               "attention": bench_attention}
    for name in a.only.split(","):
        try:
            benches[name](a, out)
        except Exception as e:  # keep going: one failure must not hide the other figures
            out(dict(bench="peer-" + name, status="error", device=a.device, error=("%s: %s" % (type(e).__name__, e))[:300]))
        if a.device.startswith("cuda"):
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
