// Host-side check of the CUDA kernels' strided indexer (native/cuda/common.cuh): the same code runs
// on the device, but StridedIndexer::offsets is __host__ __device__, so its index mapping (dims
// dropped and merged, 32-bit and 64-bit paths) is checked here against the naive mapping, on a
// machine without a GPU. Compiled and run by test/native/cuda-host.test.ts when nvcc is present.
#include "../../../native/cuda/common.cuh"
#include <cstdio>
#include <random>
using namespace sift;
using namespace sift::cuda;
static bool check(const Shape& shape, const std::vector<Shape>& st, int64_t samples, std::mt19937_64& g) {
  const Shape* sp[3] = {&st[0], &st[1], &st[2]};
  auto ix = make_indexer<3>(shape, sp);
  int64_t n = 1; for (auto s : shape) n *= s;
  std::uniform_int_distribution<int64_t> U(0, n - 1);
  int64_t cnt = samples < 0 || samples > n ? n : samples;
  for (int64_t t = 0; t < cnt; t++) {
    int64_t lin = (samples < 0 || samples >= n) ? t : U(g);
    int64_t off[3]; ix.offsets(lin, off);
    int64_t ref[3] = {0, 0, 0}, l = lin;
    for (int d = int(shape.size()) - 1; d >= 0; d--) { int64_t i = l % shape[d]; l /= shape[d]; for (int k = 0; k < 3; k++) ref[k] += i * st[k][d]; }
    for (int k = 0; k < 3; k++) if (off[k] != ref[k]) { printf("MISMATCH lin %lld k %d got %lld want %lld nd %d small %d\n", (long long)lin, k, (long long)off[k], (long long)ref[k], ix.nd, ix.small); return false; }
  }
  return true;
}
Shape contig(const Shape& s) { Shape r(s.size()); int64_t a = 1; for (int d = int(s.size()) - 1; d >= 0; d--) { r[d] = a; a *= s[d]; } return r; }
int main() {
  std::mt19937_64 g(7); int bad = 0, total = 0;
  // fixed cases
  struct C { Shape sh; std::vector<Shape> st; };
  std::vector<C> cs = {
    {{4096, 3072}, {contig({4096, 3072}), {0, 1}, contig({4096, 3072})}},        // bias broadcast
    {{8, 512, 768}, {contig({8, 512, 768}), {0, 0, 1}, {393216, 768, 1}}},
    {{2, 3, 1, 5}, {contig({2, 3, 1, 5}), {5, 10, 99, 1}, {0, 5, 7, 1}}},        // transposed + size-1
    {{8, 12, 512, 64}, {contig({8, 12, 512, 64}), {393216, 64, 768, 1}, {0, 0, 64, 1}}},
    {{1, 1, 1}, {{1, 1, 1}, {0, 0, 0}, {5, 5, 5}}},
    {{3, 1 << 20, 1024}, {contig({3, 1 << 20, 1024}), {0, 1024, 1}, {1, 3, 3 << 20}}},  // > 2^31: 64-bit path
    {{2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, {contig({2, 2, 2, 2, 2, 2, 2, 2, 2, 2}), contig({2, 2, 2, 2, 2, 2, 2, 2, 2, 2}), contig({2, 2, 2, 2, 2, 2, 2, 2, 2, 2})}},  // 10 dims merge to 1
  };
  for (auto& c : cs) { total++; if (!check(c.sh, c.st, 200000, g)) bad++; }
  // random permutations / broadcasts
  for (int t = 0; t < 3000; t++) {
    int nd = 1 + int(g() % 6);
    Shape sh(nd); for (auto& x : sh) x = 1 + int64_t(g() % 7);
    std::vector<Shape> st(3);
    for (int k = 0; k < 3; k++) {
      Shape c = contig(sh);
      st[k].resize(nd);
      for (int d = 0; d < nd; d++) { int r = int(g() % 4); st[k][d] = r == 0 ? 0 : r == 1 ? c[d] * 3 : c[d]; }
      if (g() % 3 == 0) { int a = int(g() % nd), b = int(g() % nd); std::swap(st[k][a], st[k][b]); }
    }
    bool ok = true;
    try { ok = check(sh, st, -1, g); } catch (...) { ok = true; }  // more than 8 dims after merging: refused
    total++; if (!ok) bad++;
  }
  printf("%d of %d cases wrong\n", bad, total);
  return bad ? 1 : 0;
}
