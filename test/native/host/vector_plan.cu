// Host-side check of the vector paths' index logic (native/cuda/common.cuh), no GPU needed:
// vectorize_indexer (an indexer over 16-byte vectors must map vector j to the element offsets of
// element j * V, with the vector's V elements consecutive and V-aligned), plan_elementwise (vector
// count, scalar tail, alignment fallback) and plan_col_reduce (every row of a column reduction
// read by exactly one lane of one chunk, grid limits). Compiled and run by
// test/native/cuda-host.test.ts when nvcc is present.
#include "../../../native/cuda/common.cuh"
#include <cstdio>
#include <random>
#include <vector>
using namespace sift;
using namespace sift::cuda;

static Shape contig(const Shape& s) { Shape r(s.size()); int64_t a = 1; for (int d = int(s.size()) - 1; d >= 0; d--) { r[d] = a; a *= s[d]; } return r; }

static void naive(const Shape& shape, const std::vector<Shape>& st, int64_t lin, int64_t* ref) {
  for (int k = 0; k < 3; k++) ref[k] = 0;
  for (int d = int(shape.size()) - 1; d >= 0; d--) { int64_t i = lin % shape[d]; lin /= shape[d]; for (int k = 0; k < 3; k++) ref[k] += i * st[k][d]; }
}

static int bad = 0, total = 0;
#define EXPECT(c) do { total++; if (!(c)) { bad++; printf("FAILED line %d: %s\n", __LINE__, #c); } } while (0)

// Returns whether the indexer vectorised; checks the mapping when it did.
static bool check_vec(const Shape& shape, const std::vector<Shape>& st, int V, int64_t samples, std::mt19937_64& g) {
  const Shape* sp[3] = {&st[0], &st[1], &st[2]};
  auto ix = make_indexer<3>(shape, sp);
  auto vix = ix;
  bool ok = vectorize_indexer<3>(vix, V);
  if (!ok) {
    // Unchanged on failure.
    bool same = vix.nd == ix.nd;
    for (int d = 0; d < ix.nd && same; d++) { same = vix.shape[d] == ix.shape[d]; for (int k = 0; k < 3; k++) same = same && vix.strides[k][d] == ix.strides[k][d]; }
    EXPECT(same);
    return false;
  }
  int64_t n = 1; for (auto s : shape) n *= s;
  EXPECT(n % V == 0);
  const int64_t nvec = n / V;
  std::uniform_int_distribution<int64_t> U(0, nvec - 1);
  const int64_t cnt = samples < 0 || samples >= nvec ? nvec : samples;
  for (int64_t t = 0; t < cnt; t++) {
    const int64_t j = (samples < 0 || samples >= nvec) ? t : U(g);
    int64_t off[3]; vix.offsets(j, off);
    for (int k = 0; k < 3; k++) {
      if (off[k] % V != 0) { printf("MISALIGNED vector %lld operand %d offset %lld V %d\n", (long long)j, k, (long long)off[k], V); bad++; return true; }
    }
    for (int e = 0; e < V; e++) {
      int64_t ref[3]; naive(shape, st, j * V + e, ref);
      for (int k = 0; k < 3; k++) if (ref[k] != off[k] + e) {
        printf("MISMATCH vector %lld elem %d operand %d got %lld want %lld\n", (long long)j, e, k, (long long)(off[k] + e), (long long)ref[k]);
        bad++; return true;
      }
    }
  }
  total++;
  return true;
}

int main() {
  std::mt19937_64 g(11);
  // Layouts of the GPT-2 step: they must take the vector path.
  EXPECT(check_vec({4096, 3072}, {contig({4096, 3072}), contig({4096, 3072}), {0, 1}}, 8, -1, g));       // bias add
  EXPECT(check_vec({8, 512, 768}, {contig({8, 512, 768}), {0, 0, 1}, contig({8, 512, 768})}, 8, -1, g));  // bias, 3-D
  // splitHeads backward: piece [B, T, H, hd] of g [B, H, T, hd] into a slice of [B, T, 3H, hd].
  EXPECT(check_vec({8, 512, 12, 64}, {{512 * 36 * 64, 36 * 64, 64, 1}, {12 * 512 * 64, 64, 512 * 64, 1}, {12 * 512 * 64, 64, 512 * 64, 1}}, 8, 300000, g));
  // Merge heads: [B, H, T, hd] viewed as [B, T, H, hd] made contiguous.
  EXPECT(check_vec({8, 512, 12, 64}, {contig({8, 512, 12, 64}), {12 * 512 * 64, 64, 512 * 64, 1}, contig({8, 512, 12, 64})}, 4, 300000, g));
  EXPECT(check_vec({5, 16}, {contig({5, 16}), contig({5, 16}), contig({5, 16})}, 16, -1, g));
  // Layouts that must not: broadcast or transposed innermost dim, odd sizes or strides.
  EXPECT(!check_vec({4096, 768}, {contig({4096, 768}), {1, 0}, contig({4096, 768})}, 8, -1, g));
  EXPECT(!check_vec({64, 64}, {contig({64, 64}), {1, 64}, contig({64, 64})}, 8, -1, g));
  EXPECT(!check_vec({6, 12}, {{16, 1}, contig({6, 12}), contig({6, 12})}, 8, -1, g));  // rows of 12 in rows of 16
  EXPECT(check_vec({6, 12}, {contig({6, 12}), contig({6, 12}), contig({6, 12})}, 8, -1, g));  // one merged dim of 72
  EXPECT(!check_vec({6, 8}, {{12, 1}, contig({6, 8}), contig({6, 8})}, 8, -1, g));  // outer stride 12
  EXPECT(!check_vec({6, 8}, {{13, 1}, contig({6, 8}), contig({6, 8})}, 8, -1, g));  // outer stride 13
  EXPECT(!check_vec({1, 1}, {{1, 1}, {0, 0}, {1, 1}}, 8, -1, g));                   // no dims left
  // Random layouts: whenever the indexer vectorises, the mapping must be exact.
  int vectorised = 0;
  for (int t = 0; t < 4000; t++) {
    const int V = 1 << (1 + int(g() % 4));  // 2..16
    int nd = 1 + int(g() % 5);
    Shape sh(nd);
    for (auto& x : sh) x = 1 + int64_t(g() % 6);
    if (g() % 2) sh[nd - 1] = V * (1 + int64_t(g() % 4));
    std::vector<Shape> st(3);
    for (int k = 0; k < 3; k++) {
      Shape big = sh;
      if (g() % 2) big[nd - 1] += V * int64_t(g() % 2);  // a slice of a wider innermost dim
      Shape c = contig(big);
      st[k].resize(nd);
      for (int d = 0; d < nd; d++) { int r = int(g() % 5); st[k][d] = r == 0 ? 0 : r == 1 ? c[d] * 2 : c[d]; }
      if (g() % 4 == 0) { int a = int(g() % nd), b = int(g() % nd); std::swap(st[k][a], st[k][b]); }
    }
    if (check_vec(sh, st, V, 5000, g)) vectorised++;
  }
  EXPECT(vectorised > 200);

  // plan_elementwise: contiguous vectors and the scalar tail; alignment fallback.
  {
    alignas(16) static char buf[256];
    const Shape shape{13};
    const Shape strides = contig(shape);
    const Shape* sp[2] = {&strides, &strides};
    size_t sizes[2] = {2, 2};
    const void* ptrs[2] = {buf, buf + 32};
    auto p = plan_elementwise<2>(8, shape, 13, true, ptrs, sizes, sp);
    EXPECT(p.vec && p.contig && p.nvec == 1);  // elements 8..12 are the tail
    const void* ptrs2[2] = {buf + 2, buf + 32};  // a view with an odd storage offset
    auto q = plan_elementwise<2>(8, shape, 13, true, ptrs2, sizes, sp);
    EXPECT(!q.vec && q.nvec == 13);
    auto r = plan_elementwise<2>(8, Shape{5}, 5, true, ptrs, sizes, sp);
    EXPECT(!r.vec && r.nvec == 5);  // shorter than one vector
    const Shape bshape{4, 16};
    const Shape bs0 = contig(bshape), bs1{0, 1};
    const Shape* bsp[2] = {&bs0, &bs1};
    auto b = plan_elementwise<2>(8, bshape, 64, false, ptrs, sizes, bsp);
    EXPECT(b.vec && !b.contig && b.nvec == 8);
    auto b2 = plan_elementwise<2>(8, bshape, 64, false, ptrs2, sizes, bsp);
    EXPECT(!b2.vec && b2.nvec == 64 && b2.ix.nd == 2 && b2.ix.shape[1] == 16);
  }

  // plan_col_reduce: every row read once, limits respected.
  for (int64_t R : {0LL, 1LL, 2LL, 7LL, 31LL, 32LL, 33LL, 127LL, 128LL, 129LL, 1000LL, 4096LL, 4097LL, 65535LL * 128, 65535LL * 128 + 1, 10000019LL, 1LL << 33}) {
    for (int V : {1, 2, 4, 8}) {
      for (int64_t I : {2LL, 7LL, 64LL, 768LL, 3072LL, 100003LL}) {
        if (V > 1 && I % V) continue;
        auto p = plan_col_reduce(3, R, I, V);
        EXPECT(p.tx * p.ty == kColReduceThreads && p.ty % 8 == 0 && p.ty <= 32);
        EXPECT(p.chunks >= 1 && p.chunks <= 65535 && p.rows_per_chunk % p.ty == 0);
        EXPECT(p.chunks * p.rows_per_chunk >= R && (R == 0 || (p.chunks - 1) * p.rows_per_chunk < R));
        EXPECT(p.grid_x * p.tx * V >= I && (p.grid_x - 1) * p.tx * V < I);
        EXPECT(p.grid_z == 3);
        // The order-defining numbers depend on R only.
        auto q = plan_col_reduce(70000, R, 2, 1);
        EXPECT(q.ty == p.ty && q.rows_per_chunk == p.rows_per_chunk && q.chunks == p.chunks && q.grid_z == 65535);
        if (R <= 5000 && V == 1 && I == 2) {
          std::vector<int> seen(size_t(R), 0);
          for (int64_t c = 0; c < p.chunks; c++)
            for (int l = 0; l < p.ty; l++) {
              const int64_t r0 = c * p.rows_per_chunk, r1 = std::min(r0 + p.rows_per_chunk, R);
              for (int64_t r = r0 + l; r < r1; r += p.ty) seen[size_t(r)]++;
            }
          bool once = true;
          for (int s : seen) once = once && s == 1;
          EXPECT(once);
        }
      }
    }
  }
  printf("%d of %d cases wrong\n", bad, total);
  return bad ? 1 : 0;
}
