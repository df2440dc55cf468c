/**
 * The Tensor: a JavaScript object over one native tensor handle, with autograd bookkeeping.
 * Methods delegate to the op functions in lib/autograd (forward and backward side by side there).
 */
import type { NativeTensor, ReduceOp } from './addon-types';
import { native } from './native';
import { DType, dtypeSize, isFloat, normalizeDevice } from './dtype';
import { SiftError, check } from './errors';
import { track, registerTensorClass } from './scope';
import type { GradNode } from '../autograd/tape';
import * as ops from '../autograd/ops';
import { envFlag } from './env';

/** Called when a parameter's gradient is complete during backward(). Return a tensor to replace
 * the gradient, null to drop it (it is disposed), or nothing to keep it. */
export type GradHook = (grad: Tensor, param: Tensor) => Tensor | null | void;
/** Called once a leaf's gradient of a backward() has been taken by its hooks or added to .grad. */
export type PostAccumulateGradHook = (param: Tensor) => void;

let nextId = 1;

/**
 * Metadata an op already knows about its output, given at construction so that reading it costs no
 * native call. Every field is optional; what is not given is read from the native handle on first
 * use (and cached: a handle's shape, strides, offset, dtype and device never change).
 * `contiguous: true` says the output was freshly laid out: strides are the contiguous strides of
 * `shape` and the offset is 0 (needs `shape`).
 */
export interface TensorMeta {
  shape?: number[];
  dtype?: DType;
  device?: string;
  strides?: number[];
  offset?: number;
  contiguous?: boolean;
}

/** Row-major strides (in elements) of a shape. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const st = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

/** The native engine's rule (Tensor::is_contiguous): size-1 dims may have any stride. */
function stridesAreContiguous(shape: readonly number[], strides: readonly number[]): boolean {
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && strides[i] !== acc) return false;
    acc *= shape[i];
  }
  return true;
}

/**
 * SIFT_FT_CHECK_META=1: every tensor built with metadata compares it with the native handle's at
 * construction (E_INTERNAL on a difference). For tests; off by default.
 */
const CHECK_META = envFlag('SIFT_FT_CHECK_META');

function sameArray(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Compares metadata given at construction with the handle's (SIFT_FT_CHECK_META=1 and tests). */
export function checkTensorMeta(handle: NativeTensor, meta: TensorMeta): void {
  const N = native();
  const bad = (what: string, given: unknown, actual: unknown) => {
    throw new SiftError(
      'E_INTERNAL',
      `tensor metadata given at construction differs from the native handle's: ${what} ${JSON.stringify(given)} vs ${JSON.stringify(actual)}`,
    );
  };
  const shape = N.shape(handle);
  if (meta.shape && !sameArray(meta.shape, shape)) bad('shape', meta.shape, shape);
  if (meta.dtype !== undefined && meta.dtype !== N.dtype(handle)) bad('dtype', meta.dtype, N.dtype(handle));
  if (meta.device !== undefined && meta.device !== N.device(handle)) bad('device', meta.device, N.device(handle));
  const strides = N.strides(handle);
  if (meta.strides && !sameArray(meta.strides, strides)) bad('strides', meta.strides, strides);
  if (meta.offset !== undefined && meta.offset !== N.offset(handle)) bad('offset', meta.offset, N.offset(handle));
  if (meta.contiguous) {
    if (!sameArray(contiguousStrides(shape), strides)) bad('contiguous strides', contiguousStrides(shape), strides);
    if (N.offset(handle) !== 0) bad('offset (contiguous)', 0, N.offset(handle));
  }
}

export class Tensor {
  /** The native handle; null once disposed. */
  private _handle: NativeTensor | null;
  private _shape: number[] | undefined;
  private _dtype: DType | undefined;
  private _device: string | undefined;
  private _strides: number[] | undefined;
  private _offset: number | undefined;
  /** Strides are contiguousStrides(shape) and the offset is 0 (a freshly allocated output). */
  private _fresh: boolean;
  private _contiguous: boolean | undefined;
  /** A view (or another handle) of this tensor's storage was made from JavaScript. */
  private _viewed = false;
  private _hooks: GradHook[] | undefined;
  private _postHooks: PostAccumulateGradHook[] | undefined;
  readonly id: number;
  /** Whether gradients flow to this tensor (set on leaves by hand; propagated through ops). */
  requiresGrad = false;
  /** Accumulated gradient of a leaf after backward(). */
  grad: Tensor | null = null;
  /** The node that produced this tensor (null for leaves). */
  gradFn: GradNode | null = null;
  /** Which output of gradFn this tensor is. */
  outputIndex = 0;
  /** Optional name (parameters carry their state-dict key). */
  name?: string;
  /** @internal The tidy() scope that owns this tensor (engine/scope.ts), or null. */
  scopeRef: object | null = null;

  constructor(handle: NativeTensor, meta?: TensorMeta) {
    this._handle = handle;
    this._shape = meta?.shape;
    this._dtype = meta?.dtype;
    this._device = meta?.device;
    this._strides = meta?.strides;
    this._offset = meta?.offset;
    this._fresh = meta?.contiguous === true && meta.shape !== undefined;
    this._contiguous = this._fresh ? true : undefined;
    if (this._fresh) this._offset = 0;
    this.id = nextId++;
    if (CHECK_META && meta) checkTensorMeta(handle, meta);
    track(this);
  }

  /**
   * @internal Whether this tensor is known to be the only handle on its storage: an op allocated it
   * (metadata given with `contiguous: true`) and no view of it has been made through the ops
   * (markViewed). Autograd adopts such a gradient as a leaf's .grad instead of copying it.
   */
  get ownsStorage(): boolean {
    return this._fresh && !this._viewed;
  }

  /** @internal Records that another handle now shares this tensor's storage. */
  markViewed(): void {
    this._viewed = true;
  }

  /** Hooks run when this leaf's gradient is complete in backward(). */
  get gradHooks(): GradHook[] {
    if (!this._hooks) this._hooks = [];
    return this._hooks;
  }

  /** Whether any gradient hook is registered (without allocating the list). */
  get hasGradHooks(): boolean {
    return this._hooks !== undefined && this._hooks.length > 0;
  }

  /** Hooks run after this leaf's gradient hooks and its accumulation into .grad, in backward(). */
  get postAccumulateGradHooks(): PostAccumulateGradHook[] {
    if (!this._postHooks) this._postHooks = [];
    return this._postHooks;
  }

  get hasPostAccumulateGradHooks(): boolean {
    return this._postHooks !== undefined && this._postHooks.length > 0;
  }

  /** The native handle (throws E_DISPOSED after dispose()). */
  get handle(): NativeTensor {
    if (this._handle === null) throw new SiftError('E_DISPOSED', `tensor #${this.id}${this.name ? ` (${this.name})` : ''} was disposed`);
    return this._handle;
  }

  get isDisposed(): boolean {
    return this._handle === null;
  }

  get shape(): number[] {
    if (!this._shape) this._shape = native().shape(this.handle);
    return this._shape;
  }

  get dtype(): DType {
    if (!this._dtype) this._dtype = native().dtype(this.handle);
    return this._dtype;
  }

  get device(): string {
    if (!this._device) this._device = native().device(this.handle);
    return this._device;
  }

  get ndim(): number {
    return this.shape.length;
  }

  get size(): number {
    const s = this.shape;
    let n = 1;
    for (let i = 0; i < s.length; i++) n *= s[i];
    return n;
  }

  get numel(): number {
    return this.size;
  }

  get nbytes(): number {
    return this.size * dtypeSize(this.dtype);
  }

  get isLeaf(): boolean {
    return this.gradFn === null;
  }

  /** Strides in elements (cached; do not modify the array). */
  get strides(): number[] {
    if (!this._strides) this._strides = this._fresh ? contiguousStrides(this._shape!) : native().strides(this.handle);
    return this._strides;
  }

  /** Offset of the first element in the storage, in elements. */
  get offset(): number {
    if (this._offset === undefined) this._offset = native().offset(this.handle);
    return this._offset;
  }

  get isContiguous(): boolean {
    if (this._contiguous === undefined) {
      // Checked here so that a disposed tensor throws E_DISPOSED as the native call did.
      void this.handle;
      this._contiguous = stridesAreContiguous(this.shape, this.strides);
    }
    return this._contiguous;
  }

  /** Frees the native memory now (views keep their storage alive until they are disposed too). */
  dispose(): void {
    if (this._handle === null) return;
    native().dispose(this._handle);
    this._handle = null;
    this.gradFn = null;
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /**
   * Frees the native memory now while the tensor keeps its place in the autograd graph: gradients
   * still flow through it, its data can no longer be read (E_DISPOSED). For activations that no
   * backward reads, such as the input of a dropout or the branch of a residual sum, which would
   * otherwise live until the enclosing tidy() ends (the tape keeps what backward needs). Storage
   * shared with live views stays until they go too. A no-op on a disposed tensor.
   */
  releaseData(): void {
    if (this._handle === null) return;
    // What the backward walk may still read of it.
    void this.shape;
    void this.dtype;
    void this.device;
    native().dispose(this._handle);
    this._handle = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Marks a leaf as needing gradients (PyTorch's requires_grad_). */
  requiresGrad_(flag = true): this {
    check(this.isLeaf || !flag, 'E_AUTOGRAD', 'requiresGrad_ can only be set on leaf tensors');
    check(!flag || isFloat(this.dtype), 'E_DTYPE', `only floating-point tensors can require gradients (got ${this.dtype})`);
    this.requiresGrad = flag;
    return this;
  }

  /** Registers a hook called when this leaf's gradient is complete; returns a remover. */
  registerGradHook(hook: GradHook): () => void {
    this.gradHooks.push(hook);
    return () => {
      const hooks = this.gradHooks;
      const i = hooks.indexOf(hook);
      if (i >= 0) hooks.splice(i, 1);
    };
  }

  /**
   * Registers a hook called in backward() once this leaf's gradient is complete and has been
   * handled: taken by a gradient hook, or added to .grad (PyTorch's
   * register_post_accumulate_grad_hook). Returns a remover.
   */
  registerPostAccumulateGradHook(hook: PostAccumulateGradHook): () => void {
    this.postAccumulateGradHooks.push(hook);
    return () => {
      const hooks = this.postAccumulateGradHooks;
      const i = hooks.indexOf(hook);
      if (i >= 0) hooks.splice(i, 1);
    };
  }

  /** Frees the accumulated gradient. */
  zeroGrad(): void {
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  // ---- reading data
  /** Copies the data to a typed array (waits for queued work). f16/bf16 are widened to f32. */
  toArray(): Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array {
    if (this.dtype === 'f16' || this.dtype === 'bf16') {
      const t = native().cast(this.handle, 'f32');
      const buf = native().toBuffer(t);
      native().dispose(t);
      return new Float32Array(buf);
    }
    return typedView(native().toBuffer(this.handle), this.dtype);
  }

  /** Like toArray(), without blocking the event loop while the device finishes. */
  async data(): Promise<Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array> {
    if (this.dtype === 'f16' || this.dtype === 'bf16') {
      const t = native().cast(this.handle, 'f32');
      try {
        return new Float32Array(await native().toBufferAsync(t));
      } finally {
        native().dispose(t);
      }
    }
    return typedView(await native().toBufferAsync(this.handle), this.dtype);
  }

  /**
   * Like data(), once `fence` (a DeviceFence marked after the work that wrote this tensor) has
   * passed, without waiting for the work queued after the fence: a loop can read one step's
   * results while the device runs the next. Nothing queued after the fence may write this tensor;
   * contiguous tensors of dtypes other than f16/bf16 only (a cast would be queued after the fence).
   */
  async dataAfter(fence: { wait(): Promise<void> }): Promise<Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array> {
    check(this.isContiguous, 'E_ARG', 'dataAfter: the tensor must be contiguous');
    check(
      this.dtype !== 'f16' && this.dtype !== 'bf16',
      'E_DTYPE',
      `dataAfter: ${this.dtype} is read with data() (it is widened on the device)`,
    );
    await fence.wait();
    return typedView(native().toBufferSettled(this.handle), this.dtype);
  }

  /** The single value of a one-element tensor, as a number. */
  item(): number {
    check(this.size === 1, 'E_SHAPE', `item() needs a tensor with one element, got shape [${this.shape}]`);
    const a = this.toArray();
    return Number(a[0]);
  }

  /** Nested JavaScript arrays of numbers. */
  tolist(): unknown {
    const flat = Array.from(this.toArray() as ArrayLike<number | bigint>, (v) => Number(v));
    const shape = this.shape;
    if (shape.length === 0) return flat[0];
    const build = (dim: number, offset: number): unknown[] => {
      const n = shape[dim];
      const stride = shape.slice(dim + 1).reduce((a, b) => a * b, 1);
      const out: unknown[] = [];
      for (let i = 0; i < n; i++) out.push(dim === shape.length - 1 ? flat[offset + i] : build(dim + 1, offset + i * stride));
      return out;
    };
    return build(0, 0);
  }

  toString(): string {
    return `Tensor(${this.dtype}[${this.shape.join(', ')}] on ${this.device}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }

  // ---- autograd
  /** Reverse-mode gradient of this tensor (a scalar, or with an explicit seed gradient). */
  backward(grad?: Tensor): void {
    ops.backward(this, grad);
  }

  /** A tensor sharing the data, cut from the graph. */
  detach(): Tensor {
    return ops.detach(this);
  }

  // ---- elementwise
  add(o: Tensor | number): Tensor {
    return ops.add(this, o);
  }
  sub(o: Tensor | number): Tensor {
    return ops.sub(this, o);
  }
  mul(o: Tensor | number): Tensor {
    return ops.mul(this, o);
  }
  div(o: Tensor | number): Tensor {
    return ops.div(this, o);
  }
  pow(o: Tensor | number): Tensor {
    return ops.pow(this, o);
  }
  maximum(o: Tensor | number): Tensor {
    return ops.maximum(this, o);
  }
  minimum(o: Tensor | number): Tensor {
    return ops.minimum(this, o);
  }
  neg(): Tensor {
    return ops.neg(this);
  }
  exp(): Tensor {
    return ops.exp(this);
  }
  log(): Tensor {
    return ops.log(this);
  }
  tanh(): Tensor {
    return ops.tanh(this);
  }
  relu(): Tensor {
    return ops.relu(this);
  }
  /** GELU, exact erf form (PyTorch's default); gelu('tanh') is the tanh approximation. */
  gelu(approximate: 'none' | 'tanh' = 'none'): Tensor {
    return ops.gelu(this, approximate);
  }
  silu(): Tensor {
    return ops.silu(this);
  }
  sigmoid(): Tensor {
    return ops.sigmoid(this);
  }
  sqrt(): Tensor {
    return ops.sqrt(this);
  }
  rsqrt(): Tensor {
    return ops.rsqrt(this);
  }
  abs(): Tensor {
    return ops.abs(this);
  }
  square(): Tensor {
    return ops.square(this);
  }
  reciprocal(): Tensor {
    return ops.reciprocal(this);
  }
  sin(): Tensor {
    return ops.sin(this);
  }
  cos(): Tensor {
    return ops.cos(this);
  }
  erf(): Tensor {
    return ops.erf(this);
  }
  eq(o: Tensor | number): Tensor {
    return ops.compare('eq', this, o);
  }
  ne(o: Tensor | number): Tensor {
    return ops.compare('ne', this, o);
  }
  lt(o: Tensor | number): Tensor {
    return ops.compare('lt', this, o);
  }
  le(o: Tensor | number): Tensor {
    return ops.compare('le', this, o);
  }
  gt(o: Tensor | number): Tensor {
    return ops.compare('gt', this, o);
  }
  ge(o: Tensor | number): Tensor {
    return ops.compare('ge', this, o);
  }

  // ---- products and nn
  matmul(o: Tensor): Tensor {
    return ops.matmul(this, o);
  }
  softmax(dim = -1): Tensor {
    return ops.softmax(this, dim);
  }
  logSoftmax(dim = -1): Tensor {
    return ops.logSoftmax(this, dim);
  }

  // ---- reductions
  sum(dim?: number | number[], keepdim = false): Tensor {
    return ops.reduce('sum', this, dim, keepdim);
  }
  mean(dim?: number | number[], keepdim = false): Tensor {
    return ops.reduce('mean', this, dim, keepdim);
  }
  max(dim?: number | number[], keepdim = false): Tensor {
    return ops.reduce('max', this, dim, keepdim);
  }
  min(dim?: number | number[], keepdim = false): Tensor {
    return ops.reduce('min', this, dim, keepdim);
  }
  argmax(dim = -1, keepdim = false): Tensor {
    return ops.argmax(this, dim, keepdim);
  }
  /** p-norm (p = 2 by default; 1 and Infinity too) over dims, or over all elements. */
  norm(p: number = 2, dim?: number | number[], keepdim = false): Tensor {
    return ops.norm(this, p, dim, keepdim);
  }

  // ---- shapes and views
  reshape(...shape: (number | number[])[]): Tensor {
    return ops.reshape(this, flatShape(shape));
  }
  view(...shape: (number | number[])[]): Tensor {
    return ops.reshape(this, flatShape(shape));
  }
  transpose(a = -2, b = -1): Tensor {
    return ops.transpose(this, a, b);
  }
  permute(...dims: (number | number[])[]): Tensor {
    return ops.permute(this, flatShape(dims));
  }
  get T(): Tensor {
    return ops.transpose(this, -2, -1);
  }
  unsqueeze(dim: number): Tensor {
    return ops.unsqueeze(this, dim);
  }
  squeeze(dim?: number): Tensor {
    return ops.squeeze(this, dim);
  }
  flatten(start = 0, end = -1): Tensor {
    return ops.flatten(this, start, end);
  }
  expand(...shape: (number | number[])[]): Tensor {
    return ops.expand(this, flatShape(shape));
  }
  /** Elements start..end (exclusive, step 1) along dim, as a view. */
  slice(dim: number, start: number, end?: number): Tensor {
    return ops.slice(this, dim, start, end);
  }
  narrow(dim: number, start: number, length: number): Tensor {
    return ops.slice(this, dim, start, start + length);
  }
  split(sizes: number | number[], dim = 0): Tensor[] {
    return ops.split(this, sizes, dim);
  }
  contiguous(): Tensor {
    return ops.contiguous(this);
  }
  clone(): Tensor {
    return ops.clone(this);
  }

  /** Moves to a device ('cpu', 'cuda', 'cuda:N') or converts to a dtype ('f32', 'bf16', ...). */
  to(target: string): Tensor {
    const dtypes = ['f32', 'f16', 'bf16', 'i32', 'i64', 'f64', 'bool'];
    if (dtypes.includes(target)) return ops.cast(this, target as DType);
    return ops.toDevice(this, normalizeDevice(target));
  }
  cast(dtype: DType): Tensor {
    return ops.cast(this, dtype);
  }
  cpu(): Tensor {
    return ops.toDevice(this, 'cpu');
  }
  cuda(index = 0): Tensor {
    return ops.toDevice(this, `cuda:${index}`);
  }
  float(): Tensor {
    return ops.cast(this, 'f32');
  }

  // ---- in place (not recorded by autograd; for optimizers and gradient accumulation)
  /** this += alpha * other, in place. */
  addInplace(other: Tensor, alpha = 1): this {
    native().addInplace(this.handle, other.handle, alpha);
    return this;
  }
  fill_(value: number): this {
    native().fill_(this.handle, value);
    return this;
  }
  copy_(src: Tensor): this {
    native().copy_(this.handle, src.handle);
    return this;
  }
}

registerTensorClass(Tensor);

function flatShape(args: (number | number[])[]): number[] {
  if (args.length === 1 && Array.isArray(args[0])) return args[0];
  return args as number[];
}

function typedView(buf: ArrayBuffer, dtype: DType): Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array {
  switch (dtype) {
    case 'f32':
      return new Float32Array(buf);
    case 'f64':
      return new Float64Array(buf);
    case 'i32':
      return new Int32Array(buf);
    case 'i64':
      return new BigInt64Array(buf);
    case 'bool':
      return new Uint8Array(buf);
    default:
      throw new SiftError('E_DTYPE', `no typed array for ${dtype}`);
  }
}

export type { ReduceOp };
