/**
 * CUDA graphs (lib/engine/cuda-graph.ts over native/cuda/runtime.cu): a captured step replays the
 * eager results for new input values, memory the graph owns is not handed to eager work between
 * replays, a new key captures again, steps that wait for the device are refused while capturing,
 * and a SIFT training step replayed as a graph follows the eager losses. CUDA only (skipped here
 * with the reason); on a CPU-only build the class still refuses non-CUDA devices.
 */
import { Tensor, tidy, keep, toDevice, matmul, add, gelu, mul, SiftError, CudaGraphStep, synchronize, backends } from '../../lib';
import { native } from '../../lib/engine/native';
import { randomTensor, expectClose, describeCuda } from '../helpers/gradcheck';
import { setupRun, modelSpec } from '../../bench/train';

const N = () => native();
const values = (t: Tensor) => Array.from(toDevice(t, 'cpu').contiguous().toArray() as ArrayLike<number>, Number);

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

test('CudaGraphStep needs a CUDA device', () => {
  expect(code(() => new CudaGraphStep('cpu'))).toBe('E_DEVICE');
});

describeCuda('CUDA graphs', () => {
  const dev = 'cuda:0';

  test('replays compute the eager result for new input values; pool memory is not reused by eager work', () => {
    const x = keep(toDevice(randomTensor([64, 96], 1, { dtype: 'f32' }), dev));
    const w = keep(toDevice(randomTensor([96, 80], 2, { dtype: 'f32' }), dev));
    const b = keep(toDevice(randomTensor([80], 3, { dtype: 'f32' }), dev));
    const eager = () => tidy(() => gelu(add(matmul(x, w), b), 'tanh'));
    const step = new CudaGraphStep<Tensor>(dev);
    try {
      const y = step.run('64x96', () => keep(mul(eager(), 2)));
      expect(step.captured).toBe(true);
      expect(N().cudaGraphStats(0).graphs).toBe(1);
      expectClose(values(y), values(mul(eager(), 2)), { atol: 1e-5, label: 'first launch' });
      for (let i = 0; i < 3; i++) {
        // New input values in the buffer the graph reads, then eager work that allocates and frees.
        N().copy_(x.handle, toDevice(randomTensor([64, 96], 10 + i, { dtype: 'f32' }), dev).handle);
        const same = step.run('64x96', () => {
          throw new Error('not captured again for the same key');
        });
        expect(same).toBe(y);
        tidy(() => {
          for (let j = 0; j < 4; j++) N().fill_(toDevice(randomTensor([64, 80], 20 + j, { dtype: 'f32' }), dev).handle, 7);
        });
        expectClose(values(y), values(mul(eager(), 2)), { atol: 1e-5, label: `replay ${i}` });
      }
      // A new key destroys the graph and captures again.
      let captures = 0;
      step.run('other', () => {
        captures++;
        return keep(eager());
      });
      expect(captures).toBe(1);
      expect(N().cudaGraphStats(0).graphs).toBe(1);
    } finally {
      step.dispose();
      for (const t of [x, w, b]) t.dispose();
    }
    expect(N().cudaGraphStats(0)).toEqual({ graphs: 0, capturing: false, poolBytes: 0 });
  });

  test('waiting for the device while capturing is refused and the capture is dropped', () => {
    const step = new CudaGraphStep<null>(dev);
    try {
      expect(
        code(() =>
          step.run('k', () => {
            synchronize(dev);
            return null;
          }),
        ),
      ).toBe('E_UNSUPPORTED');
      expect(step.captured).toBe(false);
      expect(N().cudaGraphStats(0)).toEqual({ graphs: 0, capturing: false, poolBytes: 0 });
      // Eager work goes on normally afterwards.
      tidy(() => expect(values(add(toDevice(randomTensor([4], 1, { dtype: 'f32' }), dev), 1)).length).toBe(4));
    } finally {
      step.dispose();
    }
  });

  test('a fence while capturing is refused; a failure that invalidates the capture reports its own error', () => {
    const step = new CudaGraphStep<null>(dev);
    try {
      expect(
        code(() =>
          step.run('k', () => {
            N().deviceFence(dev);
            return null;
          }),
        ),
      ).toBe('E_UNSUPPORTED');
      expect(N().cudaGraphStats(0)).toEqual({ graphs: 0, capturing: false, poolBytes: 0 });
      // The global top-k reads its counts back (a device-to-host copy the capture cannot hold): the
      // error is the top-k's, not a second one from dropping the invalidated capture.
      let message = '';
      tidy(() => {
        const s = [0, 1].map((i) => toDevice(randomTensor([4096], 30 + i, { dtype: 'f32' }), dev));
        try {
          step.run('topk', () => {
            N().topkGlobal(
              s.map((t) => t.handle),
              100,
            );
            return null;
          });
        } catch (e) {
          expect(e).toBeInstanceOf(SiftError);
          message = (e as SiftError).message;
        }
      });
      expect(message).not.toBe('');
      expect(message).not.toMatch(/capturing a CUDA graph on/);
      expect(step.captured).toBe(false);
      expect(N().cudaGraphStats(0)).toEqual({ graphs: 0, capturing: false, poolBytes: 0 });
      tidy(() => expect(values(add(toDevice(randomTensor([4], 1, { dtype: 'f32' }), dev), 1)).length).toBe(4));
    } finally {
      step.dispose();
    }
  });

  test('work on another device while capturing is refused (two or more GPUs)', () => {
    if (backends().cuda.devices.length < 2) return;
    const step = new CudaGraphStep<null>(dev);
    try {
      expect(
        code(() =>
          step.run('k', () => {
            tidy(() => add(toDevice(randomTensor([4], 1, { dtype: 'f32' }), 'cuda:1'), 1));
            return null;
          }),
        ),
      ).toBe('E_UNSUPPORTED');
      expect(N().cudaGraphStats(0)).toEqual({ graphs: 0, capturing: false, poolBytes: 0 });
      // Once the capture is dropped, this thread may use the other device again.
      tidy(() => expect(values(add(toDevice(randomTensor([4], 1, { dtype: 'f32' }), 'cuda:1'), 1)).length).toBe(4));
    } finally {
      step.dispose();
    }
  });

  test('one graph per device', () => {
    const a = new CudaGraphStep<null>(dev);
    const b = new CudaGraphStep<null>(dev);
    try {
      a.run('k', () => null);
      expect(code(() => b.run('k', () => null))).toBe('E_UNSUPPORTED');
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  test('a SIFT step with forward and backward replayed as a graph follows the eager losses', () => {
    const spec = modelSpec('gpt2', true);
    const losses = (graphs: boolean) => {
      // Dropout off in both (graphs implies it): the eager run draws new masks at every step.
      const run = setupRun(spec, 'sift', { device: dev, dtype: 'f32', batch: 2, seq: 32, rate: 0.01, seed: 7, graphs, noDropout: true });
      try {
        const out: number[] = [];
        for (let i = 0; i < 4; i++) {
          const l = run.step(true)!;
          out.push(values(l)[0]);
          l.dispose();
        }
        return out;
      } finally {
        run.dispose();
      }
    };
    const eager = losses(false);
    const graphed = losses(true);
    expectClose(graphed, eager, { atol: 1e-4, rtol: 1e-4, label: 'losses, graph vs eager' });
    // The updates changed the model: a constant loss would mean the replays did not feed the optimizer.
    expect(new Set(eager.map((v) => v.toFixed(6))).size).toBeGreaterThan(1);
  });
});
