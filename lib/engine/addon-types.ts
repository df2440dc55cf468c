/**
 * The whole native module's surface, by hand, in one place: the boundary between TypeScript and
 * C++/CUDA is this file. Every function validates its arguments natively and throws SiftError
 * (with `code`) on bad input. Tensors are opaque handles (`NativeTensor`).
 *
 * Conventions: dims may be negative (counted from the end); dtypes are DTypeName strings; devices
 * are 'cpu', 'cuda' or 'cuda:N'; functions returning several tensors return arrays (null for an
 * output that was not requested).
 */

/** Quantized weight formats (native/ops/quant.h). */
export type QuantFormat = 'int8' | 'nf4';

export type DTypeName = 'f32' | 'f16' | 'bf16' | 'i32' | 'i64' | 'f64' | 'bool';

/** Opaque native tensor handle. */
export interface NativeTensor {
  readonly __nativeTensor: unique symbol;
}

export interface MemoryCount {
  count: number;
  bytes: number;
  peakBytes: number;
}

export interface CudaDeviceInfo {
  index: number;
  name: string;
  computeCapability: string;
  multiprocessors: number;
  totalMemory: number;
  freeMemory: number;
  /** Native: '' when the device loaded this binary's kernels, else the CUDA error. */
  kernelImageError?: string;
  /** Whether this binary can run on the device (backends() sets it), and why not. */
  supported?: boolean;
  problem?: string;
}

import type { CudaProbe, CudaReason } from './cuda-status';

export interface BackendsInfo {
  cpu: { compiled: true; usable: true; threads: number; asyncExecutor: boolean; gemm?: string; simd?: string };
  cuda: {
    compiled: boolean;
    usable: boolean;
    /** Why CUDA is or is not usable, in words (backends() words it from `probe`: see cuda-status.ts). */
    status: string;
    /** The same as a code: 'usable', 'not-compiled', 'no-driver', 'driver-too-old', 'no-device', 'arch-not-covered', 'error'. */
    reason?: CudaReason;
    runtimeVersion: string;
    /** Newest CUDA version the installed driver supports ('12.4'), null without a driver or without CUDA. */
    driverVersion?: string | null;
    gemm: string;
    /** Native facts behind `status` (absent in CPU-only builds' older addons). */
    probe?: CudaProbe;
    devices: CudaDeviceInfo[];
  };
}

/** Unary elementwise ops (forward: `unary`; gradient w.r.t. input: `unaryBackward`). */
export type UnaryOp =
  | 'neg'
  | 'exp'
  | 'log'
  | 'tanh'
  | 'relu'
  | 'gelu'
  | 'gelu_tanh'
  | 'silu'
  | 'sigmoid'
  | 'sqrt'
  | 'rsqrt'
  | 'abs'
  | 'square'
  | 'reciprocal'
  | 'sin'
  | 'cos'
  | 'erf'
  | 'sign';

/**
 * Binary broadcasting ops; comparisons return bool tensors. On integer tensors div truncates
 * toward zero (x / 0 gives 0, no trap) and pow with a negative exponent gives 0 (except bases 1, -1).
 */
export type BinaryOp = 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'maximum' | 'minimum' | 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge';

/** Ops with a scalar right-hand side; `rsub` is s - a, `rdiv` is s / a, `rpow` is s ** a. */
export type ScalarOp = BinaryOp | 'rsub' | 'rdiv' | 'rpow';

/** The CPU executor's queue and the time the JavaScript thread spent blocked in it. */
export interface ExecutorStats {
  pending: number;
  maxPending: number;
  fence: number;
  mainThreadWaits: { count: number; totalMs: number; maxMs: number };
  /** Device waits run on worker threads (waitFenceAsync, toBufferAsync) since the last reset, on any device. */
  asyncWaits: number;
}

/** How the CUDA top-k calls ran (cudaSelectStats). */
export interface CudaSelectStats {
  mode: 'radix' | 'bracket';
  bracketHits: number;
  bracketMisses: number;
  radix: number;
}

export type ReduceOp = 'sum' | 'mean' | 'max' | 'min' | 'sumsq' | 'absmax';

export interface Addon {
  NativeTensor: Function;
  setErrorClass(ctor: new (code: string, message: string) => Error): void;

  // ---- creation and reading back (native/binding/tensor.cpp)
  fromBuffer(data: ArrayBufferView | ArrayBuffer, shape: number[], dtype: DTypeName, device: string): NativeTensor;
  full(shape: number[], value: number, dtype: DTypeName, device: string): NativeTensor;
  randn(shape: number[], dtype: DTypeName, device: string, seed: number | bigint): NativeTensor;
  rand(shape: number[], dtype: DTypeName, device: string, seed: number | bigint): NativeTensor;
  arange(start: number, end: number, step: number, dtype: DTypeName, device: string): NativeTensor;
  shape(t: NativeTensor): number[];
  strides(t: NativeTensor): number[];
  offset(t: NativeTensor): number;
  dtype(t: NativeTensor): DTypeName;
  device(t: NativeTensor): string;
  isContiguous(t: NativeTensor): boolean;
  sameStorage(a: NativeTensor, b: NativeTensor): boolean;
  toBuffer(t: NativeTensor): ArrayBuffer;
  toBufferAsync(t: NativeTensor): Promise<ArrayBuffer>;
  /** Copies a contiguous tensor without waiting for the device: the caller has awaited the work that wrote it (Tensor.dataAfter). */
  toBufferSettled(t: NativeTensor): ArrayBuffer;
  dispose(t: NativeTensor): void;
  isDisposed(t: NativeTensor): boolean;

  // ---- views and copies (native/binding/tensor.cpp)
  view(t: NativeTensor, shape: number[], strides: number[], offset: number): NativeTensor;
  contiguous(t: NativeTensor): NativeTensor;
  clone(t: NativeTensor): NativeTensor;
  cast(t: NativeTensor, dtype: DTypeName): NativeTensor;
  to(t: NativeTensor, device: string): NativeTensor;
  copy_(dst: NativeTensor, src: NativeTensor): void;
  fill_(dst: NativeTensor, value: number): void;
  concat(ts: NativeTensor[], dim: number): NativeTensor;

  // ---- runtime (native/binding/tensor.cpp)
  synchronize(device: string): void;
  liveTensors(): { cpu: MemoryCount; cuda: MemoryCount };
  resetPeakMemory(): void;
  backends(): BackendsInfo;
  cudaMemory(device: number): { allocated: number; reserved: number; peakAllocated: number; cudaMallocs: number };
  /**
   * Timing events on cuda:device's stream, for profiling: cudaEventRecord returns an id;
   * cudaEventElapsed(device, a, b) is the device time in ms between two recorded events (waits for
   * b); cudaEventsReset recycles the ids. E_DEVICE without CUDA.
   */
  cudaEventRecord(device: number): number;
  cudaEventElapsed(device: number, start: number, end: number): number;
  cudaEventsReset(device: number): void;
  /**
   * CUDA graphs on cuda:device's stream (native/cuda/runtime.h): begin capturing (kernels are
   * recorded, not run), end it (keep: instantiate; else drop), replay, destroy. One graph per device.
   */
  cudaGraphBegin(device: number): number;
  cudaGraphEnd(device: number, keep: boolean): void;
  cudaGraphLaunch(device: number, id: number): void;
  cudaGraphDestroy(device: number, id: number): void;
  cudaGraphStats(device: number): { graphs: number; capturing: boolean; poolBytes: number };
  emptyCache(): void;

  // ---- waiting without blocking JavaScript, CPU threads (native/binding/device_wait.cpp)
  /** Marks the work queued on the device so far; never waits. */
  deviceFence(device: string): number;
  /** Resolves once the device ran the work up to the fence (waits on a worker thread). */
  waitFenceAsync(device: string, fence: number): Promise<void>;
  executorStats(): ExecutorStats;
  resetExecutorStats(): void;
  /** Threads of later CPU kernels (0: the default), applied in op order; returns the previous request. */
  setNumThreads(threads: number): number;
  numThreads(): { threads: number; default: number; hardware: number; fromEnv: boolean };

  // ---- elementwise (native/binding/elementwise.cpp)
  unary(op: UnaryOp, x: NativeTensor): NativeTensor;
  /** Gradient of unary op w.r.t. its input, given the input x, the output y and dL/dy. */
  unaryBackward(op: UnaryOp, x: NativeTensor, y: NativeTensor, gy: NativeTensor): NativeTensor;
  binary(op: BinaryOp, a: NativeTensor, b: NativeTensor): NativeTensor;
  scalarOp(op: ScalarOp, a: NativeTensor, s: number): NativeTensor;
  where(cond: NativeTensor, a: NativeTensor, b: NativeTensor): NativeTensor;
  /** dst += alpha * src (same shape; src may broadcast to dst). In place, queued. */
  addInplace(dst: NativeTensor, src: NativeTensor, alpha: number): void;
  /** dst *= s, in place. */
  scaleInplace(dst: NativeTensor, s: number): void;

  // ---- reductions (native/binding/reduce.cpp)
  reduce(op: ReduceOp, x: NativeTensor, dims: number[], keepdim: boolean): NativeTensor;
  argmax(x: NativeTensor, dim: number, keepdim: boolean): NativeTensor;
  /** Sums x down to `shape` (the reverse of broadcasting), for gradients of broadcast ops. */
  sumTo(x: NativeTensor, shape: number[]): NativeTensor;

  // ---- matrix products (native/binding/matmul.cpp)
  /** Batched a @ b over the last two dims with broadcast batch dims; transA/transB transpose. */
  matmul(a: NativeTensor, b: NativeTensor, transA: boolean, transB: boolean): NativeTensor;
  /**
   * 2-D a @ b with an epilogue (native/ops/gemm_plan.h): fused into the GEMM by cuBLASLt where that
   * path is selected and has an algorithm, else the GEMM then separate kernels. extra: the GELU
   * input ('gelu_tanh_bias_aux') or the bias gradient ('bias_grad_a': [M], 'bias_grad_b': [N]).
   */
  matmulEpilogue(
    a: NativeTensor,
    b: NativeTensor,
    transA: boolean,
    transB: boolean,
    epilogue: GemmEpilogue,
    bias: NativeTensor | null,
  ): { out: NativeTensor; extra: NativeTensor | null; fused: boolean };
  /** Whether CUDA GEMMs fuse their epilogues (the cuBLASLt path is selected and loaded). */
  cudaGemmEpilogues(): boolean;
  /** The cuBLASLt call a row-major GEMM layout becomes (pure; for tests). */
  gemmLtPlan(layout: number[], batch: number[], epilogue: GemmEpilogue): GemmLtPlan;
  /** GEMM library names and microkernel in use: { cpu: string, cuda: string }. */
  gemmInfo(): { cpu: string; cuda: string };
  /**
   * Benchmark hook: forces the CPU GEMM implementation: 'auto' | 'native' | 'openblas', or one
   * native microkernel ('native:avx512' | 'native:avx2' | 'native:generic', for tests). Returns
   * false when it is not available here (OpenBLAS not loadable, CPU without the ISA).
   */
  /**
   * CUDA GEMM path: 'auto' (cuBLAS when loaded), 'kernel' (sift-ft's own kernel) or 'lt' (cuBLASLt
   * with fused epilogues where libcublasLt loads, cuBLAS otherwise); returns the previous one.
   */
  setCudaGemm(which: CudaGemmPath): CudaGemmPath;
  setCpuGemm(which: 'auto' | 'native' | 'openblas' | 'native:avx512' | 'native:avx2' | 'native:generic'): boolean;

  // ---- quantized weights (native/binding/quant.cpp; layouts in native/ops/quant.h)
  /** Quantizes a 2-D float weight: int8 -> [codes, absmax]; nf4 -> [packed, absmaxCodes, absmaxScales, offset]. */
  quantize(weight: NativeTensor, format: QuantFormat): NativeTensor[];
  /** The dequantized weight, f32 [rows, cols]. */
  dequantize(state: NativeTensor[], format: QuantFormat, rows: number, cols: number): NativeTensor;
  /** CUDA quantized products: 'tiles' (default) or 'fused' (dequantized in the GEMM's tiles); returns the previous mode. */
  setQuantGemm(mode: 'tiles' | 'fused'): 'tiles' | 'fused';
  /**
   * transpose false: x [..., cols] @ W^T -> [..., rows]; true: x [..., rows] @ W -> [..., cols]; W dequantized by tiles.
   * With idx (sorted flat indices into [rows, cols], i32/i64) and vals (f32 [k]), W's entries at idx are vals.
   */
  quantLinear(
    x: NativeTensor,
    state: NativeTensor[],
    format: QuantFormat,
    rows: number,
    cols: number,
    transpose: boolean,
    idx?: NativeTensor,
    vals?: NativeTensor,
  ): NativeTensor;

  // ---- normalisation, softmax, losses, embeddings (native/binding/nn.cpp)
  softmax(x: NativeTensor, dim: number): NativeTensor;
  softmaxBackward(y: NativeTensor, gy: NativeTensor, dim: number): NativeTensor;
  logSoftmax(x: NativeTensor, dim: number): NativeTensor;
  logSoftmaxBackward(y: NativeTensor, gy: NativeTensor, dim: number): NativeTensor;
  /** Normalises over the last dim. Returns [y, mean, rstd] (mean, rstd: f32 [rows]; f64 for f64 x). */
  layerNorm(
    x: NativeTensor,
    weight: NativeTensor | null,
    bias: NativeTensor | null,
    eps: number,
  ): [NativeTensor, NativeTensor, NativeTensor];
  /** Returns [gx, gweight | null, gbias | null]. */
  layerNormBackward(
    gy: NativeTensor,
    x: NativeTensor,
    weight: NativeTensor | null,
    mean: NativeTensor,
    rstd: NativeTensor,
    needWeightGrads: boolean,
  ): [NativeTensor, NativeTensor | null, NativeTensor | null];
  /** Returns [y, rstd] (rstd: f32 [rows]; f64 for f64 x). */
  rmsNorm(x: NativeTensor, weight: NativeTensor | null, eps: number): [NativeTensor, NativeTensor];
  rmsNormBackward(
    gy: NativeTensor,
    x: NativeTensor,
    weight: NativeTensor | null,
    rstd: NativeTensor,
    needWeightGrads: boolean,
  ): [NativeTensor, NativeTensor | null];
  /** weight [V, D], ids (i32/i64, any shape) -> [...ids.shape, D]. Out-of-range ids: E_INDEX. */
  embedding(weight: NativeTensor, ids: NativeTensor): NativeTensor;
  /** Scatter-add of gy rows into a zero [numRows, D] gradient. */
  embeddingBackward(gy: NativeTensor, ids: NativeTensor, numRows: number): NativeTensor;
  /**
   * Cross-entropy fused with log-softmax: logits [N, C], targets [N] (i32/i64). reduction 'mean'
   * averages over targets != ignoreIndex (0 when none is left). Returns [loss (scalar f32, or [N] for
   * 'none'), lse f32 [N]]; both f64 for f64 logits. Targets outside [0, C) other than ignoreIndex: E_INDEX.
   */
  crossEntropy(
    logits: NativeTensor,
    targets: NativeTensor,
    ignoreIndex: number,
    reduction: 'mean' | 'sum' | 'none',
    labelSmoothing: number,
  ): [NativeTensor, NativeTensor];
  crossEntropyBackward(
    logits: NativeTensor,
    targets: NativeTensor,
    lse: NativeTensor,
    gloss: NativeTensor,
    ignoreIndex: number,
    reduction: 'mean' | 'sum' | 'none',
    labelSmoothing: number,
  ): NativeTensor;

  // ---- attention, rotary embedding, dropout (native/binding/attention.cpp)
  /**
   * Scaled dot-product attention. q [B, H, Tq, D], k and v [B, Hkv, Tk, D] (H a multiple of Hkv).
   * mask: null, bool [B, Tk] key padding mask (true = attend), or an additive float mask
   * broadcastable to [B, H, Tq, Tk]. causal aligns the last query with the last key.
   * Returns [out [B, H, Tq, D], lse [B, H, Tq]] (lse: f32, f64 for f64 inputs; -inf for a row with
   * every key masked, whose output is zeros; kept for the backward).
   * softcap > 0 soft-caps the scores (softcap * tanh(scale * q.k / softcap), before the mask);
   * window > 0 (integer, causal only) adds a sliding window: query i at absolute position
   * a = i + Tk - Tq sees key j iff j <= a and a - j < window. Both 0 (or left out) = off.
   */
  attention(
    q: NativeTensor,
    k: NativeTensor,
    v: NativeTensor,
    mask: NativeTensor | null,
    causal: boolean,
    scale: number,
    dropoutP: number,
    seed: number | bigint,
    softcap?: number,
    window?: number,
  ): [NativeTensor, NativeTensor];
  /** Returns [gq, gk, gv]; softcap and window as given to the forward. */
  attentionBackward(
    gout: NativeTensor,
    q: NativeTensor,
    k: NativeTensor,
    v: NativeTensor,
    out: NativeTensor,
    lse: NativeTensor,
    mask: NativeTensor | null,
    causal: boolean,
    scale: number,
    dropoutP: number,
    seed: number | bigint,
    softcap?: number,
    window?: number,
  ): [NativeTensor, NativeTensor, NativeTensor];
  /**
   * Which CUDA attention kernels later calls use: 'auto' (tensor-core kernels for f16/bf16 with
   * head dims that are multiples of 16 up to 128 on sm_80+, CUDA-core kernels otherwise) or
   * 'simt' (CUDA-core kernels always, e.g. to compare). Returns the previous mode.
   */
  setCudaAttention(mode: 'auto' | 'simt'): 'auto' | 'simt';
  /**
   * Rotary position embedding, rotate-half convention (GPT-NeoX / LLaMA): x [B, H, T, D],
   * positions i32/i64 [T] or [B, T], invFreq f32 [D/2]. inverse=true rotates back (the backward).
   */
  rotary(x: NativeTensor, positions: NativeTensor, invFreq: NativeTensor, inverse: boolean): NativeTensor;
  /** y = x * keep / (1 - p) with keep drawn from (seed, element index); its own backward. */
  dropout(x: NativeTensor, p: number, seed: number | bigint): NativeTensor;
  // ---- SIFT kernels: selection, gather/scatter, statistics (native/binding/select.cpp)
  /**
   * Exact top-k of a non-negative float score tensor (treated as flat): the k largest values, ties
   * broken toward the lower flat index. Returns the flat indices sorted ascending (i64 when
   * numel >= 2^31, else i32). NaN or Inf in scores: E_NUMERIC.
   */
  /** `label` names the scores' tensor in an E_NUMERIC error (NaN/Inf in the scores). */
  topk(scores: NativeTensor, k: number, label?: string): NativeTensor;
  /**
   * One budget over many score tensors: the k largest values over all of them (ties toward the
   * lower tensor position, then the lower flat index). Returns one sorted index tensor per input.
   */
  topkGlobal(scores: NativeTensor[], k: number): NativeTensor[];
  /**
   * The CUDA kernels of `topk`: 'radix' (default) or 'bracket' (a sampled bracket around the k-th
   * value, one comparison pass, for one f32/f16/bf16 tensor; the radix kernels where the bracket
   * misses). Same indices either way. Returns the previous mode. SIFT_FT_CUDA_SELECT sets the
   * initial one.
   */
  setCudaSelect(mode: 'radix' | 'bracket'): 'radix' | 'bracket';
  /**
   * The current `setCudaSelect` mode and how the CUDA `topk` calls ran since
   * `resetCudaSelectStats()`: the bracket kernels selected (`bracketHits`), the bracket missed and
   * the radix kernels took over (`bracketMisses`), the radix kernels alone (`radix`: mode radix, or
   * f64 scores). CPU selections and `topkGlobal` are not counted.
   */
  cudaSelectStats(): CudaSelectStats;
  resetCudaSelectStats(): void;
  /** Selection scores from a dense tensor: 'abs' |x|, 'square' x^2, written or added into an f32 buffer of the same numel. */
  scoreAccumulate(dst: NativeTensor, src: NativeTensor, kind: 'abs' | 'square', accumulate: boolean): void;
  /** dst[i] (+)= src.flat[idx[i]] for the k indices; dst f32 [k], src any float dtype and shape. */
  gatherInto(dst: NativeTensor, src: NativeTensor, idx: NativeTensor, accumulate: boolean): void;
  /** dst.flat[idx[i]] = values[i] ('set') or += values[i] ('add'); dst any float dtype, values f32 [k]. */
  scatterInto(dst: NativeTensor, idx: NativeTensor, values: NativeTensor, mode: 'set' | 'add'): void;
  /**
   * Share of a dense gradient's squared norm on the selected entries: writes
   * [sum over idx of g^2, sum of all g^2] into out (f32 [2]) at position `slot` (out: f32 [n, 2]),
   * on the device, without a host round trip.
   */
  gradProportion(out: NativeTensor, slot: number, grad: NativeTensor, idx: NativeTensor): void;
  /**
   * The tile plan of flat indices into a [rows, cols] matrix for sddmm (i64, on idx's device).
   * Waits for the device once: make it once per index set.
   */
  sddmmPlan(idx: NativeTensor, rows: number, cols: number): NativeTensor;
  /**
   * Sampled dense-dense product: out[i] (+)= sum over tokens t of a[t, idx[i] / n] * b[t, idx[i] % n],
   * a [..., m] and b [..., n] of one float dtype, idx flat into [m, n], out f32 [k], accumulated
   * in f32. A linear layer's weight gradient at idx: a = dy, b = x for W [out, in]; a = x, b = dy
   * for W [in, out]. The plan (sddmmPlan) is optional (built per call without it).
   */
  sddmm(out: NativeTensor, a: NativeTensor, b: NativeTensor, idx: NativeTensor, accumulate: boolean, plan?: NativeTensor | null): void;
  /** Sum of squares over all elements of many float tensors, as an f32 scalar on the device. */
  sumSquares(ts: NativeTensor[]): NativeTensor;

  // ---- optimizers (native/binding/optim.cpp)
  /**
   * One fused sparse AdamW step over many tensors (one kernel launch on CUDA). For tensor t:
   * g = grads[t] * scale (scale: f32 scalar tensor on the device, e.g. a clipping coefficient, or
   * null), m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, master -= lr * (wd * master + mhat / (sqrt(vhat)
   * + eps)) with PyTorch's bias correction, then weights.flat[idx] = master (cast to the weight dtype).
   * grads, m, v, masters: f32 [k_t]; idx: i32/i64 [k_t]; weights any float dtype.
   */
  sparseAdamW(
    weights: NativeTensor[],
    indices: NativeTensor[],
    grads: NativeTensor[],
    m: NativeTensor[],
    v: NativeTensor[],
    masters: NativeTensor[],
    hp: AdamWHyper,
    scale: NativeTensor | null,
  ): void;
  /**
   * The CUDA kernel of `sparseAdamW`: 'rounds' (default) or 'prefetch' (the same kernel fetching
   * each entry's weight sector into L2 before writing it). Same results either way. Returns the
   * previous mode. SIFT_FT_CUDA_SPARSE_ADAMW sets the initial one.
   */
  setCudaSparseAdamW(mode: 'rounds' | 'prefetch'): 'rounds' | 'prefetch';
  /** Dense AdamW over many tensors (masters: f32 copies for f16/bf16 params, or null to update params directly). */
  adamW(
    params: NativeTensor[],
    grads: NativeTensor[],
    m: NativeTensor[],
    v: NativeTensor[],
    masters: (NativeTensor | null)[],
    hp: AdamWHyper,
    scale: NativeTensor | null,
  ): void;
  /** min(1, maxNorm / (sqrt(normSq) + 1e-6)) as an f32 scalar on the device (normSq: f32 scalar). */
  clipCoefficient(normSq: NativeTensor, maxNorm: number): NativeTensor;

  // ---- Process group (native/binding/dist.cpp, native/dist/): one per process
  /**
   * Joins the process group by rendezvous at masterAddr:masterPort (rank 0 serves it); resolves
   * once every rank has joined. backend 'gloo' (CPU tensors; E_UNSUPPORTED in a build without
   * gloo) or 'nccl' (CUDA tensors on cudaDevice; NCCL loaded at run time). A peer that does not
   * join or answer within timeoutMs: E_DIST.
   */
  distInit(o: {
    rank: number;
    worldSize: number;
    masterAddr: string;
    masterPort: number;
    timeoutMs: number;
    backend: 'gloo' | 'nccl';
    cudaDevice?: number;
  }): Promise<void>;
  /** Leaves the group (after the collectives already queued have run). */
  distDestroy(): void;
  /** Whether gloo is built in, and the group's rank, size and backend when this process has one. */
  /** library: the collective library and how the group was set up (e.g. NCCL's version and initialisation). */
  distInfo(): { gloo: boolean; rank?: number; worldSize?: number; backend?: string; library?: string };
  /** In-place sum over the ranks of a contiguous tensor (f32, f64, i32, i64; NCCL also bf16/f16), queued on its stream. */
  distAllReduce(t: NativeTensor): void;
  /**
   * Starts summing t over the ranks, in place, behind the work queued on t's stream (on the
   * group's communication thread or stream); returns an id for distWait. t must not be written
   * until then.
   */
  distAllReduceStart(t: NativeTensor): number;
  /** What is queued on the stream after this call runs after that all-reduce ended (E_DIST if it failed). */
  distWait(id: number): void;
  /** In-place copy of root's tensor to every rank, queued on its stream. */
  distBroadcast(t: NativeTensor, root: number): void;
  /** [worldSize, ...shape]: every rank's tensor, rank order, queued on the stream. */
  distAllGather(t: NativeTensor): NativeTensor;
  /** Queued barrier on the device's stream ('cpu' default). */
  distBarrier(device?: string): void;
}

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step number after this update (for bias correction). */
  step: number;
}

export type CudaGemmPath = 'auto' | 'kernel' | 'lt';
export type GemmEpilogue = 'none' | 'bias' | 'gelu_tanh_bias' | 'gelu_tanh_bias_aux' | 'bias_grad_a' | 'bias_grad_b';
/** One cublasLtMatmul call (column-major): D (m x n) = op(A) op(B) with the epilogue's cublasLtEpilogue_t. */
export interface GemmLtPlan {
  ok: boolean;
  why: string;
  transA: boolean;
  transB: boolean;
  aRows: number;
  aCols: number;
  lda: number;
  bRows: number;
  bCols: number;
  ldb: number;
  m: number;
  n: number;
  k: number;
  ldc: number;
  batch: number;
  strideA: number;
  strideB: number;
  strideC: number;
  epilogue: number;
  extraLen: number;
  auxLd: number;
}
