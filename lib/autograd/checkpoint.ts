/**
 * Activation checkpointing (torch.utils.checkpoint): a function's forward runs without recording,
 * so that its intermediate activations are freed at once, and one tape node stands for the whole
 * function. Its backward re-runs the function with recording on and backpropagates through that
 * fresh graph, trading one extra forward per block for the memory of its activations.
 *
 * Gradients reach every tensor the function reads, not only its arguments: parameters (and any
 * outer activation) that it closes over are found while the forward runs (observeGradInputs) and
 * become inputs of the node. The recomputed graph therefore stops at them and hands their gradient
 * to the outer backward, which runs their hooks once, with the complete gradient, also where a
 * parameter is used both inside and outside checkpointed blocks (SIFT's selection needs that).
 */
import { Tensor } from '../engine/tensor';
import { check } from '../engine/errors';
import { tidy } from '../engine/scope';
import { record, noGrad, enableGrad, isGradEnabled, gradients, observeGradInputs } from './tape';
import { getSeedState, setSeedState } from './creation';
import { detach } from './shape';
import { sameShape, N } from './util';

/**
 * The CPU executor frees a tensor only once the queued ops that use it have run, and JavaScript
 * may queue thousands of ops ahead: without a wait, a block's disposed activations would still be
 * alive while the next blocks are queued, and checkpointing would save little. On CUDA the
 * allocator reuses memory in stream order, so no wait is needed there.
 */
function settle(t: Tensor): void {
  if (t.device === 'cpu') N().synchronize('cpu');
}

/**
 * fn(...inputs) whose activations are recomputed in backward instead of stored. fn must be
 * deterministic given the inputs, the tensors it closes over and the random-seed state (dropout
 * draws the same seeds again: the seed state is replayed), and must not change what it closes over
 * between the forward and the backward. Without gradients to record it is just fn(...inputs).
 */
export function checkpoint(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[]): Tensor {
  check(typeof fn === 'function', 'E_ARG', 'checkpoint: fn must be a function');
  check(Array.isArray(inputs) && inputs.every((t) => t instanceof Tensor), 'E_ARG', 'checkpoint: inputs must be an array of tensors');
  // Nothing would be recorded (a no-grad region, or the forward of an enclosing checkpoint):
  // run fn as it is, so that an enclosing observer still sees what it reads.
  if (!isGradEnabled()) return fn(...inputs);

  const seedState = getSeedState();
  const read = new Set<Tensor>();
  const y = tidy(() =>
    noGrad(() =>
      observeGradInputs(() => {
        const r = fn(...inputs.map((t) => detach(t)));
        check(r instanceof Tensor, 'E_ARG', 'checkpoint: fn must return a tensor');
        // A fresh handle: the tape node goes on it, never on a tensor fn merely passed through.
        if (r.requiresGrad) read.add(r); // a tensor passed through unchanged (only outer tensors require grad here)
        return detach(r);
      }, read),
    ),
  );
  settle(y);
  // The arguments reach fn as detached copies, so `read` holds only what fn closes over.
  const closed = [...read];
  const outShape = y.shape;

  record('checkpoint', [...inputs, ...closed], [y], ([g]) =>
    tidy(() => {
      const xs = inputs.map((t) => {
        const d = detach(t);
        if (t.requiresGrad) d.requiresGrad = true;
        return d;
      });
      const now = getSeedState();
      setSeedState(seedState);
      let out: Tensor;
      try {
        out = enableGrad(() => fn(...xs));
      } finally {
        setSeedState(now);
      }
      check(
        out instanceof Tensor && sameShape(out.shape, outShape),
        'E_AUTOGRAD',
        () => `checkpoint: the recomputation returned shape [${out?.shape}], the forward [${outShape}]; fn must be deterministic`,
      );
      if (!out.requiresGrad) return [...inputs, ...closed].map(() => null);
      const gs = gradients(out, g!, [...xs, ...closed]);
      settle(out);
      return gs;
    }),
  );
  return y;
}
