// Errors that cross the native boundary. Every failure in native code is a SiftException with a
// string code (E_SHAPE, E_DTYPE, ...); the binding turns it into the JavaScript SiftError.
#pragma once
#include <exception>
#include <sstream>
#include <string>
#include <utility>

namespace sift {

class SiftException : public std::exception {
 public:
  SiftException(std::string code, std::string message) : code_(std::move(code)), message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }
  const std::string& code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  std::string code_;
  std::string message_;
};

template <typename... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(const char* code, Args&&... args) {
  throw SiftException(code, str_cat(std::forward<Args>(args)...));
}

}  // namespace sift

// SIFT_CHECK(cond, "E_SHAPE", "matmul: ", a, " vs ", b)
#define SIFT_CHECK(cond, code, ...)               \
  do {                                            \
    if (!(cond)) ::sift::fail(code, __VA_ARGS__); \
  } while (0)
