/**
 * Every environment variable sift-ft reads, with what it does. The TypeScript reads them only through
 * env() and envFlag() below; the native addon's are listed in native/core/env.h and the source
 * build's (scripts/build-native.js, plain JavaScript that runs before any TypeScript is compiled)
 * here under `build`. docs/environment.md documents them for users, and
 * test/package/env-registry.test.ts checks that every read under lib/, native/ and scripts/ is
 * registered and documented. Prefer options and native setters to new variables.
 */

export interface EnvVar {
  /** Who reads it: the TypeScript library, the native addon, or the source build. */
  readBy: 'library' | 'native' | 'build';
  doc: string;
}

export const ENV_VARS = {
  SIFT_FT_NATIVE: { readBy: 'library', doc: 'load this addon file instead of a source build or the prebuilt platform package' },
  SIFT_FT_CHECK_META: {
    readBy: 'library',
    doc: "1: check the metadata every op gives its output tensor against the native handle's (debugging)",
  },
  SIFT_FT_DEBUG: { readBy: 'library', doc: 'any value: CLI errors print their stack' },
  CI: { readBy: 'library', doc: 'any value: progress is printed as plain lines, never redrawn' },
  HF_HUB_CACHE: { readBy: 'library', doc: "Hugging Face hub cache searched for 'org/name' model ids" },
  HF_HOME: { readBy: 'library', doc: "Hugging Face home; its hub/ folder is searched for 'org/name' model ids" },
  RANK: { readBy: 'library', doc: "this process's rank in a process group (torchrun's name; set by sift-ft launch)" },
  WORLD_SIZE: { readBy: 'library', doc: 'processes in the group' },
  LOCAL_RANK: { readBy: 'library', doc: 'rank on this node: a CUDA process takes cuda:LOCAL_RANK' },
  LOCAL_WORLD_SIZE: { readBy: 'library', doc: 'processes on this node' },
  MASTER_ADDR: { readBy: 'library', doc: "rank 0's address for the rendezvous (default 127.0.0.1)" },
  MASTER_PORT: { readBy: 'library', doc: "rank 0's rendezvous port (default 29500)" },
  TORCHELASTIC_USE_AGENT_STORE: {
    readBy: 'library',
    doc: "set by torchrun: True means torchrun's own store holds MASTER_PORT, so sift-ft's rendezvous takes MASTER_PORT + 1",
  },
  SIFT_FT_LAUNCHER_FD: {
    readBy: 'library',
    doc: 'set by sift-ft launch for its processes: the descriptor of a pipe from the launcher; when it closes, the process stops as on SIGTERM',
  },
  XDG_CACHE_HOME: { readBy: 'library', doc: "its huggingface/hub folder is searched for 'org/name' model ids" },

  SIFT_FT_NUM_THREADS: { readBy: 'native', doc: 'CPU threads of the kernel thread pool (default: all cores)' },
  SIFT_FT_CPU_SYNC: { readBy: 'native', doc: '1: run CPU ops inline on the calling thread instead of the executor (debugging)' },
  SIFT_FT_CPU_QUEUE: { readBy: 'native', doc: 'how many CPU ops JavaScript may queue ahead of the executor (default 4096)' },
  SIFT_FT_CPU_GEMM: { readBy: 'native', doc: 'native | openblas: the CPU GEMM (OpenBLAS only where libopenblas.so loads)' },
  SIFT_FT_NO_CUBLAS: { readBy: 'native', doc: "1: sift-ft's own CUDA GEMM kernel even where cuBLAS loads" },
  SIFT_FT_CUBLASLT: {
    readBy: 'native',
    doc: "1: CUDA GEMMs through cuBLASLt with fused bias/GELU/bias-gradient epilogues (setCudaGemm('lt'); default: cuBLAS)",
  },
  SIFT_FT_CUBLAS: { readBy: 'native', doc: 'path of the libcublas.so to load (default: the loader path, CUDA_HOME, /usr/local/cuda*)' },
  SIFT_FT_CUDA_ATTENTION: {
    readBy: 'native',
    doc: 'simt: CUDA attention on CUDA cores only (default: tensor cores for f16/bf16 where they apply)',
  },
  SIFT_FT_CUDA_SELECT: {
    readBy: 'native',
    doc: "bracket: CUDA top-k with the bracket kernels (default radix; setCudaSelect('bracket') at run time)",
  },
  SIFT_FT_CUDA_SPARSE_ADAMW: {
    readBy: 'native',
    doc: 'prefetch: the CUDA sparse AdamW kernel that fetches weight sectors into L2 first (default rounds; setCudaSparseAdamW)',
  },
  SIFT_FT_CUDA_QUANT_GEMM: {
    readBy: 'native',
    doc: "fused: quantized linear layers dequantize inside the GEMM's tiles on CUDA (default tiles: dequantized tiles in memory, then the GEMM)",
  },
  SIFT_FT_NCCL: {
    readBy: 'native',
    doc: "path of the libnccl.so to load for CUDA process groups (default: the loader's path, CUDA_HOME, PyTorch's nvidia/nccl)",
  },
  VIRTUAL_ENV: { readBy: 'native', doc: 'a Python environment whose site-packages/nvidia/nccl is searched for libnccl.so' },
  CONDA_PREFIX: { readBy: 'native', doc: 'same as VIRTUAL_ENV' },
  HOME: { readBy: 'native', doc: '~/.local/lib/python3*/site-packages/nvidia/nccl is searched for libnccl.so' },
  CUDA_HOME: {
    readBy: 'native',
    doc: 'CUDA toolkit folder: searched for libcublas.so, libcublasLt.so and libnccl.so, and for nvcc by the source build',
  },
  CUDA_PATH: { readBy: 'native', doc: 'same as CUDA_HOME' },

  SIFT_FT_CPU_ONLY: { readBy: 'build', doc: '1: the source build skips CUDA (no nvcc probe); same as `sift-ft build --cpu-only`' },
  SIFT_FT_CUDA_ARCHS: {
    readBy: 'build',
    doc: 'CUDA architectures of the source build, CMake syntax (default 75-real;80-real;86-real;89-real;90)',
  },
  SIFT_FT_BUILD_DIR: { readBy: 'build', doc: 'build somewhere other than build/ (then point SIFT_FT_NATIVE at the .node file)' },
  SIFT_FT_BUILD_TOOL: { readBy: 'build', doc: 'node-gyp: build with node-gyp and binding.gyp (CPU only) even where CMake exists' },
  SIFT_FT_VERBOSE_BUILD: { readBy: 'build', doc: "1: print the build tools' output, not only the one-line summary" },
  CUDACXX: { readBy: 'build', doc: 'the nvcc to build with' },
  CUDA_ROOT: { readBy: 'build', doc: 'another CUDA toolkit folder searched for nvcc' },
} satisfies Record<string, EnvVar>;

export type EnvName = keyof typeof ENV_VARS;
type LibraryVar = { [K in EnvName]: (typeof ENV_VARS)[K]['readBy'] extends 'library' ? K : never }[EnvName];

/** The variable's value; unset and empty are both undefined. */
export function env(name: LibraryVar): string | undefined {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v;
}

/** The variable's value, removed from this process's environment so that its children do not inherit it. */
export function takeEnv(name: LibraryVar): string | undefined {
  const v = env(name);
  delete process.env[name];
  return v;
}

/** Whether a switch variable is on ('1'). */
export function envFlag(name: LibraryVar): boolean {
  return process.env[name] === '1';
}
