/**
 * Ownership of native memory from JavaScript: every Tensor joins the innermost open scope; tidy()
 * disposes what its function created except what it returns (and what keep() marked). Garbage
 * collection (the native finalizer) is only a backstop.
 */
import type { Tensor } from './tensor';
import { SiftError } from './errors';

const scopes: Set<Tensor>[] = [];

export function track(t: Tensor): void {
  if (scopes.length) scopes[scopes.length - 1].add(t);
}

/** Takes a tensor out of every open scope: it survives tidy() until disposed by hand. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

function collect(value: unknown, out: Set<Tensor>, seen: Set<unknown>, TensorCtor: Function): void {
  if (value === null || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  if (value instanceof TensorCtor) {
    out.add(value as Tensor);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collect(v, out, seen, TensorCtor);
  } else if (value instanceof Map) {
    for (const v of value.values()) collect(v, out, seen, TensorCtor);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value as Record<string, unknown>)) collect(v, out, seen, TensorCtor);
  }
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
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  if (result && typeof (result as { then?: unknown }).then === 'function') {
    for (const t of scope) t.dispose();
    throw new SiftError('E_ARG', 'tidy() takes a synchronous function; await outside of it');
  }
  const kept = new Set<Tensor>();
  if (tensorCtor) collect(result, kept, new Set(), tensorCtor);
  for (const t of scope) {
    if (kept.has(t)) track(t);
    else t.dispose();
  }
  return result;
}

export function scopeDepth(): number {
  return scopes.length;
}
