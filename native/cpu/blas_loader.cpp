// dlopen of OpenBLAS. The library keeps its own thread pool; sift-ft calls it from the CPU
// executor thread only, one GEMM at a time.
#include "blas_loader.h"

#include <mutex>

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#define SIFT_HAVE_DLOPEN 1
#endif

namespace sift::cpu::blas {
namespace {

OpenBlas* g_lib = nullptr;
std::string g_error = "not loaded";

void load() {
#ifdef SIFT_HAVE_DLOPEN
  const char* names[] = {"libopenblas.so.0", "libopenblas.so", "libopenblas.dylib"};
  for (const char* name : names) {
    void* h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!h) continue;
    auto sgemm = reinterpret_cast<OpenBlas::Sgemm>(dlsym(h, "cblas_sgemm"));
    auto dgemm = reinterpret_cast<OpenBlas::Dgemm>(dlsym(h, "cblas_dgemm"));
    if (!sgemm || !dgemm) {
      dlclose(h);
      g_error = std::string(name) + " has no cblas_sgemm/cblas_dgemm";
      continue;
    }
    auto* lib = new OpenBlas();  // kept for the life of the process, like the handle
    lib->sgemm = sgemm;
    lib->dgemm = dgemm;
    lib->get_num_threads = reinterpret_cast<int (*)()>(dlsym(h, "openblas_get_num_threads"));
    if (auto cfg = reinterpret_cast<char* (*)()>(dlsym(h, "openblas_get_config"))) lib->config = cfg();
    if (auto core = reinterpret_cast<char* (*)()>(dlsym(h, "openblas_get_corename"))) lib->corename = core();
    lib->path = name;
#if defined(__GLIBC__) || defined(__APPLE__)
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(sgemm), &info) && info.dli_fname) lib->path = info.dli_fname;
#endif
    g_lib = lib;
    return;
  }
  if (g_error == "not loaded") g_error = "libopenblas.so.0 / libopenblas.so not found";
#else
  g_error = "dlopen is not available on this platform";
#endif
}

}  // namespace

const OpenBlas* openblas() {
  static std::once_flag once;
  std::call_once(once, load);
  return g_lib;
}

std::string openblas_error() {
  openblas();
  return g_lib ? "" : g_error;
}

}  // namespace sift::cpu::blas
