// Host-side check of the multi-tensor optimizer plan (native/cuda/optim_plan.h), no GPU needed:
// launches cover every tensor once, in order, within the tensor and chunk limits; a LLaMA-7B set of
// SIFT targets (32 layers x q, k, v, o, gate, up, down at 1% and 5%) is one launch; and the
// block-to-chunk lookup the kernels use maps every chunk of a launch to its tensor and first entry.
// Compiled and run by test/native/cuda-host.test.ts when nvcc is present.
#include <cstdio>
#include <random>
#include <vector>

#include "../../../native/cuda/optim_plan.h"

using namespace sift::cuda::optim_plan;

static int bad = 0, total = 0;
#define EXPECT(c)                                   \
  do {                                              \
    total++;                                        \
    if (!(c)) {                                     \
      bad++;                                        \
      printf("FAILED line %d: %s\n", __LINE__, #c); \
    }                                               \
  } while (0)

// The kernels' constants (optim.cu): 2048 entries a chunk, 384 descriptors a launch.
constexpr int64_t kChunk = 2048;
constexpr size_t kLarge = 384;
constexpr int64_t kMaxChunks = int64_t(INT32_MAX) - (1 << 20);

static void check_plan(const std::vector<int64_t>& ks, size_t max_tensors, int64_t max_chunks) {
  std::vector<int64_t> chunks;
  for (int64_t k : ks) chunks.push_back(chunks_of(k, kChunk));
  const std::vector<Launch> plan = plan_launches(chunks, max_tensors, max_chunks);
  EXPECT(!plan.empty() || ks.empty());
  size_t next = 0;
  for (const Launch& l : plan) {
    EXPECT(l.b == next && l.e > l.b && l.e - l.b <= max_tensors);
    int64_t sum = 0;
    std::vector<int> start(1, 0);
    for (size_t t = l.b; t < l.e; t++) {
      sum += chunks[t];
      start.push_back(int(start.back() + chunks[t]));
    }
    EXPECT(sum <= max_chunks);
    // Greedy: the next tensor would not have fitted.
    if (l.e < chunks.size()) EXPECT(l.e - l.b == max_tensors || sum + chunks[l.e] > max_chunks);
    // Every chunk of the launch: its owner and first entry, as the kernels compute them.
    const int n = int(l.e - l.b);
    if (sum < 2000000) {
      int64_t entries = 0;
      for (int c = 0; c < start.back(); c++) {
        const int t = chunk_owner(start.data(), n, c);
        const int64_t lo = int64_t(c - start[size_t(t)]) * kChunk;
        bool ok = t >= 0 && t < n && start[size_t(t)] <= c && c < start[size_t(t) + 1] && lo < ks[l.b + size_t(t)];
        EXPECT(ok);
        if (!ok) return;
        const int64_t hi = lo + kChunk < ks[l.b + size_t(t)] ? lo + kChunk : ks[l.b + size_t(t)];
        entries += hi - lo;
      }
      int64_t want = 0;
      for (size_t t = l.b; t < l.e; t++) want += ks[t];
      EXPECT(entries == want);
    }
    next = l.e;
  }
  EXPECT(next == ks.size());
}

int main() {
  // LLaMA-7B: 32 layers x (4 x 4096x4096, 2 x 11008x4096, 4096x11008).
  for (double rate : {0.01, 0.05}) {
    std::vector<int64_t> ks;
    for (int l = 0; l < 32; l++)
      for (int64_t numel : {4096LL * 4096, 4096LL * 4096, 4096LL * 4096, 4096LL * 4096, 11008LL * 4096,
                            11008LL * 4096, 4096LL * 11008})
        ks.push_back(int64_t(double(numel) * rate));
    std::vector<int64_t> chunks;
    for (int64_t k : ks) chunks.push_back(chunks_of(k, kChunk));
    EXPECT(plan_launches(chunks, kLarge, kMaxChunks).size() == 1);
    check_plan(ks, kLarge, kMaxChunks);
  }
  std::mt19937_64 g(5);
  for (int trial = 0; trial < 200; trial++) {
    const size_t n = 1 + g() % 900;
    std::vector<int64_t> ks;
    for (size_t t = 0; t < n; t++) ks.push_back(1 + int64_t(g() % (trial % 3 == 0 ? 5000 : 300000)));
    check_plan(ks, trial % 2 ? kLarge : 16, trial % 5 == 0 ? 200 : kMaxChunks);
  }
  // A tensor larger than a launch: no plan (the launcher reports E_SHAPE).
  EXPECT(plan_launches({1, 500, 1}, kLarge, 100).empty());
  EXPECT(plan_launches({}, kLarge, 100).empty());
  printf("%d of %d cases wrong\n", bad, total);
  return bad == 0 ? 0 : 1;
}
