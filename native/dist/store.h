// The rendezvous store: a small key-value exchange served by rank 0 over TCP (MASTER_ADDR:
// MASTER_PORT), through which ranks publish their transport addresses (gloo) or the NCCL unique id
// before the collective library connects them. It carries a few kilobytes once per group; the
// collectives themselves never go through it.
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace sift::dist {

class TcpStore {
 public:
  // Rank 0 (is_server) listens on port (all interfaces) and serves; every rank, rank 0 included,
  // connects to host:port as a client, retrying until timeout.
  TcpStore(const std::string& host, int port, bool is_server, std::chrono::milliseconds timeout);
  ~TcpStore();
  TcpStore(const TcpStore&) = delete;
  TcpStore& operator=(const TcpStore&) = delete;

  void set(const std::string& key, const std::vector<char>& value);
  // Waits until the key is present (E_DIST after the timeout).
  std::vector<char> get(const std::string& key);
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout);
  // Waits like wait(); false after the timeout, with the first key still missing in *missing.
  bool wait_for(const std::vector<std::string>& keys, std::chrono::milliseconds timeout, std::string* missing);
  // Publishes this rank's world size and compares it with rank 0's before the collective library
  // connects anything: E_MISMATCH on the rank that differs and on rank 0, which checks every rank as
  // it arrives (E_DIST for a rank that does not join within the timeout).
  void join(int rank, int world_size);
  // The E_DIST of a rank that did not join within the timeout.
  [[noreturn]] static void rank_missing(int rank, int world_size, std::chrono::milliseconds timeout);
  // After a wait for key that timed out, once join() ran: the E_DIST of a rank that has not joined,
  // if any (rank 0 publishes its own entries only after every rank joined, so an entry of rank 0's
  // may be missing because of another rank), else of the key.
  [[noreturn]] void wait_failed(const std::string& key, std::chrono::milliseconds timeout);
  // The E_DIST of the first rank that has not joined, if any (after join()).
  void check_joined(std::chrono::milliseconds timeout);
  // Whether rank's entry of join() is in the store.
  bool joined(int rank);
  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  bool try_get(const std::string& key, std::vector<char>* out);
  struct Server;
  std::unique_ptr<Server> server_;
  int fd_ = -1;
  std::string where_;
  std::chrono::milliseconds timeout_;
  int world_ = 0;  // set by join()
};

}  // namespace sift::dist
