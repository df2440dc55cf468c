// dlopen of OpenBLAS. The library keeps its own thread pool; sift-ft calls it from the CPU
// executor thread only, one GEMM at a time.
#include "blas_loader.h"

#include <mutex>

#include "../core/dl_loader.h"

namespace sift::cpu::blas {
namespace {

OpenBlas* g_lib = nullptr;
std::string g_error = "not loaded";

void load() {
  auto* lib = new OpenBlas();  // kept for the life of the process, like the handle
  char* (*config)() = nullptr;
  char* (*corename)() = nullptr;
  dl::Places places;
  places.names = {"libopenblas.so.0", "libopenblas.so", "libopenblas.dylib"};
  dl::Loaded l = dl::open_first(dl::candidates(places),
                                {dl::need("cblas_sgemm", lib->sgemm), dl::need("cblas_dgemm", lib->dgemm),
                                 dl::want("openblas_get_num_threads", lib->get_num_threads),
                                 dl::want("openblas_get_config", config), dl::want("openblas_get_corename", corename)});
  if (!l.handle) {
    delete lib;
    g_error = l.rejected.empty() ? "libopenblas.so.0 / libopenblas.so not found" : l.tried();
    return;
  }
  if (config) lib->config = config();
  if (corename) lib->corename = corename();
  lib->path = l.path;
  g_lib = lib;
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
