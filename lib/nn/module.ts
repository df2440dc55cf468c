/**
 * Modules: a tree of named children and parameters whose dotted paths are the state-dict keys users
 * know from transformers (e.g. `model.layers.0.self_attn.q_proj.weight`). A module owns its
 * parameters' native memory: dispose() frees the whole tree.
 */
import { Tensor } from '../engine/tensor';
import { keep } from '../engine/scope';
import { SiftError } from '../engine/errors';
import { DType, isFloat } from '../engine/dtype';
import { native } from '../engine/native';

export abstract class Module {
  private readonly _params = new Map<string, Tensor | null>();
  private readonly _children = new Map<string, Module>();
  training = true;

  /** The module's type name as used by "all-linear" matching and summaries. */
  get kind(): string {
    return this.constructor.name;
  }

  protected registerParameter(name: string, t: Tensor | null, requiresGrad = true): Tensor | null {
    if (t) {
      keep(t);
      if (requiresGrad && isFloat(t.dtype)) t.requiresGrad_(true);
    }
    this._params.set(name, t);
    return t;
  }

  protected registerModule<M extends Module>(name: string, m: M): M {
    this._children.set(name, m);
    return m;
  }

  /**
   * Takes a parameter out of the tree without disposing it (a layer that stores its weight in
   * another form, such as a quantized Linear, calls this).
   */
  protected unregisterParameter(name: string): void {
    this._params.delete(name);
  }

  /** Native memory a module owns besides its parameters (quantized weights): moved by to(). */
  protected moveOwned(_device: string): void {}

  /** Frees native memory a module owns besides its parameters: called by dispose(). */
  protected disposeOwned(): void {}

  /** Replaces a parameter's tensor (e.g. when loading), disposing the old one. */
  setParameter(name: string, t: Tensor): void {
    if (!this._params.has(name)) throw new SiftError('E_ARG', `${this.kind} has no parameter '${name}'`);
    const old = this._params.get(name);
    if (old && old !== t) {
      if (old.shape.join() !== t.shape.join())
        throw new SiftError('E_SHAPE', `parameter '${name}': shape [${t.shape}] does not match [${old.shape}]`);
      old.dispose();
    }
    keep(t);
    t.requiresGrad = old ? old.requiresGrad : true;
    this._params.set(name, t);
    (this as unknown as Record<string, unknown>)[name] = t;
  }

  /** Direct children, by name. */
  children(): [string, Module][] {
    return [...this._children.entries()];
  }

  /** All modules in the tree with their dotted paths ('' for this one). */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [n, m] of this._children) out.push(...m.namedModules(prefix ? `${prefix}.${n}` : n));
    return out;
  }

  /** All parameters with their dotted paths (state-dict keys), each tensor once (tied weights once). */
  namedParameters(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    const seen = new Set<Tensor>();
    for (const [path, m] of this.namedModules(prefix)) {
      for (const [n, t] of m._params) {
        if (!t || seen.has(t)) continue;
        seen.add(t);
        out.push([path ? `${path}.${n}` : n, t]);
      }
    }
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** Own parameters of this module (not its children's). */
  ownParameters(): [string, Tensor][] {
    return [...this._params.entries()].filter((e): e is [string, Tensor] => e[1] !== null);
  }

  train(flag = true): this {
    for (const [, m] of this.namedModules()) m.training = flag;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Moves or converts every parameter in place (float parameters only for dtype changes). */
  to(target: string): this {
    const dtypes = ['f32', 'f16', 'bf16', 'f64'];
    for (const [, m] of this.namedModules()) {
      for (const [n, t] of m._params) {
        if (!t) continue;
        if (dtypes.includes(target) && !isFloat(t.dtype)) continue;
        const h = dtypes.includes(target)
          ? native().cast(t.handle, target as DType)
          : native().to(t.handle, target === 'cuda' ? 'cuda:0' : target);
        const nt = keep(new Tensor(h));
        nt.requiresGrad = t.requiresGrad;
        nt.name = t.name;
        if (nt !== t) t.dispose();
        m._params.set(n, nt);
        (m as unknown as Record<string, unknown>)[n] = nt;
      }
      if (!dtypes.includes(target)) m.moveOwned(target === 'cuda' ? 'cuda:0' : target);
    }
    return this;
  }

  /** Number of parameter elements. */
  numParameters(): number {
    return this.parameters().reduce((a, t) => a + t.size, 0);
  }

  /** Frees every parameter of the tree. */
  dispose(): void {
    for (const [, t] of this.namedParameters()) t.dispose();
    for (const [, m] of this.namedModules()) m.disposeOwned();
  }
}
