/**
 * Ownership of native memory from JavaScript: every Tensor joins the innermost open scope; tidy()
 * disposes what its function created except what it returns (and what keep() marked). Garbage
 * collection (the native finalizer) is only a backstop.
 */
import type { Tensor } from './tensor';
import { SiftError } from './errors';

/**
 * An open tidy(): the tensors tracked in it, in creation order. A tensor belongs to the scope its
 * `scopeRef` names; entries whose tensor was kept or moved since are skipped (cheaper than a Set,
 * as every op's output is tracked).
 */
interface Scope {
  items: Tensor[];
}

/** What a tensor carries for its scope (a field of Tensor). */
interface Scoped {
  scopeRef: Scope | null;
}

const scopes: Scope[] = [];

export function track(t: Tensor): void {
  if (scopes.length) {
    const s = scopes[scopes.length - 1];
    s.items.push(t);
    (t as unknown as Scoped).scopeRef = s;
  }
}

/** Takes a tensor out of every open scope: it survives tidy() until disposed by hand. */
export function keep<T extends Tensor>(t: T): T {
  (t as unknown as Scoped).scopeRef = null;
  return t;
}

/** Disposes the scope's tensors, except those in `spare`, which move to the enclosing scope. */
function close(scope: Scope, spare: Tensor[] | null): void {
  if (spare) {
    for (const t of spare) {
      const st = t as unknown as Scoped;
      if (st.scopeRef !== scope) continue; // created elsewhere, kept, or listed twice
      st.scopeRef = null;
      track(t);
    }
  }
  const items = scope.items;
  scope.items = [];
  for (let i = 0; i < items.length; i++) {
    const st = items[i] as unknown as Scoped;
    if (st.scopeRef !== scope) continue; // kept, or moved
    st.scopeRef = null;
    items[i].dispose();
  }
}

/**
 * Pushes the tensors reachable from value (a tensor, or arrays, Maps and plain objects holding
 * tensors) onto out. `seen` guards against cycles; it is made only for nested containers (the
 * common results, a tensor or a flat array of tensors, need none).
 */
function collect(value: unknown, out: Tensor[], seen: Set<unknown> | null, TensorCtor: Function): Set<unknown> | null {
  if (value === null || typeof value !== 'object') return seen;
  if (value instanceof TensorCtor) {
    out.push(value as Tensor);
    return seen;
  }
  if (Array.isArray(value)) {
    let flat = true;
    for (let i = 0; i < value.length; i++) {
      const v = value[i];
      if (v === null || v === undefined || typeof v !== 'object') continue;
      if (v instanceof TensorCtor) out.push(v as Tensor);
      else flat = false;
    }
    if (flat) return seen;
  }
  if (!seen) seen = new Set();
  if (seen.has(value)) return seen;
  seen.add(value);
  if (Array.isArray(value)) {
    for (const v of value) if (v !== null && typeof v === 'object' && !(v instanceof TensorCtor)) seen = collect(v, out, seen, TensorCtor);
  } else if (value instanceof Map) {
    for (const v of value.values()) seen = collect(v, out, seen, TensorCtor);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value as Record<string, unknown>)) seen = collect(v, out, seen, TensorCtor);
  }
  return seen;
}

let tensorCtor: Function | undefined;
export function registerTensorClass(ctor: Function): void {
  tensorCtor = ctor;
}

/**
 * Runs fn and disposes every tensor created inside it, except tensors reachable from its result
 * (a tensor, or arrays, Maps and plain objects holding tensors), which move to the enclosing scope.
 * fn must be synchronous.
 */
export function tidy<T>(fn: () => T): T {
  const scope: Scope = { items: [] };
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    close(scope, null);
    throw e;
  }
  scopes.pop();
  if (result && typeof (result as { then?: unknown }).then === 'function') {
    close(scope, null);
    throw new SiftError('E_ARG', 'tidy() takes a synchronous function; await outside of it');
  }
  let kept: Tensor[] | null = null;
  if (tensorCtor && result !== null && typeof result === 'object') {
    kept = [];
    collect(result, kept, null, tensorCtor);
  }
  close(scope, kept);
  return result;
}

export function scopeDepth(): number {
  return scopes.length;
}
