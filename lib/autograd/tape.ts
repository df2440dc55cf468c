/**
 * Tape-based reverse-mode autograd. Each op records a GradNode (its backward closure and the
 * tensors it needs) on the outputs it made; backward() walks the graph from a root in reverse
 * topological order. A leaf's hooks run as soon as its gradient is complete (all edges into it
 * have been processed), so a hook can take the gradient and drop it before the next one exists.
 */
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { keep, tidy } from '../engine/scope';
import { native } from '../engine/native';

export type BackwardFn = (grads: (Tensor | null)[]) => (Tensor | null | undefined)[];

export interface GradNode {
  readonly name: string;
  /** Inputs by position; null where that input needs no gradient. */
  readonly inputs: (Tensor | null)[];
  readonly numOutputs: number;
  backward: BackwardFn | null;
  /** Saved tensors that only this node uses (disposed when the node is released). */
  owned: Tensor[];
  /** @internal The last backward walk that reached this node (runBackward's visited set). */
  mark?: number;
}

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn without recording operations for autograd. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Runs fn with recording on (inside a noGrad region). */
export function enableGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** True when an op over these inputs must be recorded. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  if (!gradEnabled) return false;
  for (const t of inputs) if (t && t.requiresGrad) return true;
  return false;
}

// Sets filled by observeGradInputs(): every tensor that requires gradients and reaches record().
const observers: Set<Tensor>[] = [];

/**
 * Runs fn and adds to `into` every tensor requiring gradients that an op inside fn consumed, even
 * with recording off: checkpoint() learns this way which parameters (and outer activations) a block
 * reads, so that its tape node can list them as inputs.
 */
export function observeGradInputs<T>(fn: () => T, into: Set<Tensor>): T {
  observers.push(into);
  try {
    return fn();
  } finally {
    observers.splice(observers.lastIndexOf(into), 1);
  }
}

/**
 * Records an op. `backward` receives the gradients of the outputs (null for outputs that got
 * none; never all null) and returns one gradient per input (null/undefined where not needed).
 * `owned` are saved tensors only the node uses; they are disposed when no graph is recorded or
 * once the node has run its backward.
 */
export function record(
  name: string,
  inputs: (Tensor | null | undefined)[],
  outputs: Tensor[],
  backward: BackwardFn,
  owned: Tensor[] = NO_TENSORS,
): void {
  if (observers.length) {
    for (const t of inputs) if (t && t.requiresGrad) for (const o of observers) o.add(t);
  }
  // (Loops rather than needsGrad(...inputs) and map/forEach: this runs for every op.)
  let needed = false;
  if (gradEnabled) {
    for (let i = 0; i < inputs.length; i++) {
      const t = inputs[i];
      if (t && t.requiresGrad) {
        needed = true;
        break;
      }
    }
  }
  if (!needed) {
    for (const t of owned) t.dispose();
    return;
  }
  for (const t of owned) keep(t);
  const kept = new Array<Tensor | null>(inputs.length);
  for (let i = 0; i < inputs.length; i++) {
    const t = inputs[i];
    kept[i] = t && t.requiresGrad ? t : null;
  }
  const node: GradNode = { name, inputs: kept, numOutputs: outputs.length, backward, owned, mark: 0 };
  for (let i = 0; i < outputs.length; i++) {
    const o = outputs[i];
    o.gradFn = node;
    o.outputIndex = i;
    o.requiresGrad = true;
  }
}

/** The default `owned` list of record() (never written to: releaseNode replaces it). */
const NO_TENSORS: Tensor[] = [];

/** Marks of the DFS in runBackward: each walk uses a new value, so nothing needs clearing. */
let walkMark = 0;

/** Leaves whose gradient an op's backward wrote to a sink of their own (noteSunkGradient), not yet finished. */
const sunkGradients = new WeakSet<Tensor>();

/**
 * Called by an op's backward that added a leaf's gradient somewhere other than the gradient it
 * returns (a SIFT target's SDDMM sink): when the backward that finishes the leaf completes it, its
 * post-accumulate hooks run although no dense gradient reached it (data parallel starts the
 * gradient's bucket there). Also where the op ran in a nested backward (activation
 * checkpointing's recomputation): the outer backward that finishes the leaf runs them.
 */
export function noteSunkGradient(leaf: Tensor): void {
  sunkGradients.add(leaf);
}

function releaseNode(node: GradNode): void {
  node.backward = null;
  for (const t of node.owned) t.dispose();
  node.owned = NO_TENSORS;
}

export interface BackwardOptions {
  /** Keep the graph so that backward can run through it again. */
  retainGraph?: boolean;
}

/**
 * Computes gradients of `root` with respect to every leaf that requires them, accumulating into
 * leaf.grad (after the leaf's hooks). Intermediate gradients are freed as soon as they are used.
 */
export function backward(root: Tensor, seed?: Tensor, opts: BackwardOptions = {}): void {
  checkRoot(root, seed);
  const retainGraph = opts.retainGraph === true;
  const prevEnabled = gradEnabled;
  gradEnabled = false;
  try {
    runBackward(root, seed, retainGraph, null);
  } finally {
    gradEnabled = prevEnabled;
  }
}

/**
 * Gradients of `root` with respect to `wrt` (like torch.autograd.grad), returned instead of
 * accumulated: those tensors' hooks do not run and their .grad is untouched, and the walk stops at
 * them even where they have a history of their own. Other leaves reached on the way are treated as
 * by backward(). The graph is freed unless retainGraph. Re-entrant: a node's backward may call it.
 */
export function gradients(root: Tensor, seed: Tensor | undefined, wrt: Tensor[], opts: BackwardOptions = {}): (Tensor | null)[] {
  checkRoot(root, seed);
  const capture = new Map<Tensor, Tensor | null>();
  for (const t of wrt) capture.set(t, null);
  const prevEnabled = gradEnabled;
  gradEnabled = false;
  try {
    runBackward(root, seed, opts.retainGraph === true, capture);
  } finally {
    gradEnabled = prevEnabled;
  }
  // A tensor listed twice gets its gradient once, then a copy.
  const given = new Set<Tensor>();
  return wrt.map((t) => {
    const g = capture.get(t) ?? null;
    if (!g) return null;
    if (given.has(g)) return new Tensor(native().clone(g.handle));
    given.add(g);
    return g;
  });
}

function checkRoot(root: Tensor, seed: Tensor | undefined): void {
  check(root.requiresGrad, 'E_AUTOGRAD', 'backward() on a tensor that does not require gradients');
  if (seed) {
    check(
      seed.shape.length === root.shape.length && seed.shape.every((d, i) => d === root.shape[i]),
      'E_SHAPE',
      () => `backward: gradient of shape [${seed.shape}] for a tensor of shape [${root.shape}]`,
    );
  } else {
    check(root.size === 1, 'E_SHAPE', `backward() without a gradient needs a scalar, got shape [${root.shape}]`);
  }
}

/** The gradients of a node that received none (never written to). */
const NO_GRADS: (Tensor | null | undefined)[] = [];

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** capture: tensors whose gradient is stored there instead of going to hooks and .grad (null: none). */
function runBackward(root: Tensor, seedIn: Tensor | undefined, retainGraph: boolean, capture: Map<Tensor, Tensor | null> | null): void {
  const N = native();
  const seed = seedIn ?? new Tensor(N.full(root.shape, 1, root.dtype, root.device));
  const userSeed = seedIn;

  // Reference counts of gradient tensors held in slots, so that shared tensors are freed once.
  const refs = new Map<Tensor, number>();
  const retain = (t: Tensor) => refs.set(t, (refs.get(t) ?? 0) + 1);
  const release = (t: Tensor) => {
    const n = (refs.get(t) ?? 0) - 1;
    if (n <= 0) {
      refs.delete(t);
      if (t !== userSeed) t.dispose();
    } else refs.set(t, n);
  };
  const accumulate = (slots: (Tensor | null)[], i: number, g: Tensor) => {
    const prev = slots[i];
    if (!prev) {
      slots[i] = g;
      retain(g);
      return;
    }
    if (!sameShape(prev.shape, g.shape)) {
      throw new SiftError('E_INTERNAL', `autograd: gradient shapes differ when accumulating ([${prev.shape}] and [${g.shape}])`);
    }
    const sum = new Tensor(N.binary('add', prev.handle, g.handle), {
      shape: prev.shape,
      dtype: prev.dtype,
      device: prev.device,
      contiguous: true,
    });
    slots[i] = sum;
    retain(sum);
    release(prev);
  };

  // Leaf bookkeeping: pending gradient and the number of edges still to be processed.
  const leafRemaining = new Map<Tensor, number>();
  const leafSlots = new Map<Tensor, (Tensor | null)[]>();
  const finishLeaf = (leaf: Tensor) => {
    const slot = leafSlots.get(leaf);
    const g = slot ? slot[0] : null;
    leafSlots.delete(leaf);
    if (capture && capture.has(leaf)) {
      if (g) captureLeaf(leaf, g);
      return;
    }
    const sunk = sunkGradients.delete(leaf);
    if (g) accumulateLeaf(leaf, g);
    else if (!sunk) return;
    if (leaf.hasPostAccumulateGradHooks) for (const hook of [...leaf.postAccumulateGradHooks]) hook(leaf);
  };
  // Handed to the caller: it owns the tensor now (a copy where the slot's tensor is shared).
  const captureLeaf = (leaf: Tensor, g: Tensor) => {
    if (refs.get(g) === 1 && g !== userSeed && g.ownsStorage) refs.delete(g);
    else {
      const c = new Tensor(N.clone(g.handle), { shape: g.shape, dtype: g.dtype, device: g.device, contiguous: true });
      release(g);
      g = c;
    }
    capture!.set(leaf, g);
  };
  const accumulateLeaf = (leaf: Tensor, gIn: Tensor) => {
    let g: Tensor | null = gIn;
    if (leaf.hasGradHooks)
      for (const hook of leaf.gradHooks) {
        const r = hook(g, leaf);
        if (r === null) {
          release(g);
          g = null;
          break;
        }
        if (r instanceof Tensor && r !== g) {
          retain(r);
          release(g);
          g = r;
        }
      }
    if (!g) return;
    if (leaf.grad && !leaf.grad.isDisposed) {
      N.addInplace(leaf.grad.handle, g.handle, 1);
      release(g);
    } else if (refs.get(g) === 1 && g !== userSeed && g.ownsStorage) {
      // Held by nothing else and sharing its storage with no other tensor: adopted without a copy.
      refs.delete(g);
      leaf.grad = keep(g);
    } else {
      leaf.grad = keep(new Tensor(N.clone(g.handle), { shape: g.shape, dtype: g.dtype, device: g.device, contiguous: true }));
      release(g);
    }
  };
  /** ready: where a completed leaf goes to be finished by the caller (at once when null). */
  const leafEdgeDone = (leaf: Tensor, g: Tensor | null | undefined, ready: Tensor[] | null) => {
    if (g) {
      let slot = leafSlots.get(leaf);
      if (!slot) leafSlots.set(leaf, (slot = [null]));
      accumulate(slot, 0, g);
    }
    const n = (leafRemaining.get(leaf) ?? 1) - 1;
    leafRemaining.set(leaf, n);
    if (n === 0) {
      if (ready) ready.push(leaf);
      else finishLeaf(leaf);
    }
  };

  // Captured tensors are where the walk stops, as if they were leaves.
  const stopsAt = (t: Tensor) => !t.gradFn || (capture !== null && capture.has(t));
  if (stopsAt(root)) {
    // The root is a leaf itself.
    leafRemaining.set(root, 1);
    retain(seed);
    leafEdgeDone(root, seed, null);
    release(seed);
    return;
  }

  // Iterative DFS for a post-order; count edges into leaves on the way. Visited nodes carry this
  // walk's mark (no user code runs during the walk, so a nested backward cannot interleave).
  const mark = ++walkMark;
  const order: GradNode[] = [];
  const stackNodes: GradNode[] = [root.gradFn!];
  const stackPos: number[] = [0];
  root.gradFn!.mark = mark;
  while (stackNodes.length) {
    const top = stackNodes.length - 1;
    const node = stackNodes[top];
    const i = stackPos[top];
    if (node.backward === null) {
      throw new SiftError('E_AUTOGRAD', `backward through '${node.name}' a second time: its graph was freed (pass retainGraph: true)`);
    }
    if (i < node.inputs.length) {
      stackPos[top] = i + 1;
      const inp = node.inputs[i];
      if (!inp) continue;
      if (!stopsAt(inp)) {
        const fn = inp.gradFn!;
        if (fn.mark !== mark) {
          fn.mark = mark;
          stackNodes.push(fn);
          stackPos.push(0);
        }
      } else {
        leafRemaining.set(inp, (leafRemaining.get(inp) ?? 0) + 1);
      }
    } else {
      order.push(node);
      stackNodes.pop();
      stackPos.pop();
    }
  }

  const nodeSlots = new Map<GradNode, (Tensor | null)[]>();
  const rootSlots: (Tensor | null)[] = new Array(root.gradFn!.numOutputs).fill(null);
  rootSlots[root.outputIndex] = seed;
  retain(seed);
  nodeSlots.set(root.gradFn!, rootSlots);

  // Leaves completed by a node are finished (hooks, .grad) once that node's own references to its
  // gradients are released, before the next node runs: a gradient held by nothing else then
  // becomes the leaf's .grad as it is, without a copy.
  const ready: Tensor[] = [];
  for (let k = order.length - 1; k >= 0; k--) {
    const node = order[k];
    const slots = nodeSlots.get(node);
    nodeSlots.delete(node);
    let hasGrad = false;
    if (slots) for (let q = 0; q < slots.length; q++) if (slots[q] !== null) hasGrad = true;
    let inGrads: (Tensor | null | undefined)[] = NO_GRADS;
    if (hasGrad) {
      const fn = node.backward!;
      inGrads = tidy(() => fn(slots!));
      for (const g of inGrads) if (g) retain(g); // temporary references while distributing
    }
    const inputs = node.inputs;
    for (let i = 0; i < inputs.length; i++) {
      const inp = inputs[i];
      if (!inp) continue;
      const g = inGrads[i];
      if (g && !sameShape(g.shape, inp.shape)) {
        throw new SiftError(
          'E_INTERNAL',
          `autograd: '${node.name}' returned a gradient of shape [${g.shape}] for input ${i} of shape [${inp.shape}]`,
        );
      }
      if (!stopsAt(inp)) {
        if (!g) continue;
        let s = nodeSlots.get(inp.gradFn!);
        if (!s) nodeSlots.set(inp.gradFn!, (s = new Array(inp.gradFn!.numOutputs).fill(null)));
        accumulate(s, inp.outputIndex, g);
      } else {
        leafEdgeDone(inp, g, ready);
      }
    }
    if (slots) for (const g of slots) if (g) release(g);
    for (const g of inGrads) if (g) release(g);
    if (!retainGraph) releaseNode(node);
    if (ready.length) {
      for (const leaf of ready) finishLeaf(leaf);
      ready.length = 0;
    }
  }
  // Leaves reached only through branches that produced no gradient.
  for (const [leaf, n] of leafRemaining) if (n > 0 && leafSlots.has(leaf)) finishLeaf(leaf);
}
