// CPU radix select. Scores become unsigned keys whose order is the float order (sign bit flipped
// for positives, all bits inverted for negatives; -0 is folded onto +0 so the two tie). The k-th
// largest key is found digit by digit, high digit first:
//   pass 1: a histogram of the top 11 bits over every element (and the NaN/Inf check);
//   pass 2: per fixed chunk, count elements whose top digit is above the chosen one and keep the
//           ones equal to it ("candidates", usually a few percent) while histogramming digit 2;
//   later digits read only the candidates (a chunk with too many candidates, e.g. heavy ties,
//   gives up its list and is re-read from the input instead, so memory stays bounded);
//   then per chunk the counts above / equal to the exact threshold key give each chunk its share
//   of the output and of the ties (lowest index first, chunks in index order), and a last pass
//   writes indices ascending. Fixed chunks make the result independent of the thread count.
#include "select.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <utility>

#include "parallel.h"

namespace sift::cpu {
namespace {

constexpr int64_t kChunk = int64_t(1) << 16;
constexpr int kDigitBits = 11;

inline uint32_t key32(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) == 0) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

inline uint64_t key64(double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  if ((u & 0x7fffffffffffffffull) == 0) u = 0;
  return (u >> 63) ? ~u : (u | 0x8000000000000000ull);
}

// NaN and +-Inf have an all-ones exponent; after the key mapping they sit at both ends.
inline bool nonfinite(uint32_t key) { return key >= 0xff800000u || key <= 0x007fffffu; }
inline bool nonfinite(uint64_t key) { return key >= 0xfff0000000000000ull || key <= 0x000fffffffffffffull; }

template <typename K, typename T>
inline K key_of(T v) {
  if constexpr (sizeof(K) == 4)
    return key32(static_cast<float>(v));
  else
    return key64(static_cast<double>(static_cast<float>(v)));
}
template <>
inline uint64_t key_of<uint64_t, double>(double v) {
  return key64(v);
}

struct Seg {
  const void* ptr;
  int64_t numel;
  int64_t chunk_begin;
};

template <typename K>
class Selector {
 public:
  Selector(std::vector<Seg> segs, DType dtype, int64_t k) : segs_(std::move(segs)), dtype_(dtype), k_(k) {
    for (size_t s = 0; s < segs_.size(); s++) {
      segs_[s].chunk_begin = nchunks_;
      int64_t n = (segs_[s].numel + kChunk - 1) / kChunk;
      for (int64_t c = 0; c < n; c++) chunk_seg_.push_back(int32_t(s));
      nchunks_ += n;
    }
    for (int b = int(sizeof(K) * 8); b > 0; b -= kDigitBits) {
      int w = std::min(b, kDigitBits);
      widths_.push_back(w);
      shifts_.push_back(b - w);
    }
  }

  void plan() {
    chunks_.assign(size_t(nchunks_), Chunk{});
    uint64_t krem = uint64_t(k_);
    K prefix = 0;

    // Pass 1: top digit over everything, with the finiteness check.
    bool bad = false;
    std::mutex bad_mu;
    auto h = histogram(widths_[0], [&](int64_t c, uint64_t* hist) {
      bool local_bad = false;
      const int sh = shifts_[0];
      each_key(c, [&](int64_t, K key) {
        local_bad |= nonfinite(key);
        hist[key >> sh]++;
      });
      if (local_bad) {
        std::lock_guard<std::mutex> lk(bad_mu);
        bad = true;
      }
    });
    SIFT_CHECK(!bad, "E_NUMERIC", "topk: the scores contain NaN or Inf");
    prefix = choose(h, 0, prefix, krem);

    // Pass 2: split each chunk into above / candidates, histogram digit 2 of the candidates.
    {
      const int s0 = shifts_[0], s1 = shifts_[1];
      const K d0 = prefix >> s0;
      const K mask1 = (K(1) << widths_[1]) - 1;
      h = histogram(widths_[1], [&](int64_t c, uint64_t* hist) {
        Chunk& ch = chunks_[size_t(c)];
        const size_t cap = size_t(chunk_len(c) / 8 + 16);
        each_key(c, [&](int64_t i, K key) {
          K pre = key >> s0;
          if (pre > d0) {
            ch.gt++;
          } else if (pre == d0) {
            hist[(key >> s1) & mask1]++;
            if (!ch.overflow) {
              if (ch.cand.size() >= cap) {
                ch.overflow = true;
                std::vector<std::pair<K, uint32_t>>().swap(ch.cand);
              } else {
                ch.cand.emplace_back(key, uint32_t(i));
              }
            }
          }
        });
      });
      prefix = choose(h, 1, prefix, krem);
    }

    // Remaining digits: candidates, or the input of chunks that overflowed.
    for (size_t p = 2; p < widths_.size(); p++) {
      const int ms = shifts_[p - 1], sh = shifts_[p];
      const K want = prefix >> ms;
      const K mask = (K(1) << widths_[p]) - 1;
      h = histogram(widths_[p], [&](int64_t c, uint64_t* hist) {
        const Chunk& ch = chunks_[size_t(c)];
        auto visit = [&](K key) {
          if ((key >> ms) == want) hist[(key >> sh) & mask]++;
        };
        if (ch.overflow)
          each_key(c, [&](int64_t, K key) { visit(key); });
        else
          for (const auto& ck : ch.cand) visit(ck.first);
      });
      prefix = choose(h, p, prefix, krem);
    }
    thr_ = prefix;
    need_ties_ = krem;

    // Exact counts per chunk against the threshold key.
    const K thr = thr_;
    parallel_for(nchunks_, 1, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; c++) {
        Chunk& ch = chunks_[size_t(c)];
        int64_t gt = 0, eq = 0;
        if (ch.overflow) {
          each_key(c, [&](int64_t, K key) {
            gt += key > thr;
            eq += key == thr;
          });
          ch.gt = gt;
        } else {
          for (const auto& ck : ch.cand) {
            gt += ck.first > thr;
            eq += ck.first == thr;
          }
          ch.gt += gt;
        }
        ch.eq = eq;
        std::vector<std::pair<K, uint32_t>>().swap(ch.cand);
      }
    });

    // Ties go to the lowest indices: chunks in order.
    uint64_t left = need_ties_;
    seg_count_.assign(segs_.size(), 0);
    for (int64_t c = 0; c < nchunks_; c++) {
      Chunk& ch = chunks_[size_t(c)];
      ch.ties = int64_t(std::min<uint64_t>(left, uint64_t(ch.eq)));
      left -= uint64_t(ch.ties);
      int32_t s = chunk_seg_[size_t(c)];
      ch.out_off = seg_count_[size_t(s)];
      seg_count_[size_t(s)] += ch.gt + ch.ties;
    }
    SIFT_CHECK(left == 0, "E_INTERNAL", "topk: radix select lost ", left, " ties");
  }

  int64_t count(size_t s) const { return seg_count_[s]; }

  // outs[s]: contiguous i32/i64 tensors of count(s) elements.
  void write(const std::vector<Tensor>& outs) const {
    const K thr = thr_;
    parallel_for(nchunks_, 1, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; c++) {
        const Chunk& ch = chunks_[size_t(c)];
        if (ch.gt + ch.ties == 0) continue;
        const int32_t s = chunk_seg_[size_t(c)];
        const Tensor& out = outs[size_t(s)];
        const int64_t start = (c - segs_[size_t(s)].chunk_begin) * kChunk;
        dispatch_int(out.dtype, "topk", [&](auto it) {
          using I = typename decltype(it)::type;
          I* o = out.data<I>() + ch.out_off;
          int64_t ties = ch.ties;
          each_key(c, [&](int64_t i, K key) {
            if (key > thr) {
              *o++ = I(start + i);
            } else if (key == thr && ties > 0) {
              ties--;
              *o++ = I(start + i);
            }
          });
        });
      }
    });
  }

 private:
  struct Chunk {
    int64_t gt = 0, eq = 0, ties = 0, out_off = 0;
    bool overflow = false;
    std::vector<std::pair<K, uint32_t>> cand;
  };

  int64_t chunk_len(int64_t c) const {
    const Seg& s = segs_[size_t(chunk_seg_[size_t(c)])];
    int64_t start = (c - s.chunk_begin) * kChunk;
    return std::min(kChunk, s.numel - start);
  }

  // f(index within chunk, key) for every element of chunk c, in order.
  template <typename F>
  void each_key(int64_t c, F&& f) const {
    const Seg& s = segs_[size_t(chunk_seg_[size_t(c)])];
    const int64_t start = (c - s.chunk_begin) * kChunk;
    const int64_t n = std::min(kChunk, s.numel - start);
    dispatch_float(dtype_, "topk", [&](auto tt) {
      using T = typename decltype(tt)::type;
      const T* p = static_cast<const T*>(s.ptr) + start;
      for (int64_t i = 0; i < n; i++) f(i, key_of<K>(p[i]));
    });
  }

  // Per-thread histograms over chunks, summed (integer sums: order does not matter).
  template <typename F>
  std::vector<uint64_t> histogram(int width, F&& per_chunk) {
    std::vector<uint64_t> total(size_t(1) << width, 0);
    std::mutex mu;
    parallel_for(nchunks_, 1, [&](int64_t b, int64_t e) {
      std::vector<uint64_t> h(size_t(1) << width, 0);
      for (int64_t c = b; c < e; c++) per_chunk(c, h.data());
      std::lock_guard<std::mutex> lk(mu);
      for (size_t i = 0; i < h.size(); i++) total[i] += h[i];
    });
    return total;
  }

  // The digit of pass p that holds the krem-th largest key among those matching prefix.
  K choose(const std::vector<uint64_t>& h, size_t p, K prefix, uint64_t& krem) const {
    uint64_t above = 0;
    for (size_t d = h.size(); d-- > 0;) {
      if (above + h[d] >= krem) {
        krem -= above;
        return prefix | (K(d) << shifts_[p]);
      }
      above += h[d];
    }
    fail("E_INTERNAL", "topk: radix select found fewer than k elements");
  }

  std::vector<Seg> segs_;
  DType dtype_;
  int64_t k_;
  int64_t nchunks_ = 0;
  std::vector<int32_t> chunk_seg_;
  std::vector<int> widths_, shifts_;
  std::vector<Chunk> chunks_;
  std::vector<int64_t> seg_count_;
  K thr_ = 0;
  uint64_t need_ties_ = 0;
};

template <typename F>
auto with_key_type(DType dtype, F&& f) {
  if (dtype == DType::F64) return f(type_tag<uint64_t>{});
  return f(type_tag<uint32_t>{});
}

}  // namespace

void topk(const Tensor& scores, int64_t k, const Tensor& out) {
  with_key_type(scores.dtype, [&](auto kt) {
    using K = typename decltype(kt)::type;
    Selector<K> sel({Seg{scores.raw(), scores.numel(), 0}}, scores.dtype, k);
    sel.plan();
    SIFT_CHECK(sel.count(0) == k, "E_INTERNAL", "topk: selected ", sel.count(0), " of ", k);
    sel.write({out});
  });
}

std::vector<Tensor> topk_global(const std::vector<Tensor>& scores, int64_t k) {
  std::vector<Tensor> outs;
  with_key_type(scores[0].dtype, [&](auto kt) {
    using K = typename decltype(kt)::type;
    std::vector<Seg> segs;
    for (const Tensor& t : scores) segs.push_back(Seg{t.raw(), t.numel(), 0});
    Selector<K> sel(std::move(segs), scores[0].dtype, k);
    sel.plan();
    for (size_t s = 0; s < scores.size(); s++) {
      DType it = scores[s].numel() >= (int64_t(1) << 31) ? DType::I64 : DType::I32;
      outs.push_back(empty({sel.count(s)}, it, Device{}));
    }
    sel.write(outs);
  });
  return outs;
}

}  // namespace sift::cpu
