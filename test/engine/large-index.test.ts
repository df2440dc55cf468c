/**
 * Tensors past 32-bit offsets: an embedding table of Llama 3's 128,256 rows read at its last rows
 * in f32 where byte offsets pass 2^31, trained in bf16 at the 8B width (525M entries), and the
 * index dtype rule for flat SIFT indices (i64 from 2^31 entries), shared by the planner.
 * About 2.2 GB at most alive at once on the CPU.
 */
import { zeros, tensor, embedding, reduce, slice, tidy, HFConfig, liveTensors } from '../../lib';
import { planMemory } from '../../lib/plan/plan';
import { native } from '../../lib/engine/native';

const V = 128256;
const D = 4096;

describe('embedding tables of 128k rows', () => {
  test('f32 forward reads the last rows (byte offsets past 2^31)', () => {
    // 4224 wide: just past 2^31 bytes in f32 (4096 wide stays under).
    const D = 4224;
    tidy(() => {
      const w = zeros([V, D]);
      expect(w.size).toBe(V * D);
      expect(w.size * 4).toBeGreaterThan(2 ** 31);
      slice(w, 0, V - 1, V).fill_(7);
      slice(w, 0, V - 2, V - 1).fill_(-3);
      const ids = tensor(new BigInt64Array([BigInt(V - 1), 0n, BigInt(V - 2)]), [1, 3], { dtype: 'i64' });
      const out = embedding(w, ids);
      const v = out.toArray() as Float32Array;
      expect(v.length).toBe(3 * D);
      expect(v[0]).toBe(7);
      expect(v[D - 1]).toBe(7);
      expect(v[D]).toBe(0);
      expect(v[2 * D]).toBe(-3);
      expect(v[3 * D - 1]).toBe(-3);
    });
  });

  test('bf16 backward accumulates into the last row', () => {
    tidy(() => {
      const w = zeros([V, D], { dtype: 'bf16', requiresGrad: true });
      const ids = tensor(new BigInt64Array([BigInt(V - 1), BigInt(V - 1), 5n]), [1, 3], { dtype: 'i64' });
      reduce('sum', embedding(w, ids)).backward();
      const g = w.grad!;
      expect(g.shape).toEqual([V, D]);
      const last = slice(g, 0, V - 1, V).toArray() as Float32Array;
      expect(last[0]).toBe(2);
      expect(last[D - 1]).toBe(2);
      const five = slice(g, 0, 5, 6).toArray() as Float32Array;
      expect(five[D - 1]).toBe(1);
      const before = slice(g, 0, V - 2, V - 1).toArray() as Float32Array;
      expect(before[0]).toBe(0);
    });
    expect(liveTensors().cpu.bytes).toBeLessThan(2 ** 30);
  });
});

describe('flat SIFT indices: i32 below 2^31 entries, i64 from 2^31', () => {
  test('top-k returns i32 indices for a tensor under 2^31 entries', () => {
    tidy(() => {
      const s = tensor(new Float32Array([0.5, 3, -1, 2]), [4]);
      const idx = native().topk(s.handle, 2);
      expect(native().dtype(idx)).toBe('i32');
      native().dispose(idx);
    });
  });

  test('plan counts 8-byte indices for a target of 2^31 entries and 4-byte below', () => {
    // One block of width 32768 with an MLP of 65536: gate/up/down are 2^31 entries each.
    const big: HFConfig = {
      model_type: 'llama',
      vocab_size: 8,
      hidden_size: 32768,
      intermediate_size: 65536,
      num_hidden_layers: 1,
      num_attention_heads: 256,
      num_key_value_heads: 256,
      max_position_embeddings: 16,
    };
    const small: HFConfig = { ...big, intermediate_size: 65535 };
    const a = planMemory(big, { sparseRate: 0.001, batchSize: 1, maxLength: 4 });
    const b = planMemory(small, { sparseRate: 0.001, batchSize: 1, maxLength: 4 });
    const k = (n: number) => Math.min(Math.floor(0.001 * n) + 1, n);
    const attn = 4 * k(32768 * 32768);
    expect(a.parts.indices).toBe(attn * 4 + 3 * k(2 ** 31) * 8);
    expect(b.parts.indices).toBe(attn * 4 + 3 * k(32768 * 65535) * 4);
  });
});
