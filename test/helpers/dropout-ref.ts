/** The seeded dropout decision of native/core/random.h, in BigInt, for references in tests. */

const M64 = (1n << 64n) - 1n;

/** rng_mix of native/core/random.h. */
export function rngMix(seed: bigint, ctr: bigint): bigint {
  let z = (seed * 0x9e3779b97f4a7c15n + ctr * 0xd1b54a32d192ed03n + 0x632be59bd9b4e019n) & M64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

/** rng_uniform(seed, ctr) >= p: whether the element with this counter is kept. */
export function keeps(seed: number | bigint, ctr: number, p: number): boolean {
  return Number(rngMix(BigInt(seed), BigInt(ctr)) >> 40n) / 16777216 >= p;
}
