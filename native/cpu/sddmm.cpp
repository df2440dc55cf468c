// CPU SDDMM. Tokens are taken a chunk at a time: the chunk's columns of a and b are transposed
// once into feature-major f32 rows (each feature's tokens contiguous, padded with zeros to a
// multiple of 8), sized so that both fit in cache together; then every entry is one contiguous
// dot product of two such rows. Entries go tile by tile (core/sddmm_plan.h): one tile reads 32
// rows of a and 64 of b, so the b rows a tile needs stay in L1/L2 across its entries, and
// adjacent entries of one row share the loads of their a row (four at a time). Per-entry partial
// sums of the chunks are added in chunk order, so threads never change the result.
#include "sddmm.h"

#include <algorithm>
#include <vector>

#include "../core/sddmm_plan.h"
#include "numeric.h"
#include "parallel.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define SIFT_SDDMM_X86 1
#include <immintrin.h>
#endif

namespace sift::cpu {
namespace {

struct Entry {
  int64_t pos;   // position in idx and out
  int64_t aoff;  // offset of the entry's a row in the transposed chunk
  int64_t boff;  // offset of its b row
};

// acc[pos] += dot(a row, b row) over tp (a multiple of 8) tokens, for entries [0, n).
template <typename C>
void dots_generic(const C* at, const C* bt, const Entry* es, int64_t n, int64_t tp, C* acc) {
  for (int64_t e = 0; e < n; e++) {
    const C* x = at + es[e].aoff;
    const C* y = bt + es[e].boff;
    C s[8] = {};
    for (int64_t t = 0; t < tp; t += 8)
      for (int l = 0; l < 8; l++) s[l] += x[t + l] * y[t + l];
    acc[es[e].pos] += ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  }
}

#ifdef SIFT_SDDMM_X86
__attribute__((target("avx2,fma"))) inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// The same sums with AVX2/FMA; four entries of one row share each load of their a row. An
// entry's sum is the same whether it goes in a group of four or alone (two accumulators, tokens
// 16 at a time, then the last 8): which entries are grouped depends on where the tile range was
// split over the threads, and the result must not.
__attribute__((target("avx2,fma"))) void dots_avx2(const float* at, const float* bt, const Entry* es, int64_t n,
                                                   int64_t tp, float* acc) {
  int64_t e = 0;
  while (e < n) {
    const int64_t ao = es[e].aoff;
    if (e + 4 <= n && es[e + 3].aoff == ao && es[e + 1].aoff == ao && es[e + 2].aoff == ao) {
      const float* x = at + ao;
      const float *y0 = bt + es[e].boff, *y1 = bt + es[e + 1].boff, *y2 = bt + es[e + 2].boff,
                  *y3 = bt + es[e + 3].boff;
      __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
      __m256 u0 = _mm256_setzero_ps(), u1 = _mm256_setzero_ps(), u2 = _mm256_setzero_ps(), u3 = _mm256_setzero_ps();
      int64_t t = 0;
      for (; t + 16 <= tp; t += 16) {
        const __m256 xv = _mm256_loadu_ps(x + t), xw = _mm256_loadu_ps(x + t + 8);
        s0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(y0 + t), s0);
        u0 = _mm256_fmadd_ps(xw, _mm256_loadu_ps(y0 + t + 8), u0);
        s1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(y1 + t), s1);
        u1 = _mm256_fmadd_ps(xw, _mm256_loadu_ps(y1 + t + 8), u1);
        s2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(y2 + t), s2);
        u2 = _mm256_fmadd_ps(xw, _mm256_loadu_ps(y2 + t + 8), u2);
        s3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(y3 + t), s3);
        u3 = _mm256_fmadd_ps(xw, _mm256_loadu_ps(y3 + t + 8), u3);
      }
      if (t < tp) {
        const __m256 xv = _mm256_loadu_ps(x + t);
        s0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(y0 + t), s0);
        s1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(y1 + t), s1);
        s2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(y2 + t), s2);
        s3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(y3 + t), s3);
      }
      acc[es[e].pos] += hsum256(_mm256_add_ps(s0, u0));
      acc[es[e + 1].pos] += hsum256(_mm256_add_ps(s1, u1));
      acc[es[e + 2].pos] += hsum256(_mm256_add_ps(s2, u2));
      acc[es[e + 3].pos] += hsum256(_mm256_add_ps(s3, u3));
      e += 4;
    } else {
      const float* x = at + ao;
      const float* y = bt + es[e].boff;
      __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
      int64_t t = 0;
      for (; t + 16 <= tp; t += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + t), _mm256_loadu_ps(y + t), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + t + 8), _mm256_loadu_ps(y + t + 8), s1);
      }
      if (t < tp) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + t), _mm256_loadu_ps(y + t), s0);
      acc[es[e].pos] += hsum256(_mm256_add_ps(s0, s1));
      e++;
    }
  }
}

bool have_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif

// Feature-major copy of tokens [t0, t0 + tc) of x [T, f]: dst[j * tp + t] = x[t0 + t, j], zeros
// from tc to tp.
template <typename T, typename C>
void transpose_chunk(const T* x, int64_t f, int64_t t0, int64_t tc, int64_t tp, C* dst) {
  constexpr int64_t kB = 16;
  parallel_for((f + kB - 1) / kB, std::max<int64_t>(1, 4096 / std::max<int64_t>(tp, 1)), [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; blk++) {
      const int64_t j0 = blk * kB, j1 = std::min(f, j0 + kB);
      for (int64_t t = 0; t < tc; t++) {
        const T* row = x + (t0 + t) * f;
        for (int64_t j = j0; j < j1; j++) dst[j * tp + t] = ld<C>(row[j]);
      }
      for (int64_t j = j0; j < j1; j++)
        for (int64_t t = tc; t < tp; t++) dst[j * tp + t] = C(0);
    }
  });
}

template <typename T, typename I>
void run(const Tensor& out, const Tensor& a, const Tensor& b, const I* ix, const int64_t* packed, bool accumulate) {
  using C = acc_t<T>;
  const int64_t tokens = a.shape[0], m = a.shape[1], n = b.shape[1], k = out.numel();
  std::vector<int64_t> own;
  if (!packed) {
    own = plan_sddmm(ix, k, m, n).pack();
    packed = own.data();
  }
  SIFT_CHECK(packed[0] == m && packed[1] == n && packed[2] == k, "E_MISMATCH", "sddmm: the plan was made for ",
             packed[2], " indices into [", packed[0], ", ", packed[1], "], not ", k, " into [", m, ", ", n, "]");
  const int64_t ntiles = packed[3];
  const int64_t* order = packed + kSddmmPackedHeader;
  const int64_t* tiles = order + k;
  // Token chunk: both transposed chunks in about 768 KiB (a core's L2, where the entries' dot
  // products read them), 32 to 1024 tokens, a multiple of 16. At 1% an entry's two rows are
  // seldom reused within a tile, so they must come from L2 rather than memory.
  int64_t chunk = (int64_t(768) << 10) / (int64_t(sizeof(C)) * (m + n));
  chunk = std::clamp<int64_t>(chunk / 16 * 16, 32, 1024);
  chunk = std::min(chunk, (tokens + 7) / 8 * 8);
  std::vector<C> at(size_t(m * chunk)), bt(size_t(n * chunk)), acc(size_t(k), C(0));
  std::vector<Entry> es(static_cast<size_t>(k));
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  for (int64_t t0 = 0; t0 < tokens; t0 += chunk) {
    const int64_t tc = std::min(chunk, tokens - t0), tp = (tc + 7) / 8 * 8;
    transpose_chunk(pa, m, t0, tc, tp, at.data());
    transpose_chunk(pb, n, t0, tc, tp, bt.data());
    if (t0 == 0 || tp != chunk) {
      // Row offsets scale with tp: set on the first chunk and again for a shorter last one.
      parallel_for(k, 1 << 14, [&](int64_t lo, int64_t hi) {
        for (int64_t e = lo; e < hi; e++) {
          const int64_t pos = order[e];
          SIFT_CHECK(pos >= 0 && pos < k, "E_MISMATCH", "sddmm: the plan does not belong to these indices");
          const int64_t f = int64_t(ix[pos]);
          SIFT_CHECK(f >= 0 && f < m * n, "E_INDEX", "sddmm: index ", f, " at position ", pos, " is out of range for [",
                     m, ", ", n, "]");
          es[size_t(e)] = {pos, f / n * tp, f % n * tp};
        }
      });
    }
    parallel_for(ntiles, 8, [&](int64_t lo, int64_t hi) {
      const int64_t e0 = tiles[3 * lo + 2], e1 = hi < ntiles ? tiles[3 * hi + 2] : k;
#ifdef SIFT_SDDMM_X86
      if constexpr (std::is_same_v<C, float>) {
        if (have_avx2()) {
          dots_avx2(at.data(), bt.data(), es.data() + e0, e1 - e0, tp, acc.data());
          return;
        }
      }
#endif
      dots_generic(at.data(), bt.data(), es.data() + e0, e1 - e0, tp, acc.data());
    });
  }
  float* o = out.data<float>();
  parallel_for(k, 1 << 15, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) o[i] = accumulate ? float(C(o[i]) + acc[size_t(i)]) : float(acc[size_t(i)]);
  });
}

}  // namespace

void sddmm(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& idx, const int64_t* plan,
           bool accumulate) {
  dispatch_int(idx.dtype, "sddmm", [&](auto it) {
    using I = typename decltype(it)::type;
    dispatch_float(a.dtype, "sddmm", [&](auto tt) {
      using T = typename decltype(tt)::type;
      run<T>(out, a, b, idx.data<I>(), plan, accumulate);
    });
  });
}

}  // namespace sift::cpu
