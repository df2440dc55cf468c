#include "executor.h"

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "error.h"

namespace sift {
namespace {
// Work queued from the executor thread itself runs inline: waiting for room there would deadlock.
thread_local bool on_executor_thread = false;
}  // namespace

struct CpuExecutor::Impl {
  std::mutex mu;
  std::condition_variable cv_work, cv_idle, cv_room;
  // Back-pressure: JavaScript may run at most this many ops ahead of the executor, so a loop that
  // never reads a result cannot queue step after step (each holding its activations).
  size_t max_pending = 4096;
  std::deque<std::function<void()>> queue;
  bool busy = false;
  bool stop = false;
  bool inline_mode = false;
  std::exception_ptr error;
  std::thread worker;
  // Ops queued and ops run since start: fence() is `queued`, wait_for(f) waits for `done >= f`.
  uint64_t queued = 0, done = 0;
  size_t fence_waiters = 0;
  std::thread::id main_thread;
  WaitStats main_waits;

  bool on_main_thread() const { return main_thread == std::this_thread::get_id(); }
  // Records a wait of the JavaScript thread that lasted since `t0` (mu held).
  void count_main_wait(std::chrono::steady_clock::time_point t0) {
    uint64_t ns =
        uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
    main_waits.count++;
    main_waits.total_ns += ns;
    if (ns > main_waits.max_ns) main_waits.max_ns = ns;
  }

  void run() {
    on_executor_thread = true;
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv_work.wait(lk, [&] { return stop || !queue.empty(); });
        if (queue.empty()) return;  // stop requested and drained
        fn = std::move(queue.front());
        queue.pop_front();
        busy = true;
      }
      cv_room.notify_one();
      try {
        fn();
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu);
        if (!error) error = std::current_exception();
      }
      fn = nullptr;  // drop captured tensors (may free memory) before reporting idle
      {
        std::lock_guard<std::mutex> lk(mu);
        busy = false;
        done++;
        if (queue.empty() || fence_waiters > 0) cv_idle.notify_all();
      }
    }
  }
};

CpuExecutor::CpuExecutor() : impl_(new Impl) {
  const char* s = std::getenv("SIFT_FT_CPU_SYNC");
  impl_->inline_mode = s && s[0] == '1';
  if (const char* q = std::getenv("SIFT_FT_CPU_QUEUE")) {
    long v = std::atol(q);
    if (v >= 1) impl_->max_pending = size_t(v);
  }
  if (!impl_->inline_mode) impl_->worker = std::thread([this] { impl_->run(); });
}

CpuExecutor& CpuExecutor::get() {
  // Leaked on purpose: the worker must outlive every Tensor destructor at process exit.
  static CpuExecutor* ex = new CpuExecutor();
  return *ex;
}

bool CpuExecutor::inline_mode() const { return impl_->inline_mode; }

void CpuExecutor::enqueue(std::function<void()> fn) {
  if (impl_->inline_mode || on_executor_thread) {
    fn();
    return;
  }
  {
    std::unique_lock<std::mutex> lk(impl_->mu);
    auto room = [&] { return impl_->queue.size() < impl_->max_pending; };
    if (!room()) {
      const bool main = impl_->on_main_thread();
      const auto t0 = std::chrono::steady_clock::now();
      impl_->cv_room.wait(lk, room);
      if (main) impl_->count_main_wait(t0);
    }
    impl_->queue.push_back(std::move(fn));
    impl_->queued++;
  }
  impl_->cv_work.notify_one();
}

void CpuExecutor::sync() {
  if (on_executor_thread) return;  // queued work is running in order: nothing earlier is pending
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lk(impl_->mu);
    auto idle = [&] { return impl_->queue.empty() && !impl_->busy; };
    if (!idle()) {
      const bool main = impl_->on_main_thread();
      const auto t0 = std::chrono::steady_clock::now();
      impl_->cv_idle.wait(lk, idle);
      if (main) impl_->count_main_wait(t0);
    }
    err = impl_->error;
    impl_->error = nullptr;
  }
  if (err) std::rethrow_exception(err);
}

uint64_t CpuExecutor::fence() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->queued;
}

void CpuExecutor::wait_for(uint64_t fence) {
  if (on_executor_thread) return;
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lk(impl_->mu);
    impl_->fence_waiters++;
    impl_->cv_idle.wait(lk, [&] { return impl_->done >= fence || (impl_->queue.empty() && !impl_->busy); });
    impl_->fence_waiters--;
    err = impl_->error;
    impl_->error = nullptr;
  }
  if (err) std::rethrow_exception(err);
}

size_t CpuExecutor::max_pending() const { return impl_->max_pending; }

CpuExecutor::WaitStats CpuExecutor::main_thread_waits() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->main_waits;
}

void CpuExecutor::reset_main_thread_waits() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->main_waits = WaitStats();
}

void CpuExecutor::set_main_thread() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->main_thread = std::this_thread::get_id();
}

size_t CpuExecutor::pending() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->queue.size() + (impl_->busy ? 1 : 0);
}

void CpuExecutor::shutdown() {
  if (impl_->inline_mode) return;
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    if (impl_->stop) return;
    impl_->stop = true;
  }
  impl_->cv_work.notify_all();
  if (impl_->worker.joinable()) impl_->worker.join();
}

}  // namespace sift
