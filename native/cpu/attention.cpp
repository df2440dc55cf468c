// CPU scaled dot-product attention, memory-efficient in both directions.
// Forward: one task per (b, h, block of BQ queries) streams over key blocks of BK keys with an
// online softmax; only BQ x BK scores exist at a time. lse (natural log) is saved per query.
// Backward: P is recomputed block by block from q, k and lse; Delta_i = rowsum(dO_i * O_i)
// stands in for rowsum(P_i * dP_i) (it holds with dropout too). dK/dV are accumulated by tasks
// that own a key block of one kv head (looping over its query heads and query blocks), dQ by
// tasks that own a query block: no two tasks write the same gradient row, so there are no locks
// and the result is deterministic, at the cost of computing the scores twice.
// Inner loops are laid out to run over a contiguous dim without reductions (k and v tiles are
// transposed) so that the compiler vectorises them.
// Soft-capping multiplies dS by 1 - tanh^2 of the capped score; a sliding window narrows the key
// range of each query block (and the query range of each key block), so tiles entirely outside
// the window are never computed.
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "dropout.h"
#include "parallel.h"

namespace sift::cpu {
namespace {

constexpr int64_t BQ = 32, BK = 64;

struct Geo {
  int64_t B, H, Hkv, Tq, Tk, D, group, shift, window;
  Geo(const Tensor& q, const Tensor& k, const AttnDesc& d)
      : B(q.shape[0]),
        H(q.shape[1]),
        Hkv(k.shape[1]),
        Tq(q.shape[2]),
        Tk(k.shape[2]),
        D(q.shape[3]),
        group(q.shape[1] / k.shape[1]),
        shift(k.shape[2] - q.shape[2]),
        window(d.window) {}
  // Keys visible to some query of [i0, i0 + nq): [key_begin, key_end).
  int64_t key_begin(int64_t i0) const {
    if (!window) return 0;
    return std::clamp<int64_t>(i0 + shift - window + 1, 0, Tk);
  }
  int64_t key_end(bool causal, int64_t i0, int64_t nq) const {
    if (!causal) return Tk;
    return std::clamp<int64_t>(i0 + nq + shift, 0, Tk);
  }
  // Queries that see some key of [j0, j0 + nk): [query_begin, query_end).
  int64_t query_begin(bool causal, int64_t j0) const {
    if (!causal) return 0;
    return std::clamp<int64_t>(j0 - shift, 0, Tq);
  }
  int64_t query_end(int64_t j0, int64_t nk) const {
    if (!window) return Tq;
    return std::clamp<int64_t>(j0 + nk - 1 - shift + window, 0, Tq);
  }
};

// Turns raw dot products into masked, scaled (and soft-capped) scores (-inf where a key is not
// visible).
template <typename A>
struct Masker {
  AttnMask mode;
  bool causal;
  int64_t H, Tq, Tk, shift, window;
  A cap, inv_cap;
  const uint8_t* pad = nullptr;
  const A* add = nullptr;
  int64_t ms[4] = {0, 0, 0, 0};

  Masker(const Tensor& mask, const AttnDesc& d, const Geo& g)
      : mode(d.mask),
        causal(d.causal),
        H(g.H),
        Tq(g.Tq),
        Tk(g.Tk),
        shift(g.shift),
        window(d.window),
        cap(A(d.softcap)),
        inv_cap(d.softcap > 0 ? A(1.0 / d.softcap) : A(0)) {
    if (mode == AttnMask::KeyPadding) pad = mask.data<uint8_t>();
    if (mode == AttnMask::Additive) {
      add = mask.data<A>();
      for (int k = 0; k < 4; k++) ms[k] = mask.strides[k];
    }
  }

  // dcap (only with soft-capping, when not null): d capped / d uncapped = 1 - tanh^2 per key, 0
  // where the key is not visible.
  void apply(int64_t b, int64_t h, int64_t i, int64_t j0, int64_t nk, A scale, A* s, A* dcap = nullptr) const {
    const A ninf = -std::numeric_limits<A>::infinity();
    const int64_t visible = causal ? std::clamp<int64_t>(i + shift + 1 - j0, 0, nk) : nk;
    const int64_t first = window ? std::clamp<int64_t>(i + shift - window + 1 - j0, 0, visible) : 0;
    for (int64_t c = 0; c < nk; c++) s[c] *= scale;
    if (cap > A(0)) {
      for (int64_t c = first; c < visible; c++) {
        const A t = std::tanh(s[c] * inv_cap);
        s[c] = cap * t;
        if (dcap) dcap[c] = A(1) - t * t;
      }
      if (dcap) {
        for (int64_t c = 0; c < first; c++) dcap[c] = A(0);
        for (int64_t c = visible; c < nk; c++) dcap[c] = A(0);
      }
    }
    for (int64_t c = 0; c < first; c++) s[c] = ninf;
    for (int64_t c = visible; c < nk; c++) s[c] = ninf;
    if (pad) {
      const uint8_t* p = pad + b * Tk + j0;
      for (int64_t c = first; c < visible; c++)
        if (!p[c]) s[c] = ninf;
    } else if (add) {
      const A* a = add + b * ms[0] + h * ms[1] + i * ms[2] + j0 * ms[3];
      for (int64_t c = first; c < visible; c++) s[c] += a[c * ms[3]];
    }
  }
};

template <typename T, typename A>
inline const T* row_ptr(const Tensor& t, const T* base, int64_t b, int64_t h, int64_t i) {
  return base + b * t.strides[0] + h * t.strides[1] + i * t.strides[2];
}

// dst[r * D + d] = src row r (rows of a strided [.., T, D] tensor at (b, h)).
template <typename T, typename A>
void load_rows(const Tensor& t, int64_t b, int64_t h, int64_t i0, int64_t n, int64_t D, A* dst) {
  const T* base = t.data<T>();
  for (int64_t r = 0; r < n; r++) {
    const T* src = row_ptr<T, A>(t, base, b, h, i0 + r);
    for (int64_t d = 0; d < D; d++) dst[r * D + d] = static_cast<A>(src[d]);
  }
}

// dst[d * BK + c] = row c, element d (a transposed tile, so score loops run over keys).
template <typename T, typename A>
void load_cols(const Tensor& t, int64_t b, int64_t h, int64_t j0, int64_t n, int64_t D, A* dst) {
  const T* base = t.data<T>();
  for (int64_t c = 0; c < n; c++) {
    const T* src = row_ptr<T, A>(t, base, b, h, j0 + c);
    for (int64_t d = 0; d < D; d++) dst[d * BK + c] = static_cast<A>(src[d]);
  }
}

// s[r * BK + c] = a_r . bt[:, c] for r < nq, c < nk.
template <typename A>
void tile_dots(const A* a, const A* bt, int64_t nq, int64_t nk, int64_t D, A* s) {
  for (int64_t r = 0; r < nq; r++) {
    A* srow = s + r * BK;
    std::fill(srow, srow + nk, A(0));
    const A* ar = a + r * D;
    for (int64_t d = 0; d < D; d++) {
      const A av = ar[d];
      const A* br = bt + d * BK;
      for (int64_t c = 0; c < nk; c++) srow[c] += av * br[c];
    }
  }
}

template <typename A>
inline void axpy(A alpha, const A* x, A* y, int64_t n) {
  for (int64_t d = 0; d < n; d++) y[d] += alpha * x[d];
}

template <typename A>
struct Dropper {
  bool on;
  uint32_t thr;
  A rz;
  uint64_t seed;
  explicit Dropper(const AttnDesc& d)
      : on(d.dropout_p > 0), thr(dropout_threshold(d.dropout_p)), rz(A(1.0 / (1.0 - d.dropout_p))), seed(d.seed) {}
  A factor(uint64_t counter) const { return dropout_keep(seed, counter, thr) ? rz : A(0); }
};

template <typename T>
void forward_impl(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, const Tensor& out,
                  const Tensor& lse, const AttnDesc& desc) {
  using A = acc_t<T>;
  const Geo g(q, k, desc);
  const Masker<A> mk(mask, desc, g);
  const Dropper<A> drop(desc);
  const A scale = A(desc.scale);
  const int64_t D = g.D, nqb = (g.Tq + BQ - 1) / BQ;
  T* op = out.data<T>();
  A* lp = lse.data<A>();
  parallel_for(g.B * g.H * nqb, 1, [&](int64_t t0, int64_t t1) {
    std::vector<A> qa(BQ * D), kt(D * BK), va(BK * D), s(BQ * BK), o(BQ * D), m(BQ), l(BQ);
    const A ninf = -std::numeric_limits<A>::infinity();
    for (int64_t task = t0; task < t1; task++) {
      const int64_t qb = task % nqb, bh = task / nqb, h = bh % g.H, b = bh / g.H, hk = h / g.group;
      const int64_t i0 = qb * BQ, nq = std::min(BQ, g.Tq - i0);
      load_rows<T, A>(q, b, h, i0, nq, D, qa.data());
      std::fill(o.begin(), o.end(), A(0));
      std::fill(m.begin(), m.end(), ninf);
      std::fill(l.begin(), l.end(), A(0));
      const int64_t kend = g.key_end(desc.causal, i0, nq);
      for (int64_t j0 = g.key_begin(i0); j0 < kend; j0 += BK) {
        const int64_t nk = std::min(BK, kend - j0);
        load_cols<T, A>(k, b, hk, j0, nk, D, kt.data());
        load_rows<T, A>(v, b, hk, j0, nk, D, va.data());
        tile_dots(qa.data(), kt.data(), nq, nk, D, s.data());
        for (int64_t r = 0; r < nq; r++) {
          const int64_t i = i0 + r;
          A* srow = s.data() + r * BK;
          mk.apply(b, h, i, j0, nk, scale, srow);
          A mx = ninf;
          for (int64_t c = 0; c < nk; c++) mx = std::max(mx, srow[c]);
          const A mnew = std::max(m[r], mx);
          if (mnew == ninf) continue;             // nothing visible yet in this row
          const A alpha = std::exp(m[r] - mnew);  // 0 on the first visible block
          A* orow = o.data() + r * D;
          if (alpha != A(1)) {
            l[r] *= alpha;
            for (int64_t d = 0; d < D; d++) orow[d] *= alpha;
          }
          A sum = 0;
          const uint64_t ctr = uint64_t(((b * g.H + h) * g.Tq + i) * g.Tk + j0);
          for (int64_t c = 0; c < nk; c++) {
            A pc = std::exp(srow[c] - mnew);
            sum += pc;
            if (drop.on) pc *= drop.factor(ctr + uint64_t(c));
            if (pc != A(0)) axpy(pc, va.data() + c * D, orow, D);
          }
          l[r] += sum;
          m[r] = mnew;
        }
      }
      for (int64_t r = 0; r < nq; r++) {
        const int64_t row = (b * g.H + h) * g.Tq + i0 + r;
        T* dst = op + row * D;
        if (l[r] > A(0)) {
          const A inv = A(1) / l[r];
          for (int64_t d = 0; d < D; d++) dst[d] = T(A(o[r * D + d] * inv));
          lp[row] = m[r] + std::log(l[r]);
        } else {  // every key masked: zeros, and lse = -inf marks the row for the backward
          for (int64_t d = 0; d < D; d++) dst[d] = T(A(0));
          lp[row] = ninf;
        }
      }
    }
  });
}

// Recomputes a tile's probabilities and score gradients in place: s (raw dots q.k) becomes the
// dropped probabilities P*Z (what multiplies dO into dV), dp (raw dO.v) becomes
// dS = P * (dP*Z - Delta) (what multiplies q into dK and k into dQ, before the scale).
template <typename A>
void probs_and_dscores(const Geo& g, const Masker<A>& mk, const Dropper<A>& drop, A scale, const A* lse, const A* delta,
                       int64_t b, int64_t h, int64_t i0, int64_t nq, int64_t j0, int64_t nk, A* s, A* dp) {
  const A ninf = -std::numeric_limits<A>::infinity();
  A dcap[BK];
  const bool capped = mk.cap > A(0);
  for (int64_t r = 0; r < nq; r++) {
    const int64_t i = i0 + r, row = (b * g.H + h) * g.Tq + i;
    A* srow = s + r * BK;
    A* dprow = dp + r * BK;
    const A L = lse[row], Dl = delta[row];
    if (L == ninf) {
      std::fill(srow, srow + nk, A(0));
      std::fill(dprow, dprow + nk, A(0));
      continue;
    }
    mk.apply(b, h, i, j0, nk, scale, srow, capped ? dcap : nullptr);
    const uint64_t ctr = uint64_t(row * g.Tk + j0);
    for (int64_t c = 0; c < nk; c++) {
      const A p = std::exp(srow[c] - L);
      const A z = drop.on ? drop.factor(ctr + uint64_t(c)) : A(1);
      srow[c] = p * z;
      dprow[c] = p * (dprow[c] * z - Dl);
    }
    if (capped)
      for (int64_t c = 0; c < nk; c++) dprow[c] *= dcap[c];
  }
}

template <typename T>
void backward_impl(const Tensor& gout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                   const Tensor& lse, const Tensor& mask, const Tensor& gq, const Tensor& gk, const Tensor& gv,
                   const AttnDesc& desc) {
  using A = acc_t<T>;
  const Geo g(q, k, desc);
  const Masker<A> mk(mask, desc, g);
  const Dropper<A> drop(desc);
  const A scale = A(desc.scale);
  const int64_t D = g.D, rows = g.B * g.H * g.Tq;
  const A* lp = lse.data<A>();

  // Delta_i = dO_i . O_i
  std::vector<A> delta(size_t(std::max<int64_t>(rows, 1)));
  {
    const T* go = gout.data<T>();
    const T* o = out.data<T>();
    parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(D, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t row = r0; row < r1; row++) {
        const int64_t i = row % g.Tq, bh = row / g.Tq, h = bh % g.H, b = bh / g.H;
        const T* gr = row_ptr<T, A>(gout, go, b, h, i);
        const T* orow = o + row * D;
        A acc = 0;
        for (int64_t d = 0; d < D; d++) acc += static_cast<A>(gr[d]) * static_cast<A>(orow[d]);
        delta[row] = acc;
      }
    });
  }

  // dK, dV: one task per (b, kv head, key block).
  const int64_t nkb = (g.Tk + BK - 1) / BK;
  T* gkp = gk.data<T>();
  T* gvp = gv.data<T>();
  parallel_for(g.B * g.Hkv * nkb, 1, [&](int64_t t0, int64_t t1) {
    std::vector<A> kt(D * BK), vt(D * BK), qa(BQ * D), da(BQ * D), s(BQ * BK), dp(BQ * BK), dk(BK * D), dv(BK * D);
    for (int64_t task = t0; task < t1; task++) {
      const int64_t kb = task % nkb, bk = task / nkb, hk = bk % g.Hkv, b = bk / g.Hkv;
      const int64_t j0 = kb * BK, nk = std::min(BK, g.Tk - j0);
      load_cols<T, A>(k, b, hk, j0, nk, D, kt.data());
      load_cols<T, A>(v, b, hk, j0, nk, D, vt.data());
      std::fill(dk.begin(), dk.end(), A(0));
      std::fill(dv.begin(), dv.end(), A(0));
      // The queries that see some key of the block under the causal mask and the window.
      const int64_t istart = g.query_begin(desc.causal, j0), iend = g.query_end(j0, nk);
      for (int64_t h = hk * g.group; h < (hk + 1) * g.group; h++) {
        for (int64_t i0 = (istart / BQ) * BQ; i0 < iend; i0 += BQ) {
          const int64_t nq = std::min(BQ, g.Tq - i0);
          load_rows<T, A>(q, b, h, i0, nq, D, qa.data());
          load_rows<T, A>(gout, b, h, i0, nq, D, da.data());
          tile_dots(qa.data(), kt.data(), nq, nk, D, s.data());
          tile_dots(da.data(), vt.data(), nq, nk, D, dp.data());
          probs_and_dscores(g, mk, drop, scale, lp, delta.data(), b, h, i0, nq, j0, nk, s.data(), dp.data());
          for (int64_t r = 0; r < nq; r++) {
            for (int64_t c = 0; c < nk; c++) {
              const A pz = s[r * BK + c], ds = dp[r * BK + c];
              if (pz != A(0)) axpy(pz, da.data() + r * D, dv.data() + c * D, D);
              if (ds != A(0)) axpy(ds, qa.data() + r * D, dk.data() + c * D, D);
            }
          }
        }
      }
      for (int64_t c = 0; c < nk; c++) {
        const int64_t row = (b * g.Hkv + hk) * g.Tk + j0 + c;
        for (int64_t d = 0; d < D; d++) {
          gkp[row * D + d] = T(A(dk[c * D + d] * scale));
          gvp[row * D + d] = T(dv[c * D + d]);
        }
      }
    }
  });

  // dQ: one task per (b, h, query block).
  const int64_t nqb = (g.Tq + BQ - 1) / BQ;
  T* gqp = gq.data<T>();
  parallel_for(g.B * g.H * nqb, 1, [&](int64_t t0, int64_t t1) {
    std::vector<A> qa(BQ * D), da(BQ * D), ka(BK * D), kt(D * BK), vt(D * BK), s(BQ * BK), dp(BQ * BK), dq(BQ * D);
    for (int64_t task = t0; task < t1; task++) {
      const int64_t qb = task % nqb, bh = task / nqb, h = bh % g.H, b = bh / g.H, hk = h / g.group;
      const int64_t i0 = qb * BQ, nq = std::min(BQ, g.Tq - i0);
      load_rows<T, A>(q, b, h, i0, nq, D, qa.data());
      load_rows<T, A>(gout, b, h, i0, nq, D, da.data());
      std::fill(dq.begin(), dq.end(), A(0));
      const int64_t kend = g.key_end(desc.causal, i0, nq);
      for (int64_t j0 = g.key_begin(i0); j0 < kend; j0 += BK) {
        const int64_t nk = std::min(BK, kend - j0);
        load_rows<T, A>(k, b, hk, j0, nk, D, ka.data());
        load_cols<T, A>(k, b, hk, j0, nk, D, kt.data());
        load_cols<T, A>(v, b, hk, j0, nk, D, vt.data());
        tile_dots(qa.data(), kt.data(), nq, nk, D, s.data());
        tile_dots(da.data(), vt.data(), nq, nk, D, dp.data());
        probs_and_dscores(g, mk, drop, scale, lp, delta.data(), b, h, i0, nq, j0, nk, s.data(), dp.data());
        for (int64_t r = 0; r < nq; r++)
          for (int64_t c = 0; c < nk; c++) {
            const A ds = dp[r * BK + c];
            if (ds != A(0)) axpy(ds, ka.data() + c * D, dq.data() + r * D, D);
          }
      }
      for (int64_t r = 0; r < nq; r++) {
        T* dst = gqp + ((b * g.H + h) * g.Tq + i0 + r) * D;
        for (int64_t d = 0; d < D; d++) dst[d] = T(A(dq[r * D + d] * scale));
      }
    }
  });
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, const Tensor& out,
                       const Tensor& lse, const AttnDesc& desc) {
  dispatch_float(q.dtype, "attention",
                 [&](auto tag) { forward_impl<typename decltype(tag)::type>(q, k, v, mask, out, lse, desc); });
}

void attention_backward(const Tensor& gout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const Tensor& mask, const Tensor& gq, const Tensor& gk, const Tensor& gv,
                        const AttnDesc& desc) {
  dispatch_float(q.dtype, "attentionBackward", [&](auto tag) {
    backward_impl<typename decltype(tag)::type>(gout, q, k, v, out, lse, mask, gq, gk, gv, desc);
  });
}

}  // namespace sift::cpu
