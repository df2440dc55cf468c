/**
 * Gradient buckets in one process (a one-rank gloo group, where a sum over the ranks is the
 * identity): how gradients are cut into buckets, that a bucket starts in the backward when its last
 * gradient is complete, in order (SIFT targets whose gradient goes through the SDDMM sink too),
 * and that the dense gradients come back unchanged from staging.
 */
import * as net from 'net';
import { tensor, tidy, linear, randn, keep } from '../../lib';
import { ProcessGroup, glooAvailable } from '../../lib/dist/group';
import { GradientBuckets, GradientSource } from '../../lib/dist/buckets';
import { native } from '../../lib/engine/native';
import { Tensor } from '../../lib/engine/tensor';
import { createModel } from '../../lib/models';
import { Sift, SparseGradientMode } from '../../lib/sift/sift';
import { manualSeed } from '../../lib';

const GLOO = glooAvailable();
if (!GLOO) console.warn('test/dist/buckets: skipped: this build of the addon has no gloo (install libgloo-dev and rebuild)');

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

(GLOO ? describe : describe.skip)('gradient buckets (one rank)', () => {
  let group: ProcessGroup;
  beforeAll(async () => {
    const port = await freePort();
    group = await ProcessGroup.init({
      device: 'cpu',
      timeoutSec: 30,
      env: { RANK: '0', WORLD_SIZE: '1', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) },
    });
  });
  afterAll(() => group?.destroy());

  test('dense gradients: buckets by size in backward order, started in the backward, unchanged by a one-rank sum', async () => {
    // Three layers of 8x8 (256 bytes each): 500-byte buckets (closed once they reach 500 bytes) hold [w3, w2] and [w1].
    const ws = [1, 2, 3].map((s) => keep(randn([8, 8], { seed: s }).mul(0.3).detach().requiresGrad_()));
    const sources: GradientSource[] = [...ws].reverse().map((param) => ({ kind: 'grad' as const, param }));
    const b = new GradientBuckets(group, sources, { bucketMb: 500 / 2 ** 20 });
    try {
      expect(b.buckets.map((x) => x.params.length)).toEqual([2, 1]);
      const x = randn([4, 8], { seed: 9 });
      const run = () =>
        tidy(() => {
          let h = x;
          for (const w of ws) h = linear(h, w).tanh();
          h.sum().backward();
        });
      run(); // a first micro-batch: accumulated, not reduced
      const expected = ws.map((w) => Array.from(w.grad!.toArray() as Float32Array).map((v) => 2 * v));
      b.arm();
      run();
      const st = b.finish();
      expect(st).toEqual({ bytes: 3 * 256, buckets: 2, startedInBackward: 2 });
      ws.forEach((w, i) => {
        const got = Array.from(w.grad!.toArray() as Float32Array);
        got.forEach((v, j) => expect(v).toBeCloseTo(expected[i][j], 5));
      });
      x.dispose();
    } finally {
      b.dispose();
      for (const w of ws) w.dispose();
    }
  });

  test('slices of one flat buffer: contiguous runs in reverse order; a gradient never reached is summed as is', () => {
    const N = native();
    const buf = new Tensor(N.full([64], 1, 'f32', 'cpu'));
    const ps = [0, 1, 2, 3].map(() => tensor([1], undefined, { requiresGrad: true }));
    // Slots of 16 floats (64 bytes): 128-byte buckets hold [p3, p2] and [p1, p0].
    const sources: GradientSource[] = [3, 2, 1, 0].map((i) => ({
      kind: 'slice' as const,
      param: ps[i],
      buffer: buf,
      offset: 16 * i,
      span: 16,
    }));
    const b = new GradientBuckets(group, sources, { bucketMb: 128 / 2 ** 20, overlap: false });
    try {
      expect(b.buckets.map((x) => x.flat.size)).toEqual([32, 32]);
      b.arm();
      const st = b.finish();
      expect(st).toEqual({ bytes: 256, buckets: 2, startedInBackward: 0 });
      expect(Array.from(buf.toArray() as Float32Array).every((v) => v === 1)).toBe(true);
      // A slice that does not continue the run (a gap) starts a new bucket.
      const gap = new GradientBuckets(group, [sources[0], { ...sources[2] }], { bucketMb: 1 });
      expect(gap.buckets.length).toBe(2);
      gap.dispose();
      expect(() => new GradientBuckets(group, [sources[0], sources[0]])).toThrow(/listed twice/);
      expect(() => new GradientBuckets(group, sources, { bucketMb: 0 })).toThrow(/positive/);
    } finally {
      b.dispose();
      buf.dispose();
      for (const p of ps) p.dispose();
    }
  });
  test.each([
    ['sddmm', false],
    ['sddmm', true],
    ['dense', false],
  ] as [SparseGradientMode, boolean][])(
    "SIFT's sparse gradients (%s, checkpointing %s): every bucket starts in the backward and sums what the backward wrote",
    (mode, checkpointing) => {
      const m = createModel(
        { model_type: 'gpt2', vocab_size: 50, n_positions: 16, n_embd: 32, n_layer: 2, n_head: 2 },
        { task: 'causal-lm', dtype: 'f32', seed: 5 },
      );
      const sift = new Sift(m, { sparseRate: 0.05, sparseGradient: mode, denseModules: [] });
      m.gradientCheckpointing = checkpointing;
      const step = (seed: number) => {
        const ids = [0, 1].map((r) => Array.from({ length: 7 }, (_, i) => 3 + ((seed * 7 + r * 5 + i * 3) % 40)));
        manualSeed(seed);
        tidy(() => m.forward({ inputIds: ids, attentionMask: ids.map((row) => row.map(() => 1)), labels: ids }).loss!.backward());
      };
      let b: GradientBuckets | null = null;
      try {
        step(1);
        sift.select();
        expect(sift.targets.filter((t) => sift.usesSddmm(t)).length > 0).toBe(mode === 'sddmm');
        // As the trainer lists them: the reverse of the forward.
        const order = new Map(m.namedParameters().map(([, t], i) => [t, i]));
        const sources: GradientSource[] = sift.sparseGradientSlots
          .map((s) => ({ kind: 'slice' as const, param: s.target.param, buffer: s.buffer, offset: s.offset, span: s.span }))
          .sort((x, y) => order.get(y.param)! - order.get(x.param)!);
        const read = () => sift.sparseGradientBuffers.map((t) => Array.from(t.toArray() as Float32Array));
        step(2);
        const want = read();
        sift.zeroGrad();
        // 256-byte buckets: about one target's selected values each.
        b = new GradientBuckets(group, sources, { bucketMb: 256 / 2 ** 20 });
        b.arm();
        step(2);
        const st = b.finish();
        expect(st.buckets).toBeGreaterThan(3);
        expect(st.startedInBackward).toBe(st.buckets);
        expect(read()).toEqual(want);
      } finally {
        b?.dispose();
        sift.dispose();
        m.dispose();
      }
    },
    60000,
  );
});
