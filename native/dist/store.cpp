#include "store.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "../core/error.h"

namespace sift::dist {

namespace {

// Protocol, one request and one reply at a time per connection:
//   'S' u32 klen key u32 vlen value -> u8 1
//   'G' u32 klen key                -> u8 found [u32 vlen value]
bool write_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n) {
    ssize_t w = ::send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= size_t(w);
  }
  return true;
}

bool read_all(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n) {
    ssize_t r = ::recv(fd, c, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) errno = ECONNRESET;  // the peer closed: not a timeout
    if (r <= 0) return false;
    c += r;
    n -= size_t(r);
  }
  return true;
}

bool write_blob(int fd, const char* p, uint32_t n) { return write_all(fd, &n, 4) && (n == 0 || write_all(fd, p, n)); }

bool read_blob(int fd, std::vector<char>* out) {
  uint32_t n = 0;
  if (!read_all(fd, &n, 4)) return false;
  if (n > (64u << 20)) {  // a rendezvous value is small: anything else is not our peer
    errno = EPROTO;       // not a timeout (errno may still hold an earlier EAGAIN)
    return false;
  }
  out->resize(n);
  return n == 0 || read_all(fd, out->data(), n);
}

// After a failed exchange with rank 0: a timeout (SO_RCVTIMEO / SO_SNDTIMEO) or a lost connection.
[[noreturn]] void exchange_failed(const std::string& where, std::chrono::milliseconds timeout) {
  const int e = errno;
  if (e == EAGAIN || e == EWOULDBLOCK)
    fail("E_DIST", "rendezvous: rank 0 at ", where, " did not answer within ", timeout.count() / 1000.0,
         " s (it stopped answering or is overloaded)");
  fail("E_DIST", "rendezvous: lost the connection to rank 0 at ", where);
}

}  // namespace

struct TcpStore::Server {
  int listen_fd = -1;
  std::mutex mu;
  std::map<std::string, std::vector<char>> kv;
  std::vector<int> conns;
  std::vector<std::thread> threads;
  std::thread acceptor;

  void serve(int fd) {
    for (;;) {
      char op = 0;
      std::vector<char> key, val;
      if (!read_all(fd, &op, 1) || !read_blob(fd, &key)) break;
      std::string k(key.begin(), key.end());
      if (op == 'S') {
        if (!read_blob(fd, &val)) break;
        {
          std::lock_guard<std::mutex> lk(mu);
          kv[k] = std::move(val);
        }
        char ok = 1;
        if (!write_all(fd, &ok, 1)) break;
      } else if (op == 'G') {
        bool found;
        {
          std::lock_guard<std::mutex> lk(mu);
          auto it = kv.find(k);
          found = it != kv.end();
          if (found) val = it->second;
        }
        char f = found ? 1 : 0;
        if (!write_all(fd, &f, 1)) break;
        if (found && !write_blob(fd, val.data(), uint32_t(val.size()))) break;
      } else {
        break;
      }
    }
  }

  ~Server() {
    if (listen_fd >= 0) ::shutdown(listen_fd, SHUT_RDWR);
    if (acceptor.joinable()) acceptor.join();
    if (listen_fd >= 0) ::close(listen_fd);
    {
      std::lock_guard<std::mutex> lk(mu);
      for (int fd : conns) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : threads) t.join();
    for (int fd : conns) ::close(fd);
  }
};

TcpStore::TcpStore(const std::string& host, int port, bool is_server, std::chrono::milliseconds timeout)
    : where_(host + ":" + std::to_string(port)), timeout_(timeout) {
  SIFT_CHECK(port > 0 && port < 65536, "E_ARG", "rendezvous port must be in 1..65535, got ", port);
  if (is_server) {
    server_ = std::make_unique<Server>();
    int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
    bool v6 = fd >= 0;
    if (!v6) fd = ::socket(AF_INET, SOCK_STREAM, 0);
    SIFT_CHECK(fd >= 0, "E_IO", "rendezvous: socket(): ", std::strerror(errno));
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc;
    if (v6) {
      int zero = 0;
      ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_addr = in6addr_any;
      a.sin6_port = htons(uint16_t(port));
      rc = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    } else {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_ANY);
      a.sin_port = htons(uint16_t(port));
      rc = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    }
    if (rc != 0 || ::listen(fd, 128) != 0) {
      std::string err = std::strerror(errno);
      ::close(fd);
      fail("E_IO", "rendezvous: rank 0 cannot listen on port ", port, " (", err,
           "): another process already holds that port, perhaps a second process started as RANK=0 (two launches "
           "of one run, or a wrong RANK) or another job; choose another --master-port (MASTER_PORT)");
    }
    server_->listen_fd = fd;
    Server* s = server_.get();
    s->acceptor = std::thread([s] {
      for (;;) {
        int c = ::accept(s->listen_fd, nullptr, nullptr);
        if (c < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          return;
        }
        std::lock_guard<std::mutex> lk(s->mu);
        s->conns.push_back(c);
        s->threads.emplace_back([s, c] { s->serve(c); });
      }
    });
  }
  // Connect, retrying while rank 0 is not listening yet.
  auto deadline = std::chrono::steady_clock::now() + timeout_;
  std::string last = "no address";
  for (;;) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (g != 0) {
      last = ::gai_strerror(g);
    } else {
      for (addrinfo* ai = res; ai && fd_ < 0; ai = ai->ai_next) {
        int fd = ::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) continue;
        if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
          fd_ = fd;
        } else {
          last = std::strerror(errno);
          ::close(fd);
        }
      }
      ::freeaddrinfo(res);
    }
    if (fd_ >= 0) break;
    if (std::chrono::steady_clock::now() >= deadline)
      fail("E_DIST", "rendezvous: cannot reach rank 0 at ", where_, " within ", timeout_.count() / 1000.0, " s (", last,
           "); is MASTER_ADDR/MASTER_PORT right and did rank 0 start?");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // A rank 0 that is stopped (or hung) still accepts connections in the kernel's backlog, but never
  // answers: every exchange gives up after the timeout instead of waiting forever.
  timeval tv{};
  tv.tv_sec = time_t(timeout_.count() / 1000);
  tv.tv_usec = suseconds_t((timeout_.count() % 1000) * 1000);
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

TcpStore::~TcpStore() {
  if (fd_ >= 0) ::close(fd_);
  server_.reset();
}

void TcpStore::set(const std::string& key, const std::vector<char>& value) {
  char op = 'S', ok = 0;
  bool good = write_all(fd_, &op, 1) && write_blob(fd_, key.data(), uint32_t(key.size())) &&
              write_blob(fd_, value.data(), uint32_t(value.size())) && read_all(fd_, &ok, 1);
  if (!good) exchange_failed(where_, timeout_);
  SIFT_CHECK(ok == 1, "E_DIST", "rendezvous: lost the connection to rank 0 at ", where_);
}

bool TcpStore::try_get(const std::string& key, std::vector<char>* out) {
  char op = 'G', found = 0;
  bool good = write_all(fd_, &op, 1) && write_blob(fd_, key.data(), uint32_t(key.size())) && read_all(fd_, &found, 1);
  if (!good) exchange_failed(where_, timeout_);
  if (!found) return false;
  std::vector<char> v;
  if (!read_blob(fd_, &v)) exchange_failed(where_, timeout_);
  if (out) *out = std::move(v);
  return true;
}

bool TcpStore::wait_for(const std::vector<std::string>& keys, std::chrono::milliseconds timeout, std::string* missing) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (const auto& k : keys) {
    while (!try_get(k, nullptr)) {
      if (std::chrono::steady_clock::now() >= deadline) {
        if (missing) *missing = k;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  return true;
}

void TcpStore::wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  std::string k;
  if (!wait_for(keys, timeout, &k)) wait_failed(k, timeout);
}

bool TcpStore::joined(int rank) { return try_get("world/" + std::to_string(rank), nullptr); }

void TcpStore::check_joined(std::chrono::milliseconds timeout) {
  for (int r = 1; r < world_; ++r)
    if (!joined(r)) rank_missing(r, world_, timeout);
}

void TcpStore::wait_failed(const std::string& key, std::chrono::milliseconds timeout) {
  check_joined(timeout);
  fail("E_DIST", "rendezvous: '", key, "' did not appear within ", timeout.count() / 1000.0,
       " s (a rank did not start or died before joining)");
}

[[noreturn]] void TcpStore::rank_missing(int rank, int world_size, std::chrono::milliseconds timeout) {
  fail("E_DIST", "rendezvous: rank ", rank, " of ", world_size, " did not join within ", timeout.count() / 1000.0,
       " s (it did not start, died before joining, or was started with another MASTER_ADDR or MASTER_PORT)");
}

namespace {

[[noreturn]] void world_sizes_differ(int rank, const std::vector<char>& theirs, const std::string& rank0) {
  fail("E_MISMATCH", "rendezvous: the processes were started with different WORLD_SIZE values: rank ", rank, " has ",
       std::string(theirs.begin(), theirs.end()), ", rank 0 has ", rank0,
       "; every process of a group needs the same one");
}

}  // namespace

void TcpStore::join(int rank, int world_size) {
  world_ = world_size;
  const std::string mine = std::to_string(world_size);
  const std::vector<char> mine_v(mine.begin(), mine.end());
  const std::string key = "world/" + std::to_string(rank);
  std::vector<char> v;
  if (rank != 0) {
    // Rank 0 serves this store and publishes its entry as soon as it has connected to it. Its entry
    // is read before this one is published: rank 0 may end (and its store with it) once it sees ours.
    if (!wait_for({"world/0"}, timeout_, nullptr)) rank_missing(0, world_size, timeout_);
    try_get("world/0", &v);
    if (v == mine_v) {
      set(key, mine_v);
      return;
    }
    try {
      set(key, mine_v);  // for rank 0 to report the mismatch too
    } catch (const SiftException&) {
      // This rank's own report below says what matters.
    }
    world_sizes_differ(rank, mine_v, std::string(v.begin(), v.end()));
  }
  set(key, mine_v);
  // Rank 0 checks every other rank as it arrives, so that a rank with another WORLD_SIZE is reported
  // even while a rank it expects never comes.
  std::vector<int> pending;
  for (int r = 1; r < world_size; ++r) pending.push_back(r);
  auto deadline = std::chrono::steady_clock::now() + timeout_;
  for (;;) {
    for (size_t i = 0; i < pending.size();) {
      if (!try_get("world/" + std::to_string(pending[i]), &v)) {
        ++i;
        continue;
      }
      if (v != mine_v) world_sizes_differ(pending[i], v, mine);
      pending.erase(pending.begin() + std::ptrdiff_t(i));
    }
    if (pending.empty()) return;
    if (std::chrono::steady_clock::now() >= deadline) rank_missing(pending.front(), world_size, timeout_);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::vector<char> TcpStore::get(const std::string& key) {
  wait({key}, timeout_);
  std::vector<char> v;
  try_get(key, &v);
  return v;
}

}  // namespace sift::dist
