#include "executor.h"

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
        if (queue.empty()) cv_idle.notify_all();
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
    impl_->cv_room.wait(lk, [&] { return impl_->queue.size() < impl_->max_pending; });
    impl_->queue.push_back(std::move(fn));
  }
  impl_->cv_work.notify_one();
}

void CpuExecutor::sync() {
  if (on_executor_thread) return;  // queued work is running in order: nothing earlier is pending
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lk(impl_->mu);
    impl_->cv_idle.wait(lk, [&] { return impl_->queue.empty() && !impl_->busy; });
    err = impl_->error;
    impl_->error = nullptr;
  }
  if (err) std::rethrow_exception(err);
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
