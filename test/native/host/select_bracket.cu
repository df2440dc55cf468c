// Host-side simulation of the bracket top-k kernels (native/cuda/select.cu, namespace brk): the same
// passes over the same tile layout, per simulated thread, with the decisions taken from
// native/cuda/select_bracket.h (the functions the kernels call): sample histogram and bracket,
// the comparison pass with its candidates and per-tile counts, the digits of the threshold from the
// candidates, per-tile counts and scans, and the write pass's packed scans and tie ranking. Every
// case is checked against cpu::topk (the same indices, in the same order), or, for scores with
// NaN/Inf, for the E_NUMERIC flag. A bracket miss (the kernels then run the radix kernels) is not
// an error, but the typical score distributions must not miss. Compiled and run by
// test/native/cuda-host.test.ts when nvcc is present.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "../../../native/core/half.h"
#include "../../../native/core/tensor.h"
#include "../../../native/cpu/select.h"
#include "../../../native/cuda/select_bracket.h"

using namespace sift;
namespace br = sift::cuda::bracket;

static int bad = 0, total = 0;
#define EXPECT(c, ...)                                   \
  do {                                                   \
    total++;                                             \
    if (!(c)) {                                          \
      bad++;                                             \
      printf("FAILED line %d: %s: ", __LINE__, #c);     \
      printf(__VA_ARGS__);                               \
      printf("\n");                                      \
    }                                                    \
  } while (0)

enum class Dt { F32, BF16, F16 };

struct Scores {
  Dt dt;
  std::vector<uint32_t> bits;  // one element each (16-bit types in the low half)
  float value(int64_t i) const {
    if (dt == Dt::F32) return br::u2f(bits[size_t(i)]);
    if (dt == Dt::BF16) return br::u2f(bits[size_t(i)] << 16);
    return f16::to_float(uint16_t(bits[size_t(i)]));
  }
  int64_t n() const { return int64_t(bits.size()); }
  int V() const { return dt == Dt::F32 ? 4 : 8; }
  // Raw 32-bit word w of a tile's thread-load (the kernel's uint4 words): elements packed as in memory.
  uint32_t word(int64_t first, int w, int64_t count_end) const {
    if (dt == Dt::F32) return first + w < count_end ? bits[size_t(first + w)] : 0u;
    uint32_t lo = first + 2 * w < count_end ? bits[size_t(first + 2 * w)] : 0u;
    uint32_t hi = first + 2 * w + 1 < count_end ? bits[size_t(first + 2 * w + 1)] : 0u;
    return lo | (hi << 16);
  }
};

struct SimResult {
  bool nonfinite = false, miss = false, lost = false;
  std::vector<int64_t> idx;
  int64_t candidates = 0;
};

// Mirrors brk::run_select_bracket and its kernels. cap as the launcher (total / 16, at least 4096).
static SimResult simulate(const Scores& s, int64_t k) {
  SimResult res;
  const int64_t n = s.n();
  const int V = s.V(), NV = br::kItems / V;
  const int64_t ntiles = (n + br::kTile - 1) / br::kTile;
  const uint64_t cap = uint64_t(std::min<int64_t>(n, std::max<int64_t>(n / 16, 4096)));
  auto count_of = [&](int64_t t) { return int(std::min<int64_t>(br::kTile, n - t * br::kTile)); };

  // Sample.
  const int64_t tstride = std::max<int64_t>(1, std::min<int64_t>(br::kSampleStride, ntiles / br::kSampleMinTiles));
  int64_t m = 0;
  for (int64_t t = 0; t < ntiles; t += tstride) m += count_of(t);
  const br::Ranks rk = br::bracket_ranks(uint64_t(k), uint64_t(m), uint64_t(n));
  std::vector<uint64_t> hist(br::kSampleBins, 0);
  for (int64_t t = 0; t < ntiles; t += tstride) {
    for (int e = 0; e < count_of(t); e++) {
      const uint32_t key = br::key_of(s.value(t * br::kTile + e));
      if (key >= 0xff800000u || key <= 0x007fffffu) res.nonfinite = true;
      hist[key >> (br::kKeyBits - br::kSampleBits)]++;
    }
  }
  uint32_t bins_found[2] = {br::kSampleBins - 1, 0};
  {
    const uint64_t ranks[2] = {rk.hi, rk.lo};
    for (int w = 0; w < 2; w++) {
      uint64_t above = 0;
      for (int b = br::kSampleBins - 1; b >= 0; b--) {
        above += hist[size_t(b)];
        if (above >= ranks[w]) {
          bins_found[w] = uint32_t(b);
          break;
        }
      }
    }
  }
  const br::Bounds bd = br::bracket_bounds(bins_found[1], bins_found[0]);

  // Split pass: per tile, per simulated thread, per item in the tile layout.
  std::vector<uint64_t> tile_gt(size_t(ntiles + 1), 0), tile_eq(size_t(ntiles + 1), 0);
  std::vector<uint32_t> cand_key;
  std::vector<uint64_t> cand_pos;
  bool overflow = false;
  uint64_t above = 0;
  uint32_t nf = 0;
  for (int64_t t = 0; t < ntiles; t++) {
    const int cnt = count_of(t);
    uint64_t g = 0;
    for (int x = 0; x < br::kThreads; x++) {
      for (int v = 0; v < NV; v++) {
        const int64_t first = t * br::kTile + v * (br::kThreads * V) + int64_t(x) * V;
        for (int w = 0; w < 4; w++) {
          const uint32_t word = s.word(first, w, t * br::kTile + cnt);
          nf = s.dt == Dt::F32 ? br::nonfinite_acc_f32(nf, word)
                               : (s.dt == Dt::BF16 ? br::nonfinite_acc_bf16(nf, word) : br::nonfinite_acc_f16(nf, word));
        }
      }
      for (int j = 0; j < br::kItems; j++) {
        const int e = br::item_offset(V, x, j);
        if (e >= cnt) continue;
        const float xv = s.value(t * br::kTile + e);
        const bool ge = xv >= bd.G, gl = xv >= bd.L;
        g += ge ? 1 : 0;
        if (gl && !ge) {
          if (cand_key.size() < cap) {
            cand_key.push_back(br::key_of(xv));
            cand_pos.push_back((uint64_t(t) << br::kTileShift) | uint64_t(e));
          } else {
            overflow = true;
          }
          res.candidates++;
        }
      }
    }
    tile_gt[size_t(t)] = g;
    above += g;
  }
  if (s.dt == Dt::F32 ? br::nonfinite_f32(nf) : br::nonfinite_16(nf)) res.nonfinite = true;
  if (res.nonfinite) return res;
  if (!br::bracket_hit(above, uint64_t(res.candidates), uint64_t(k), overflow)) {
    res.miss = true;
    return res;
  }

  // Digits of the threshold from the candidates (choose_block: the bin holding rank k_rem).
  const bool bf16 = s.dt == Dt::BF16;
  uint64_t krem = uint64_t(k) - above;
  uint32_t prefix = 0;
  for (int p = 0; p < br::digit_count(bf16); p++) {
    const int bits = br::digit_width(bf16, p), shift = br::digit_shift(bf16, p);
    const int match_shift = p == 0 ? 0 : br::digit_shift(bf16, p - 1);
    std::vector<uint64_t> h(size_t(1) << bits, 0);
    for (uint32_t key : cand_key)
      if (p == 0 || (key >> match_shift) == (prefix >> match_shift)) h[(key >> shift) & ((1u << bits) - 1)]++;
    uint64_t ab = 0;
    bool found = false;
    for (int b = (1 << bits) - 1; b >= 0; b--) {
      if (ab + h[size_t(b)] >= krem) {
        prefix |= uint32_t(b) << shift;
        krem -= ab;
        found = true;
        break;
      }
      ab += h[size_t(b)];
    }
    if (!found) {
      res.lost = true;
      return res;
    }
  }
  const uint32_t thr = bf16 ? br::bf16_full_key(prefix) : prefix;
  const uint64_t need = krem;
  for (size_t i = 0; i < cand_key.size(); i++) {
    const uint64_t t = cand_pos[i] >> br::kTileShift;
    if (cand_key[i] > thr) tile_gt[t]++;
    if (cand_key[i] == thr) tile_eq[t]++;
  }
  std::vector<uint64_t> gt_scan(size_t(ntiles + 1), 0), eq_scan(size_t(ntiles + 1), 0);
  for (int64_t t = 0; t < ntiles; t++) {
    gt_scan[size_t(t + 1)] = gt_scan[size_t(t)] + tile_gt[size_t(t)];
    eq_scan[size_t(t + 1)] = eq_scan[size_t(t)] + tile_eq[size_t(t)];
  }
  const uint64_t selected = gt_scan[size_t(ntiles)] + std::min(eq_scan[size_t(ntiles)], need);
  EXPECT(selected == uint64_t(k), "selected %llu of %lld", (unsigned long long)selected, (long long)k);

  // Write pass.
  res.idx.assign(size_t(k), -1);
  const float A = br::bound_of_key(uint64_t(thr) + 1), E = br::bound_of_key(thr);
  std::vector<unsigned> mask(br::kThreads), tmask(br::kThreads);
  std::vector<uint64_t> prefix_of(br::kThreads);
  auto packed_scan = [&](const std::vector<unsigned>& ms, uint64_t& tot) {
    uint64_t run = 0;  // thread order = (warp, lane) order
    for (int x = 0; x < br::kThreads; x++) {
      const uint64_t c = br::pack_counts(ms[size_t(x)], V, NV);
      prefix_of[size_t(x)] = run;
      run += c;
    }
    tot = run;
  };
  for (int64_t t = 0; t < ntiles; t++) {
    const int cnt = count_of(t);
    const uint64_t eqb = eq_scan[size_t(t)], teq = tile_eq[size_t(t)];
    const uint64_t ties_here = br::ties_taken(eqb, teq, need);
    if (tile_gt[size_t(t)] + ties_here == 0) continue;
    const int mode = ties_here == 0 ? 0 : (ties_here == teq ? 2 : 1);
    const float B = mode == 2 ? E : A;
    for (int x = 0; x < br::kThreads; x++) {
      unsigned mk = 0, tk = 0;
      for (int j = 0; j < br::kItems; j++) {
        const int e = br::item_offset(V, x, j);
        const bool valid = e < cnt;
        const float xv = valid ? s.value(t * br::kTile + e) : 0.0f;
        if (valid && xv >= B) mk |= 1u << j;
        if (mode == 1 && valid && xv >= E && !(xv >= A)) tk |= 1u << j;
      }
      mask[size_t(x)] = mk;
      tmask[size_t(x)] = tk;
    }
    uint64_t tot = 0;
    if (mode == 1) {
      packed_scan(tmask, tot);
      for (int x = 0; x < br::kThreads; x++)
        for (unsigned mm = tmask[size_t(x)]; mm; mm &= mm - 1) {
          const int j = __builtin_ctz(mm);
          if (eqb + br::rank_in_tile(j, V, tot, prefix_of[size_t(x)], tmask[size_t(x)]) < need) mask[size_t(x)] |= 1u << j;
        }
    }
    packed_scan(mask, tot);
    const uint64_t base = gt_scan[size_t(t)] + std::min(eqb, need);
    for (int x = 0; x < br::kThreads; x++)
      for (unsigned mm = mask[size_t(x)]; mm; mm &= mm - 1) {
        const int j = __builtin_ctz(mm);
        const uint64_t pos = base + br::rank_in_tile(j, V, tot, prefix_of[size_t(x)], mask[size_t(x)]);
        const int64_t idx = t * br::kTile + br::item_offset(V, x, j);
        if (pos >= uint64_t(k) || res.idx[size_t(pos)] != -1) {
          EXPECT(false, "write position %llu (k %lld) out of range or written twice", (unsigned long long)pos, (long long)k);
          return res;
        }
        res.idx[size_t(pos)] = idx;
      }
  }
  return res;
}

static uint32_t bits_of(Dt dt, float f) {
  if (dt == Dt::F32) return br::f2u(f);
  if (dt == Dt::BF16) return bf16(f).bits;
  return f16(f).bits;
}

static Tensor tensor_of(const Scores& s) {
  const DType dt = s.dt == Dt::F32 ? DType::F32 : (s.dt == Dt::BF16 ? DType::BF16 : DType::F16);
  Tensor t = empty({s.n()}, dt, Device{});
  for (int64_t i = 0; i < s.n(); i++) {
    if (s.dt == Dt::F32)
      t.data<uint32_t>()[i] = s.bits[size_t(i)];
    else
      t.data<uint16_t>()[i] = uint16_t(s.bits[size_t(i)]);
  }
  return t;
}

static int misses = 0, typical_misses = 0, cases = 0;

// One case: simulation against cpu::topk.
static void check(const std::string& name, const Scores& s, int64_t k, bool typical) {
  cases++;
  const SimResult r = simulate(s, k);
  Tensor t = tensor_of(s);
  Tensor out = empty({k}, DType::I64, Device{});
  bool ref_nonfinite = false;
  try {
    cpu::topk(t, k, out);
  } catch (const SiftException& e) {
    ref_nonfinite = e.code() == "E_NUMERIC";
    EXPECT(ref_nonfinite, "%s: cpu::topk threw %s", name.c_str(), e.code().c_str());
  }
  EXPECT(r.nonfinite == ref_nonfinite, "%s: NaN/Inf flag %d, cpu %d", name.c_str(), int(r.nonfinite), int(ref_nonfinite));
  if (ref_nonfinite || r.nonfinite) return;
  EXPECT(!r.lost, "%s: lost the k-th key", name.c_str());
  if (r.miss) {
    misses++;
    if (typical) typical_misses++;
    EXPECT(!typical, "%s (n %lld, k %lld): the bracket missed", name.c_str(), (long long)s.n(), (long long)k);
    return;
  }
  const int64_t* ref = out.data<int64_t>();
  int64_t first_diff = -1;
  for (int64_t i = 0; i < k && first_diff < 0; i++)
    if (r.idx[size_t(i)] != ref[i]) first_diff = i;
  EXPECT(first_diff < 0, "%s (n %lld, k %lld): index %lld is %lld, cpu %lld", name.c_str(), (long long)s.n(),
         (long long)k, (long long)first_diff, (long long)(first_diff >= 0 ? r.idx[size_t(first_diff)] : 0),
         (long long)(first_diff >= 0 ? ref[first_diff] : 0));
}

int main() {
  std::mt19937_64 g(17);
  std::normal_distribution<float> N(0.0f, 1.0f);
  const Dt dts[3] = {Dt::F32, Dt::BF16, Dt::F16};
  const char* dtn[3] = {"f32", "bf16", "f16"};
  const int64_t sizes[] = {1, 7, 4095, 4096, 4097, 70001, 262144, 300007};
  for (int d = 0; d < 3; d++) {
    const Dt dt = dts[d];
    for (int64_t n : sizes) {
      auto make = [&](auto gen) {
        Scores s{dt, std::vector<uint32_t>(size_t(n))};
        for (int64_t i = 0; i < n; i++) s.bits[size_t(i)] = bits_of(dt, gen(i));
        return s;
      };
      std::vector<int64_t> ks = {1, n, std::max<int64_t>(1, n / 100), std::max<int64_t>(1, n / 20), std::max<int64_t>(1, n / 2),
                                 std::max<int64_t>(1, n - 1), int64_t(1 + g() % uint64_t(n))};
      const std::string base = std::string(dtn[d]) + " n=" + std::to_string(n);
      // |gradient|-like scores: the typical case, at the SIFT rates the bracket must hold.
      const Scores absn = make([&](int64_t) { return std::fabs(N(g)) * 1e-3f; });
      for (int64_t k : ks) check(base + " |normal|", absn, k, n >= 4096 && k >= 64 && k <= n / 2);
      const Scores sn = make([&](int64_t) { return N(g); });
      for (int64_t k : ks) check(base + " signed normal", sn, k, false);
      const Scores eq = make([&](int64_t) { return 0.25f; });
      for (int64_t k : ks) check(base + " all equal", eq, k, false);
      const Scores zeros = make([&](int64_t i) { return (i % 3 == 0) ? -0.0f : (i % 7 == 0 ? 1.0f : 0.0f); });
      for (int64_t k : ks) check(base + " zeros and -0", zeros, k, false);
      const Scores few = make([&](int64_t) { return float(int(g() % 5)) * 0.5f; });
      for (int64_t k : ks) check(base + " five values (ties)", few, k, false);
      const Scores den = make([&](int64_t i) {
        // Denormals of the dtype (f32 1e-40, f16 1e-6, bf16 1e-40) mixed with zeros and normals.
        const float tiny = dt == Dt::F16 ? 1e-6f : 1e-40f;
        return (i % 4 == 0) ? tiny * float(g() % 7) : (i % 4 == 1 ? -tiny : std::fabs(N(g)) * 1e-3f);
      });
      for (int64_t k : ks) check(base + " denormals", den, k, false);
      const Scores asc = make([&](int64_t i) { return float(i % 1000) * 0.01f; });
      for (int64_t k : ks) check(base + " ramp", asc, k, false);
      if (n >= 4096) {
        for (float bad_v : {NAN, INFINITY, -INFINITY}) {
          Scores s2 = absn;
          s2.bits[size_t(g() % uint64_t(n))] = bits_of(dt, bad_v);
          check(base + " with NaN/Inf", s2, std::max<int64_t>(1, n / 100), false);
        }
      }
    }
  }
  // 8192 tiles (the sampled bracket at its full stride of 16) with |normal| scores at the SIFT rates.
  for (int d = 0; d < 3; d++) {
    const int64_t n = int64_t(4096) * 8192 / 32;  // 1M: 256 tiles; stride min(16, 256 / 32) = 8
    Scores s{dts[d], std::vector<uint32_t>(size_t(n))};
    for (int64_t i = 0; i < n; i++) s.bits[size_t(i)] = bits_of(dts[d], std::fabs(N(g)) * 1e-3f);
    for (int64_t k : {n / 100, n / 20}) check(std::string(dtn[d]) + " 1M |normal|", s, k, true);
  }
  printf("%d misses of the bracket (%d in typical cases) in %d cases\n", misses, typical_misses, cases);
  printf("%d of %d cases wrong\n", bad, total);
  return bad == 0 ? 0 : 1;
}
