// Embedding on the CPU. The forward copies rows as raw bytes (any dtype). The backward groups
// positions by id with a counting sort (positions stay in increasing order within an id) and
// then sums each output row on its own, so no two threads write the same row and the summation
// order is fixed: the result is deterministic.
#include "embedding.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <vector>

#include "numeric.h"
#include "parallel.h"

namespace sift::cpu {
namespace {

std::vector<int64_t> ids_to_i64(const Tensor& ids, int64_t n) {
  std::vector<int64_t> out(static_cast<size_t>(n));
  dispatch_int(ids.dtype, "embedding", [&](auto tag) {
    using I = typename decltype(tag)::type;
    const I* p = ids.data<I>();
    for (int64_t i = 0; i < n; i++) out[i] = int64_t(p[i]);
  });
  return out;
}

[[noreturn]] void bad_id(const char* op, int64_t id, int64_t v) {
  fail("E_INDEX", op, ": index ", id, " is out of range for ", v, " rows");
}

}  // namespace

bool find_bad_index(const Tensor& ids, int64_t n, int64_t num_rows, int64_t* bad, int64_t ignore) {
  return dispatch_int(ids.dtype, "index check", [&](auto tag) -> bool {
    using I = typename decltype(tag)::type;
    const I* p = ids.data<I>();
    for (int64_t i = 0; i < n; i++) {
      int64_t id = int64_t(p[i]);
      if (id != ignore && (id < 0 || id >= num_rows)) {
        *bad = id;
        return true;
      }
    }
    return false;
  });
}

void embedding(const Tensor& weight, const Tensor& ids, const Tensor& out, int64_t n, int64_t v, int64_t d) {
  if (n == 0 || d == 0) {
    int64_t bad;
    if (find_bad_index(ids, n, v, &bad)) bad_id("embedding", bad, v);
    return;
  }
  const size_t row_bytes = size_t(d) * weight.itemsize();
  const char* w = static_cast<const char*>(weight.raw());
  char* o = static_cast<char*>(out.raw());
  std::atomic<bool> any_bad{false};
  std::atomic<int64_t> bad{0};
  dispatch_int(ids.dtype, "embedding", [&](auto tag) {
    using I = typename decltype(tag)::type;
    const I* p = ids.data<I>();
    parallel_for(n, std::max<int64_t>(1, 65536 / int64_t(row_bytes)), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) {
        int64_t id = int64_t(p[i]);
        if (id < 0 || id >= v) {
          bad.store(id);
          any_bad.store(true);
          std::memset(o + i * row_bytes, 0, row_bytes);
          continue;
        }
        std::memcpy(o + i * row_bytes, w + id * row_bytes, row_bytes);
      }
    });
  });
  if (any_bad.load()) bad_id("embedding", bad.load(), v);
}

void embedding_backward(const Tensor& gy, const Tensor& ids, const Tensor& gw, int64_t n, int64_t v, int64_t d) {
  std::vector<int64_t> id = ids_to_i64(ids, n);
  // Counting sort of positions by id: start[r]..start[r+1] index pos[] for row r.
  std::vector<int64_t> start(size_t(v) + 1, 0);
  bool any_bad = false;
  int64_t bad = 0;
  for (int64_t i = 0; i < n; i++) {
    if (id[i] < 0 || id[i] >= v) {
      any_bad = true;
      bad = id[i];
      continue;
    }
    start[size_t(id[i]) + 1]++;
  }
  for (int64_t r = 0; r < v; r++) start[r + 1] += start[r];
  std::vector<int64_t> pos(static_cast<size_t>(start[v]));
  {
    std::vector<int64_t> cursor(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < n; i++)
      if (id[i] >= 0 && id[i] < v) pos[size_t(cursor[id[i]]++)] = i;
  }
  dispatch_float(gy.dtype, "embeddingBackward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* g = gy.data<T>();
    T* out = gw.data<T>();
    parallel_for(v, std::max<int64_t>(1, 16384 / std::max<int64_t>(d, 1)), [&](int64_t b, int64_t e) {
      std::vector<A> acc(static_cast<size_t>(d));
      for (int64_t r = b; r < e; r++) {
        T* o = out + r * d;
        int64_t s = start[r], t = start[r + 1];
        if (s == t) {
          std::memset(static_cast<void*>(o), 0, size_t(d) * sizeof(T));  // all-zero bits is 0 in every float type
          continue;
        }
        std::fill(acc.begin(), acc.end(), A(0));
        for (int64_t k = s; k < t; k++) {
          const T* gr = g + pos[k] * d;
          for (int64_t j = 0; j < d; j++) acc[j] += ld<A>(gr[j]);
        }
        for (int64_t j = 0; j < d; j++) o[j] = st<T>(acc[j]);
      }
    });
  });
  if (any_bad) bad_id("embeddingBackward", bad, v);
}

}  // namespace sift::cpu
