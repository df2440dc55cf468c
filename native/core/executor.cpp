#include "executor.h"

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "error.h"

namespace sift {

struct CpuExecutor::Impl {
  std::mutex mu;
  std::condition_variable cv_work, cv_idle;
  std::deque<std::function<void()>> queue;
  bool busy = false;
  bool stop = false;
  bool inline_mode = false;
  std::exception_ptr error;
  std::thread worker;

  void run() {
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
  if (!impl_->inline_mode) impl_->worker = std::thread([this] { impl_->run(); });
}

CpuExecutor& CpuExecutor::get() {
  // Leaked on purpose: the worker must outlive every Tensor destructor at process exit.
  static CpuExecutor* ex = new CpuExecutor();
  return *ex;
}

bool CpuExecutor::inline_mode() const { return impl_->inline_mode; }

void CpuExecutor::enqueue(std::function<void()> fn) {
  if (impl_->inline_mode) {
    fn();
    return;
  }
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->queue.push_back(std::move(fn));
  }
  impl_->cv_work.notify_one();
}

void CpuExecutor::sync() {
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
