import { BatchSampler, SeededRng, padSequences, deriveSeed } from '../../lib/train/batching';

describe('batching', () => {
  test('seeded generator is deterministic and uniform-ish', () => {
    const a = new SeededRng(7);
    const b = new SeededRng(7);
    const xs = Array.from({ length: 1000 }, () => a.next());
    expect(xs).toEqual(Array.from({ length: 1000 }, () => b.next()));
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.05);
    expect(new SeededRng(8).next()).not.toBe(xs[0]);
    expect(deriveSeed(1, 2)).not.toBe(deriveSeed(1, 3));
  });

  test('shuffled epochs: every example once, deterministic per (seed, epoch), different across epochs', () => {
    const s = new BatchSampler(23, { batchSize: 4, seed: 3 });
    expect(s.batchesPerEpoch).toBe(6);
    const epoch0 = Array.from({ length: 6 }, (_, i) => s.batchAt(i));
    expect(epoch0.flat().sort((a, b) => a - b)).toEqual(Array.from({ length: 23 }, (_, i) => i));
    const again = new BatchSampler(23, { batchSize: 4, seed: 3 });
    // Random access (as after a resume) gives the same batches.
    expect(again.batchAt(8)).toEqual(s.batchAt(8));
    expect(Array.from({ length: 6 }, (_, i) => again.batchAt(i))).toEqual(epoch0);
    const epoch1 = Array.from({ length: 6 }, (_, i) => s.batchAt(6 + i));
    expect(epoch1).not.toEqual(epoch0);
    expect(new BatchSampler(23, { batchSize: 4, seed: 4 }).batchAt(0)).not.toEqual(epoch0[0]);
  });

  test('length bucketing groups similar lengths', () => {
    const lengths = Array.from({ length: 64 }, (_, i) => (i * 37) % 64);
    const s = new BatchSampler(64, { batchSize: 8, seed: 1, lengths });
    let spread = 0;
    for (let i = 0; i < 8; i++) {
      const l = s.batchAt(i).map((j) => lengths[j]);
      spread += Math.max(...l) - Math.min(...l);
    }
    expect(spread / 8).toBeLessThan(10);
    const all = Array.from({ length: 8 }, (_, i) => s.batchAt(i))
      .flat()
      .sort((a, b) => a - b);
    expect(all).toEqual(Array.from({ length: 64 }, (_, i) => i));
  });

  test('no-shuffle takes rows in file order and wraps around', () => {
    const s = new BatchSampler(5, { batchSize: 2, shuffle: false });
    expect([0, 1, 2, 3].map((i) => s.batchAt(i))).toEqual([
      [0, 1],
      [2, 3],
      [4, 0],
      [1, 2],
    ]);
  });

  test('padding', () => {
    const r = padSequences([[1, 2, 3], [4]], 0);
    expect(r).toEqual({
      ids: [
        [1, 2, 3],
        [4, 0, 0],
      ],
      mask: [
        [1, 1, 1],
        [1, 0, 0],
      ],
      length: 3,
    });
    expect(padSequences([[1], [2, 3]], 9, { side: 'left', multipleOf: 4 }).ids).toEqual([
      [9, 9, 9, 1],
      [9, 9, 2, 3],
    ]);
  });
});
