// Libraries loaded at run time (dlopen), so that one binary builds without them and uses them where
// they are installed: OpenBLAS (cpu/blas_loader.cpp), cuBLAS and cuBLASLt (cuda/blas_loader.cpp,
// cuda/blaslt_loader.cpp) and NCCL (dist/group_nccl.cpp). Each caller lists where its library may
// be (a file named by an environment variable, sonames for the loader's own search, folders) and
// the symbols it binds; open_first() tries the places in order and keeps the first file that opens
// and has every required symbol, and says what it tried when none does.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace sift::dl {

// One symbol to bind: `set` stores the address (nullptr when a candidate is rejected).
struct Symbol {
  const char* name;
  bool required;
  std::function<void(void*)> set;
};

// A symbol the library must have: a candidate without it is skipped.
template <typename F>
Symbol need(const char* name, F& fn) {
  return {name, true, [&fn](void* p) { fn = reinterpret_cast<F>(p); }};
}
// A symbol bound when present (newer versions of the library), left null otherwise.
template <typename F>
Symbol want(const char* name, F& fn) {
  return {name, false, [&fn](void* p) { fn = reinterpret_cast<F>(p); }};
}

// Where to look, in order: a file the user named (the value of SIFT_FT_NCCL, say; null or empty:
// none), each name through the loader's search path (LD_LIBRARY_PATH, the ld.so cache, the default
// folders), then each folder with each name.
struct Places {
  const char* file = nullptr;
  std::vector<std::string> names;
  std::vector<std::string> dirs;
};
std::vector<std::string> candidates(const Places& places);

// Toolkit folders of a CUDA installation: CUDA_HOME and CUDA_PATH (lib64 and
// targets/x86_64-linux/lib), then the given roots (e.g. /usr/local/cuda), the same two folders each.
std::vector<std::string> cuda_dirs(const std::vector<std::string>& roots);
// A Python package's library folder (e.g. "nvidia/nccl/lib", as PyTorch's CUDA wheels install
// it) in the environments of VIRTUAL_ENV and CONDA_PREFIX, the user's ~/.local and the system's
// Python folders: those that exist.
std::vector<std::string> python_package_dirs(const std::string& package_lib);

struct Loaded {
  void* handle = nullptr;  // null when nothing loaded
  std::string path;        // the file loaded (resolved through dladdr when possible)
  // What was tried and why it was not taken, one entry per candidate that exists but failed
  // ("path: reason", e.g. a missing dependency or symbol); candidates that are simply absent are
  // only counted.
  std::vector<std::string> rejected;
  int absent = 0;
  // "N places tried: <rejected entries>" or "N places tried, none present": for error messages.
  std::string tried() const;
};

// Tries `candidates` in order. The first that dlopens (RTLD_NOW | RTLD_LOCAL) with every required
// symbol is kept open for the life of the process and its symbols are bound; every symbol is null
// when none qualifies. Not thread-safe by itself: callers load once (std::call_once).
Loaded open_first(const std::vector<std::string>& candidates, const std::vector<Symbol>& symbols);

}  // namespace sift::dl
