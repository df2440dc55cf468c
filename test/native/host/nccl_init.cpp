// Host check of NCCL communicator creation (native/dist/nccl.cpp) and of the shared run-time loader
// (native/core/dl_loader.cpp), without NCCL or a GPU: fake NCCL entry points play a peer that
// joins after a few polls, one that never joins, a failing initialisation and an NCCL too old for
// the config API; threads that poll, queue calls and abort one shared communicator at once.
// Prints "K of N cases wrong" (K = 0 when all pass).
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../../../native/core/dl_loader.h"
#include "../../../native/core/error.h"
#include "../../../native/dist/nccl.h"

using namespace sift;
using namespace sift::dist;

namespace {

int cases = 0, wrong = 0;
void expect(bool ok, const std::string& what) {
  cases++;
  if (!ok) {
    wrong++;
    std::printf("WRONG: %s\n", what.c_str());
  }
}

// The fake library's state, reset per scenario.
struct Fake {
  int version = 22105;
  int polls_until_ready = 3;  // ncclCommGetAsyncError answers ncclInProgress this many times; -1: forever
  int final_state = nccl::kSuccess;
  int init_config_rc = nccl::kInProgress;
  int polls = 0, aborts = 0, blocking_inits = 0, config_inits = 0;
  nccl::Comm aborted = nullptr;
  nccl::Config seen{};
} fake;
int comm_object;  // the fake communicator's address

int get_version(int* v) {
  *v = fake.version;
  return 0;
}
int init_rank(nccl::Comm* c, int, nccl::UniqueId, int) {
  fake.blocking_inits++;
  *c = &comm_object;
  return 0;
}
int init_rank_config(nccl::Comm* c, int, nccl::UniqueId, int, nccl::Config* cfg) {
  fake.config_inits++;
  std::memcpy(&fake.seen, cfg, sizeof fake.seen);
  *c = fake.init_config_rc == nccl::kInProgress || fake.init_config_rc == nccl::kSuccess ? &comm_object : nullptr;
  return fake.init_config_rc;
}
int get_async_error(nccl::Comm, int* state) {
  fake.polls++;
  const bool ready = fake.polls_until_ready >= 0 && fake.polls > fake.polls_until_ready;
  *state = ready ? fake.final_state : nccl::kInProgress;
  return 0;
}
int comm_abort(nccl::Comm c) {
  fake.aborts++;
  fake.aborted = c;
  return 0;
}
const char* error_string(int rc) {
  return rc == 6 ? "remote process exited or there was a network error" : "some error";
}

nccl::Api api(bool with_config) {
  nccl::Api a;
  a.get_version = get_version;
  a.comm_init_rank = init_rank;
  a.comm_init_rank_config = with_config ? init_rank_config : nullptr;
  a.comm_get_async_error = get_async_error;
  a.comm_abort = comm_abort;
  a.error_string = error_string;
  a.path = "/fake/libnccl.so.2";
  get_version(&a.version);
  return a;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A second fake for SharedComm, driven by several threads: it counts calls that overlap another
// call (NCCL forbids them on one communicator) and calls made after the abort or the destruction.
struct Shared {
  std::atomic<int> inside{0}, overlaps{0}, after_close{0}, calls{0}, aborts{0}, destroys{0};
  std::atomic<bool> closed{false};
  std::atomic<int> ready_every{3};  // every n-th poll answers ncclSuccess; 0: never
} shared;
void enter() {
  if (shared.closed) shared.after_close++;
  if (shared.inside.fetch_add(1) != 0) shared.overlaps++;
  shared.calls++;
  std::this_thread::sleep_for(std::chrono::microseconds(20));
}
void leave() { shared.inside--; }
int shared_poll(nccl::Comm, int* state) {
  enter();
  const int every = shared.ready_every;
  *state = every > 0 && shared.calls % every == 0 ? nccl::kSuccess : nccl::kInProgress;
  leave();
  return 0;
}
int shared_abort(nccl::Comm) {
  enter();
  shared.aborts++;
  shared.closed = true;
  leave();
  return 0;
}
int shared_destroy(nccl::Comm) {
  enter();
  shared.destroys++;
  shared.closed = true;
  leave();
  return 0;
}
int shared_collective(nccl::Comm) {
  enter();
  leave();
  return nccl::kInProgress;
}
void reset_shared(int ready_every) {
  shared.inside = shared.overlaps = shared.after_close = shared.calls = shared.aborts = shared.destroys = 0;
  shared.closed = false;
  shared.ready_every = ready_every;
}

// Runs create_comm and returns the E_DIST message ("" when it succeeded).
std::string create(const nccl::Api& a, int nranks, int rank, int timeout_ms, nccl::Created* out, double* seconds) {
  nccl::UniqueId id{};
  const auto t0 = std::chrono::steady_clock::now();
  std::string err;
  try {
    *out = nccl::create_comm(a, nranks, id, rank, std::chrono::milliseconds(timeout_ms));
  } catch (const SiftException& e) {
    err = e.code() + ": " + e.what();
  }
  *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return err;
}

}  // namespace

// argv[1], when given: a library whose dependency was removed (built by test/dist/nccl-init.test.ts).
int main(int argc, char** argv) {
  nccl::Created c;
  double s = 0;

  // The config struct is ncclConfig_v21400, stamped as NCCL_CONFIG_INITIALIZER does.
  expect(sizeof(nccl::Config) == 24, "ncclConfig_v21400 is 24 bytes");
  expect(nccl::version_code(2, 14, 0) == 21400 && nccl::version_code(2, 8, 4) == 2804, "NCCL_VERSION()");
  expect(nccl::version_string(22105) == "2.21.5" && nccl::version_string(2708) == "2.7.8" &&
             nccl::version_string(21400) == "2.14.0",
         "version strings: " + nccl::version_string(22105) + " " + nccl::version_string(2708));

  // 1. A peer that joins: the non-blocking initialisation is polled until ready.
  fake = Fake();
  std::string err = create(api(true), 2, 1, 5000, &c, &s);
  expect(err.empty(), "joins: no error (" + err + ")");
  expect(c.comm == &comm_object && c.nonblocking, "joins: the communicator, non-blocking");
  expect(fake.config_inits == 1 && fake.blocking_inits == 0, "joins: ncclCommInitRankConfig, not ncclCommInitRank");
  expect(fake.seen.size == 24 && fake.seen.magic == 0xcafebeefu && fake.seen.version == 21400u &&
             fake.seen.blocking == 0 && fake.seen.tail_padding == 0,
         "joins: config {24, 0xcafebeef, 21400, blocking 0}");
  expect(fake.polls == 4 && fake.aborts == 0, "joins: polled until ready (" + std::to_string(fake.polls) + " polls)");
  expect(contains(c.how, "NCCL 2.21.5 (/fake/libnccl.so.2): non-blocking initialisation"), "joins: how = " + c.how);

  // 2. A peer that never joins: aborted after the timeout, E_DIST naming rank, world and timeout.
  fake = Fake();
  fake.polls_until_ready = -1;
  err = create(api(true), 4, 3, 300, &c, &s);
  expect(contains(err, "E_DIST: NCCL initialisation did not finish within 0.3 s on rank 3 of 4"),
         "never joins: " + err);
  expect(s >= 0.3 && s < 3.0, "never joins: gave up after the timeout (" + std::to_string(s) + " s)");
  expect(fake.aborts == 1 && fake.aborted == &comm_object, "never joins: ncclCommAbort on the communicator");

  // 3. The background initialisation fails (a peer died): aborted, E_DIST with NCCL's reason.
  fake = Fake();
  fake.polls_until_ready = 1;
  fake.final_state = 6;
  err = create(api(true), 2, 0, 5000, &c, &s);
  expect(contains(err, "E_DIST: NCCL initialisation failed on rank 0 of 2: remote process exited"), "fails: " + err);
  expect(fake.aborts == 1 && s < 3.0, "fails: aborted at once");

  // 4. ncclCommInitRankConfig itself refuses (no communicator to abort).
  fake = Fake();
  fake.init_config_rc = 4;
  err = create(api(true), 2, 1, 5000, &c, &s);
  expect(contains(err, "E_DIST: NCCL initialisation failed on rank 1 of 2"), "refused: " + err);
  expect(fake.aborts == 0 && fake.polls == 0, "refused: nothing polled or aborted");

  // 5. NCCL older than 2.14 (the symbol may exist in a patched build; the version decides), and an
  // NCCL without ncclCommInitRankConfig: the blocking ncclCommInitRank, with a note.
  for (int variant = 0; variant < 2; variant++) {
    fake = Fake();
    fake.version = variant == 0 ? 21303 : 22105;
    err = create(api(variant == 0), 2, 1, 5000, &c, &s);
    const std::string tag = variant == 0 ? "NCCL 2.13: " : "no config API: ";
    expect(err.empty() && c.comm == &comm_object && !c.nonblocking, tag + "blocking communicator (" + err + ")");
    expect(fake.blocking_inits == 1 && fake.config_inits == 0 && fake.polls == 0, tag + "ncclCommInitRank only");
    expect(contains(c.how, "blocking initialisation, without a timeout (ncclCommInitRankConfig needs NCCL 2.14.0"),
           tag + c.how);
  }

  // 6. settle: what a call on a non-blocking communicator returns once its work is queued.
  const nccl::Api a = api(true);
  const auto later = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  fake = Fake();
  expect(nccl::settle(a, &comm_object, nccl::kSuccess, later) == nccl::kSuccess && fake.polls == 0,
         "settle: success passes through unpolled");
  expect(nccl::settle(a, &comm_object, 5, later) == 5 && fake.polls == 0, "settle: an error passes through");
  fake.polls_until_ready = 2;
  expect(nccl::settle(a, &comm_object, nccl::kInProgress, later) == nccl::kSuccess && fake.polls == 3,
         "settle: in progress, then success");
  fake = Fake();
  fake.polls_until_ready = -1;
  const auto soon = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
  expect(nccl::settle(a, &comm_object, nccl::kInProgress, soon) == nccl::kInProgress,
         "settle: still in progress at the deadline");

  // 7. One communicator, three threads: the caller queues non-blocking collectives and waits for
  // each (settle), a watchdog polls the asynchronous error and aborts, a third thread aborts too.
  // No two NCCL calls overlap, none follows the abort, the abort happens once, no destroy after it.
  nccl::Api sa = api(true);
  sa.comm_get_async_error = shared_poll;
  sa.comm_abort = shared_abort;
  sa.comm_destroy = shared_destroy;
  for (int round = 0; round < 20; round++) {
    reset_shared(3);
    nccl::SharedComm sc(sa, &comm_object);
    std::atomic<int> queued{0}, closed_seen{0};
    std::thread caller([&] {
      for (;;) {
        const int rc = sc.settle(sc.call([](nccl::Comm c) { return shared_collective(c); }),
                                 std::chrono::steady_clock::now() + std::chrono::seconds(5));
        if (rc == nccl::kClosed) {
          closed_seen++;
          return;
        }
        queued++;
      }
    });
    std::atomic<int> aborted_by{0};
    std::thread watchdog([&] {
      for (int i = 0; i < 30 + round; i++) {
        int state = 0;
        sc.async_error(&state);
      }
      if (sc.abort()) aborted_by++;
      int state = 0;
      if (sc.async_error(&state) == nccl::kClosed) closed_seen++;
    });
    std::thread other([&] {
      std::this_thread::sleep_for(std::chrono::microseconds(500 + 100 * round));
      if (sc.abort()) aborted_by++;
    });
    caller.join();
    watchdog.join();
    other.join();
    const bool destroyed = sc.destroy();
    const std::string tag = "shared comm (round " + std::to_string(round) + "): ";
    expect(shared.overlaps == 0, tag + std::to_string(shared.overlaps.load()) + " overlapping NCCL calls");
    expect(shared.after_close == 0, tag + std::to_string(shared.after_close.load()) + " calls after the abort");
    expect(shared.aborts == 1 && aborted_by == 1, tag + "aborted " + std::to_string(shared.aborts.load()) + " times");
    expect(!destroyed && shared.destroys == 0, tag + "destroyed after the abort");
    expect(closed_seen == 2, tag + "kClosed once closed (" + std::to_string(closed_seen.load()) + ")");
  }
  // A wait on a call that never finishes ends at once when another thread aborts, not at its deadline.
  {
    reset_shared(0);
    nccl::SharedComm sc(sa, &comm_object);
    const auto t0 = std::chrono::steady_clock::now();
    std::thread aborter([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      sc.abort();
    });
    const int rc = sc.settle(nccl::kInProgress, t0 + std::chrono::seconds(20));
    aborter.join();
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    expect(rc == nccl::kClosed && waited < 5.0,
           "settle ends with kClosed on an abort (" + std::to_string(waited) + " s)");
    expect(shared.overlaps == 0 && shared.after_close == 0 && shared.aborts == 1, "settle/abort: serialised");
  }
  // Destroyed, then aborted: ncclCommDestroy once, no abort after it.
  {
    reset_shared(1);
    nccl::SharedComm sc(sa, &comm_object);
    const bool destroyed = sc.destroy();
    const bool aborted = sc.abort();
    int state = 0;
    expect(destroyed && !aborted && shared.destroys == 1 && shared.aborts == 0 && shared.after_close == 0 &&
               sc.async_error(&state) == nccl::kClosed && sc.call([](nccl::Comm) { return 0; }) == nccl::kClosed,
           "destroy, then abort: one destroy, nothing after it");
  }

  // 8. The shared loader: absent places are counted, a library without a required symbol is
  // rejected with the symbol named (its slots cleared), the first complete one is kept.
  double (*cosine)(double) = nullptr;
  double (*missing)(double) = nullptr;
  double (*optional)(double) = nullptr;
  dl::Loaded l = dl::open_first({"/no/such/dir/libm.so.6", "libm.so.6"},
                                {dl::need("cos", cosine), dl::need("sift_no_such_symbol", missing)});
  expect(!l.handle && !cosine && !missing, "loader: incomplete library rejected, slots cleared");
  expect(l.absent == 1 && l.rejected.size() == 1 && contains(l.rejected[0], "libm.so.6: has no sift_no_such_symbol"),
         "loader: rejected = " + l.tried());
  expect(contains(l.tried(), "2 places tried: libm.so.6: has no sift_no_such_symbol"), "loader: " + l.tried());
  l = dl::open_first({"libsift_absent.so.1", "libm.so.6"},
                     {dl::need("cos", cosine), dl::want("sift_no_such_symbol", optional)});
  expect(l.handle && cosine && !optional && std::fabs(cosine(0.0) - 1.0) < 1e-12, "loader: libm loaded, cos bound");
  expect(l.absent == 1 && contains(l.path, "/libm") && l.path[0] == '/', "loader: resolved path " + l.path);
  l = dl::open_first({"libsift_absent.so.1"}, {dl::need("cos", cosine)});
  expect(!l.handle && l.tried() == "1 place tried, none present", "loader: nothing present: " + l.tried());
  dl::Places places;
  places.names = {"a.so", "b.so"};
  places.dirs = {"/x", "/y"};
  const auto list = dl::candidates(places);
  expect(list.size() == 6 && list[0] == "a.so" && list[1] == "b.so" && list[2] == "/x/a.so" && list[5] == "/y/b.so",
         "loader: candidates in order");

  // A present library that cannot load (its dependency is missing) is a rejection naming the
  // dependency, not an absent candidate.
  if (argc > 1) {
    void (*top)() = nullptr;
    l = dl::open_first({argv[1]}, {dl::need("sift_top", top)});
    expect(!l.handle && l.absent == 0 && l.rejected.size() == 1 &&
               contains(l.rejected[0], "libsift_dep_gone.so: cannot open shared object file"),
           "loader: missing dependency named: " + l.tried());
  }

  std::printf("%d of %d cases wrong\n", wrong, cases);
  return wrong == 0 ? 0 : 1;
}
