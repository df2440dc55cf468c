#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace sift::cpu {
namespace {

thread_local bool in_parallel = false;

class Pool {
 public:
  explicit Pool(int n) : nthreads_(n) { grow(n); }
  int size() const { return nthreads_.load(); }

  // Later regions use n threads; workers are started as needed and idle ones stay parked.
  void resize(int n) {
    std::lock_guard<std::mutex> job_lock(job_mu_);
    grow(n);
    nthreads_ = n;
  }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    std::lock_guard<std::mutex> job_lock(job_mu_);  // one parallel region at a time
    int64_t chunks = std::min<int64_t>(nthreads_.load(), (n + grain - 1) / grain);
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = &fn;
      n_ = n;
      chunks_ = chunks;
      next_ = 1;
      remaining_ = chunks - 1;
      error_ = nullptr;
      generation_++;
    }
    cv_.notify_all();
    in_parallel = true;
    try {
      do_chunk(0);
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu_);
      if (!error_) error_ = std::current_exception();
    }
    // Help with chunks not yet taken, then wait for the rest.
    const uint64_t gen = generation_;
    for (;;) {
      int64_t c = claim(gen);
      if (c < 0) break;
      try {
        do_chunk(c);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!error_) error_ = std::current_exception();
      }
      std::lock_guard<std::mutex> lk(mu_);
      remaining_--;
    }
    in_parallel = false;
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return remaining_ == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // Takes the next chunk of job `gen`, or -1 when that job has none left (or is over).
  int64_t claim(uint64_t gen) {
    std::lock_guard<std::mutex> lk(mu_);
    if (gen != generation_ || next_ >= chunks_) return -1;
    return next_++;
  }

  void do_chunk(int64_t c) {
    int64_t per = (n_ + chunks_ - 1) / chunks_;
    int64_t b = c * per, e = std::min(n_, b + per);
    if (b < e) (*fn_)(b, e);
  }

  // Starts workers 1..n-1 that do not exist yet (job_mu_ held or in the constructor).
  void grow(int n) {
    for (int i = int(workers_.size()) + 1; i < n; i++) workers_.emplace_back([this, i] { loop(i); });
  }

  void loop(int index) {
    uint64_t seen = 0;
    in_parallel = true;
    for (;;) {
      bool active;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_ != seen; });
        seen = generation_;
        active = index < chunks_;  // a region of fewer chunks than workers leaves the rest parked
      }
      while (active) {
        int64_t c = claim(seen);
        if (c < 0) break;
        try {
          do_chunk(c);
        } catch (...) {
          std::lock_guard<std::mutex> lk(mu_);
          if (!error_) error_ = std::current_exception();
        }
        std::lock_guard<std::mutex> lk(mu_);
        if (--remaining_ == 0) done_cv_.notify_all();
      }
    }
  }

  std::atomic<int> nthreads_;
  std::vector<std::thread> workers_;
  std::mutex job_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, chunks_ = 0, remaining_ = 0;
  int64_t next_ = 0;
  uint64_t generation_ = 0;
  std::exception_ptr error_;
};

constexpr int kMaxThreads = 256;

int clamp_threads(int n) { return n < 1 ? 1 : n > kMaxThreads ? kMaxThreads : n; }

Pool& pool() {
  static Pool* p = new Pool(default_num_threads());
  return *p;  // leaked: workers live until process exit
}

}  // namespace

int hardware_threads() { return clamp_threads(int(std::thread::hardware_concurrency())); }

int env_num_threads() {
  // Read at each call, so that SIFT_FT_NUM_THREADS set before the first kernel (or before
  // set_num_threads(0)) applies.
  const char* s = std::getenv("SIFT_FT_NUM_THREADS");
  return s && std::atoi(s) >= 1 ? clamp_threads(std::atoi(s)) : 0;
}

int default_num_threads() {
  int n = env_num_threads();
  return n > 0 ? n : hardware_threads();
}

int num_threads() { return pool().size(); }

void set_num_threads(int n) { pool().resize(clamp_threads(n <= 0 ? default_num_threads() : n)); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (in_parallel || n <= grain || pool().size() == 1) {
    fn(0, n);
    return;
  }
  pool().run(n, grain, fn);
}

}  // namespace sift::cpu
