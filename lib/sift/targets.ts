/**
 * Which parameters SIFT trains. Module matching follows PEFT, on module paths (a parameter's path
 * without its last part): a string is a regular expression that must match the whole path; a list
 * matches a module name exactly or as a suffix after a dot; "all-linear" takes every linear layer
 * (Linear, and GPT-2's Conv1D) except the output head `lm_head`, as PEFT does.
 */
import { Tensor } from '../engine/tensor';
import { SiftError } from '../engine/errors';

export type ModuleSelector = string | string[] | 'all-linear';

export interface NamedModel {
  namedParameters(): [string, Tensor][];
  /** Modules with their kinds ("Linear", "Conv1D", ...); needed for "all-linear". */
  namedModules?(): [string, { kind: string }][];
}

const LINEAR_KINDS = new Set(['Linear', 'Conv1D']);
const OUTPUT_HEADS = new Set(['lm_head']);

export function modulePath(paramName: string): string {
  const i = paramName.lastIndexOf('.');
  return i < 0 ? '' : paramName.slice(0, i);
}

/** A predicate over module paths for a selector, or null for none. */
export function moduleMatcher(sel: ModuleSelector | undefined, model: NamedModel, what: string): ((path: string) => boolean) | null {
  if (sel === undefined || (Array.isArray(sel) && sel.length === 0)) return null;
  if (sel === 'all-linear') {
    if (!model.namedModules) throw new SiftError('E_ARG', `${what}: "all-linear" needs a model that lists its modules (namedModules())`);
    const linear = new Set<string>();
    for (const [path, m] of model.namedModules()) {
      const last = path.slice(path.lastIndexOf('.') + 1);
      if (LINEAR_KINDS.has(m.kind) && !OUTPUT_HEADS.has(last)) linear.add(path);
    }
    return (p) => linear.has(p);
  }
  if (typeof sel === 'string') {
    let re: RegExp;
    try {
      re = new RegExp(`^(?:${sel})$`);
    } catch (e) {
      throw new SiftError('E_ARG', `${what}: invalid regular expression '${sel}': ${(e as Error).message}`);
    }
    return (p) => re.test(p);
  }
  if (!Array.isArray(sel) || !sel.every((s) => typeof s === 'string' && s.length > 0)) {
    throw new SiftError('E_ARG', `${what}: expected a regular expression, a list of module names or "all-linear"`);
  }
  return (p) => sel.some((name) => p === name || p.endsWith(`.${name}`));
}

export interface TargetPlan {
  sparse: [string, Tensor][];
  dense: [string, Tensor][];
  frozen: [string, Tensor][];
  /** Target layers whose weight is already stored quantized (no parameter): weight names and module paths. */
  quantized: [string, string][];
}

/** Splits a model's parameters into sparse targets, dense modules and frozen parameters. */
export function planTargets(
  model: NamedModel,
  targetModules: ModuleSelector | undefined,
  denseModules: ModuleSelector | undefined,
): TargetPlan {
  const isTarget = moduleMatcher(targetModules ?? 'all-linear', model, 'targetModules');
  const isDense = moduleMatcher(denseModules, model, 'denseModules');
  const plan: TargetPlan = { sparse: [], dense: [], frozen: [], quantized: [] };
  if (isTarget && model.namedModules) {
    for (const [path, m] of model.namedModules()) {
      if (LINEAR_KINDS.has(m.kind) && (m as { quantized?: unknown }).quantized && isTarget(path))
        plan.quantized.push([`${path}.weight`, path]);
    }
  }
  for (const [name, t] of model.namedParameters()) {
    const path = modulePath(name);
    const target = !!isTarget && isTarget(path);
    const dense = !!isDense && isDense(path);
    if (target && dense) {
      throw new SiftError('E_ARG', `parameter '${name}' matches both targetModules and denseModules`);
    }
    if (target) plan.sparse.push([name, t]);
    else if (dense) plan.dense.push([name, t]);
    else plan.frozen.push([name, t]);
  }
  if (plan.sparse.length === 0 && plan.dense.length === 0 && plan.quantized.length === 0) {
    throw new SiftError('E_ARG', `no parameter matches targetModules ${JSON.stringify(targetModules ?? 'all-linear')}`);
  }
  return plan;
}
