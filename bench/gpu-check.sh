#!/usr/bin/env bash
# The GPU check in one command: nvidia-smi, the checks of the newest CUDA paths (each falls back to
# the verified path when its tests fail: attention, vector kernels, cuBLASLt epilogues, CUDA graphs),
# the end-to-end training benchmark, the kernel benchmarks (select, adamw, gemm), per-op profiles
# (CUDA graphs off and on), the PyTorch peers on the same card and the CUDA test suite, then
# results.json and summary.md with our/peer ratios next to the goals.
#
#   bash bench/gpu-check.sh [OUTDIR] [--cpu-smoke] [--plan] [--with-tests] [--full-tests] [--budget=S]
#   bash bench/gpu-check.sh [OUTDIR] --sst2 [--sst2-data=DIR] [--budget=S]
#   bash bench/gpu-check.sh [OUTDIR] --shapes [--budget=S]
#
# OUTDIR defaults to $OUT, else ./gpu-check-out. Files written there (8 at most): summary.md,
# results.json, bench.jsonl (our rows and one row per stage), peers.jsonl, tests.txt, env.txt, log.txt,
# and kernels.txt (per-kernel device time from Nsight Systems, where `nsys` is installed).
# Every stage has a timeout derived from the budget (default 550 s, under the 10 minutes of one
# device call) and a failing stage does not stop the others.
#
# Runs on any machine with an NVIDIA GPU: uses `node` from PATH, node_modules, dist/ (compiled here
# with tsc when missing) and the addon at $SIFT_FT_NATIVE or build/Release. What
# bench/pack-for-device.sh leaves in .device/ is used when present: node.xz (a Node.js binary),
# node_modules.tar.xz, dist.tar.xz and sift_ft.node.xz (the addon with CUDA).
# Without a usable GPU it runs the CPU parts quickly instead (--cpu-smoke; tests only with --with-tests).
# --sst2 runs only the SST-2 experiment on the GPU (its own device call): a GPT-2 'large' base
# (about 92M parameters) pre-trained for 4 minutes on the Gutenberg books, then SIFT, random-sparse,
# LoRA and full fine-tuning on SST-2 over one learning-rate grid and three seeds; sst2-results.json
# and sst2-report.html go to OUTDIR. It reads DIR/gutenberg and DIR/sst2 (default ../shared/data).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUTDIR=""
SMOKE=0
PLAN=0
WITH_TESTS=0
FULL_TESTS=0
BUDGET=550
SST2=0
SHAPES=0
SST2_DATA=../shared/data
for a in "$@"; do
  case "$a" in
    --cpu-smoke) SMOKE=1 ;;
    --plan) PLAN=1 ;;
    --with-tests) WITH_TESTS=1 ;;
    --full-tests) FULL_TESTS=1 ;;
    --budget=*) BUDGET="${a#--budget=}" ;;
    --sst2) SST2=1 ;;
    --shapes) SHAPES=1 ;;
    --sst2-data=*) SST2_DATA="${a#--sst2-data=}" ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "gpu-check: unknown flag $a" >&2; exit 2 ;;
    *) OUTDIR="$a" ;;
  esac
done
OUTDIR="${OUTDIR:-${OUT:-./gpu-check-out}}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sift-gpu-check.XXXXXX")"
LOG="$OUTDIR/log.txt"
BENCH="$OUTDIR/bench.jsonl"
PEERS="$OUTDIR/peers.jsonl"
TESTS="$OUTDIR/tests.txt"
ENVF="$OUTDIR/env.txt"
START=$SECONDS
DEADLINE=$((START + BUDGET))
: > "$LOG"; : > "$BENCH"; : > "$PEERS"; : > "$TESTS"; : > "$ENVF"

say() { echo "[gpu-check $((SECONDS - START))s] $*" | tee -a "$LOG" >&2; }

# ---- tools: Node.js, node_modules, dist, the addon, Python with PyTorch
if [ -s .device/node.xz ] && ! command -v node >/dev/null 2>&1; then
  mkdir -p "$WORK/bin" && xz -dc .device/node.xz > "$WORK/bin/node" && chmod +x "$WORK/bin/node"
  export PATH="$WORK/bin:$PATH"
  say "node unpacked from .device/node.xz"
fi
NODE="$(command -v node || true)"
if [ "$PLAN" = 0 ] && [ -s .device/node_modules.tar.xz ] && [ ! -d node_modules/jest ]; then
  tar -xJf .device/node_modules.tar.xz && say "node_modules unpacked"
fi
DIST="${SIFT_FT_DIST:-dist}"  # where the compiled TypeScript is (or goes)
# Compiled TypeScript that matches the sources here: $DIST as it is when it was built from them,
# else the packed build when it was, else tsc, else the packed build anyway (with a warning).
SRC_SHA="$(find lib bench -name '*.ts' -type f | LC_ALL=C sort | xargs cat | sha1sum | cut -d' ' -f1)"
DIST_SHA="$(cat "$DIST/.sources.sha1" 2>/dev/null || true)"
PACK_SHA=""
[ -s .device/dist.tar.xz ] && PACK_SHA="$(tar -xJOf .device/dist.tar.xz ./.sources.sha1 2>/dev/null || true)"
TSC=""
[ -n "$NODE" ] && [ -f node_modules/typescript/bin/tsc ] && TSC=node_modules/typescript/bin/tsc
if [ "$PLAN" = 1 ] || { [ "$DIST_SHA" = "$SRC_SHA" ] && [ -f "$DIST/bench/run.js" ]; }; then
  :
elif [ -n "$PACK_SHA" ] && [ "$PACK_SHA" = "$SRC_SHA" ]; then
  mkdir -p "$DIST" && tar -xJf .device/dist.tar.xz -C "$DIST" && say "$DIST unpacked from .device/dist.tar.xz"
elif [ -n "$TSC" ]; then
  say "compiling TypeScript (tsc) into $DIST"
  "$NODE" "$TSC" -p tsconfig.json --outDir "$DIST" >> "$LOG" 2>&1 || say "tsc reported errors (output emitted anyway; see log.txt)"
  echo "$SRC_SHA" > "$DIST/.sources.sha1"
elif [ -s .device/dist.tar.xz ]; then
  mkdir -p "$DIST" && tar -xJf .device/dist.tar.xz -C "$DIST"
  say "warning: $DIST unpacked from .device/dist.tar.xz, which was compiled from other sources (no tsc here)"
fi
if [ -z "${SIFT_FT_NATIVE:-}" ] && [ -s .device/sift_ft.node.xz ]; then
  xz -dc .device/sift_ft.node.xz > "$WORK/sift_ft.node" && export SIFT_FT_NATIVE="$WORK/sift_ft.node"
fi
export SIFT_FT_NATIVE="${SIFT_FT_NATIVE:-$ROOT/build/Release/sift_ft.node}"

PY=""
for p in ${PYTHON:-} python3 /usr/bin/python3 python; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch' >/dev/null 2>&1; then PY="$p"; break; fi
done

# ---- device detection
GPU=0
SMI="$(timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1)" && GPU=1
BACKENDS=""
if [ -n "$NODE" ] && [ -f "$SIFT_FT_NATIVE" ]; then
  BACKENDS="$(timeout 60 "$NODE" -e "const a=require(process.env.SIFT_FT_NATIVE);const b=a.backends();console.log(JSON.stringify({cuda:{compiled:b.cuda.compiled,usable:b.cuda.usable,status:b.cuda.status,runtime:b.cuda.runtimeVersion,gemm:b.cuda.gemm,devices:b.cuda.devices.map(d=>d.name+' cc'+d.computeCapability)},cpu:{threads:b.cpu.threads,simd:b.cpu.simd}}))" 2>&1)"
fi
CUDA_OK=0
echo "$BACKENDS" | grep -q '"usable":true' && CUDA_OK=1
# cuBLAS is loaded at run time; where the toolkit is not on the library path, take the copy that
# PyTorch's wheels bring (nvidia/cublas/lib) rather than run on the fallback GEMM kernel.
if [ "$CUDA_OK" = 1 ] && echo "$BACKENDS" | grep -q '"gemm":"sift-ft kernel"' && [ -n "$PY" ] && [ -z "${SIFT_FT_CUBLAS:-}" ]; then
  CUBLAS_FILE="$("$PY" -c 'import glob,os,nvidia.cublas as c
for d in c.__path__:
    f=sorted(glob.glob(os.path.join(d,"lib","libcublas.so*")))
    if f: print(f[-1]); break' 2>/dev/null || true)"
  if [ -n "$CUBLAS_FILE" ]; then
    export SIFT_FT_CUBLAS="$CUBLAS_FILE"
    BACKENDS="$(timeout 60 "$NODE" -e "const a=require(process.env.SIFT_FT_NATIVE);const b=a.backends();console.log(JSON.stringify({cuda:{compiled:b.cuda.compiled,usable:b.cuda.usable,status:b.cuda.status,runtime:b.cuda.runtimeVersion,gemm:b.cuda.gemm,devices:b.cuda.devices.map(d=>d.name+' cc'+d.computeCapability)},cpu:{threads:b.cpu.threads,simd:b.cpu.simd}}))" 2>&1)"
    say "cuBLAS not on the library path: using $CUBLAS_FILE (SIFT_FT_CUBLAS)"
  fi
fi
if [ "$GPU" = 1 ] && [ "$CUDA_OK" = 0 ]; then say "nvidia-smi sees a GPU but the addon cannot use it: $BACKENDS"; fi
if [ "$CUDA_OK" = 0 ] && [ "$SMOKE" = 0 ]; then
  say "no usable GPU here (nvidia-smi: $( [ $GPU = 1 ] && echo ok || echo absent )): running the CPU parts only (--cpu-smoke)"
  SMOKE=1
fi
TORCH_INFO=""
[ -n "$PY" ] && TORCH_INFO="$("$PY" -c 'import torch,sys
v=[torch.__version__]
for m in ("transformers","peft"):
    try: v.append(m+" "+__import__(m).__version__)
    except Exception: v.append(m+" missing")
print(sys.executable, " ".join(v), "cuda" if torch.cuda.is_available() else "no cuda")' 2>&1)"
HAVE_TF=0
echo "$TORCH_INFO" | grep -q 'transformers [0-9]' && HAVE_TF=1
HAVE_PEFT=0
[ "$HAVE_TF" = 1 ] && echo "$TORCH_INFO" | grep -q 'peft [0-9]' && HAVE_PEFT=1

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm), $(nproc) cores"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git status --porcelain 2>/dev/null | grep -q . && echo ' (+ uncommitted changes)')"
  echo "mode: $( [ $SMOKE = 1 ] && echo 'cpu smoke (no GPU benchmarks)' || echo 'GPU' ), budget ${BUDGET}s"
  echo "nvidia-smi: ${SMI:-absent}"
  echo "node: ${NODE:-missing} $( [ -n "$NODE" ] && "$NODE" --version)"
  echo "addon: $SIFT_FT_NATIVE $BACKENDS"
  echo "python: ${PY:-no python with torch} $TORCH_INFO"
} > "$ENVF"
cat "$ENVF" >> "$LOG"

# ---- stages
# stage NAME CAP_SECONDS OUTFILE CMD...: runs CMD with the smaller of CAP and the time left, JSON
# lines of its stdout go to OUTFILE, everything else to log.txt; records {bench:"stage"} in bench.jsonl.
stage() {
  local name="$1" cap="$2" out="$3"; shift 3
  local left=$((DEADLINE - SECONDS - 10))
  local t=$(( cap < left ? cap : left ))
  if [ "$PLAN" = 1 ]; then echo "stage $name: up to ${cap}s: $*"; return 0; fi
  if [ "$t" -lt 10 ]; then
    say "skip $name: no time left"
    echo "{\"bench\":\"stage\",\"stage\":\"$name\",\"rc\":null,\"seconds\":0,\"status\":\"skipped\",\"error\":\"no time left\"}" >> "$BENCH"
    return 0
  fi
  say "stage $name (timeout ${t}s): $*"
  local s0=$SECONDS
  echo "==== $name: $*" >> "$LOG"
  timeout -k 10 "$t" "$@" > "$WORK/$name.out" 2>> "$LOG"
  local rc=$?
  grep '^{' "$WORK/$name.out" >> "$out" || true
  grep -v '^{' "$WORK/$name.out" >> "$LOG" || true
  local status=ok
  [ $rc -ne 0 ] && status=error
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status=timeout
  echo "{\"bench\":\"stage\",\"stage\":\"$name\",\"rc\":$rc,\"seconds\":$((SECONDS - s0)),\"status\":\"$status\"}" >> "$BENCH"
  say "  $name: $status (rc $rc, $((SECONDS - s0))s)"
}

RUN=(node "$DIST/bench/run.js")
JEST=(node node_modules/jest/bin/jest.js --ci --colors=false)
# export-peft's adapters (SUPERTUNING from SIFT increments, LoRA) loaded with Hugging Face PEFT on
# their base: PEFT's logits against ours, one row per adapter in peers.jsonl (CPU work, small model).
peft_stage() {
  if [ "$HAVE_PEFT" = 1 ]; then
    stage peft 90 "$PEERS" sh -c "node '$DIST/bench/peft-export.js' '$WORK/peft' && '$PY' -B bench/peers/peft_check.py '$WORK/peft'"
  elif [ "$PLAN" = 0 ]; then
    echo "{\"bench\":\"stage\",\"stage\":\"peft\",\"rc\":null,\"seconds\":0,\"status\":\"skipped\",\"error\":\"python has no transformers and peft\"}" >> "$BENCH"
  fi
}
# Billion-parameter shapes: SIFT 1% (bf16) on the Llama-3.2-1B and Llama-3-8B shapes, tokens/s and
# peak memory beside the plan's prediction, and one step of the Llama-3-70B shape with an NF4 base
# (bench.jsonl, bench "shapes"); then the PyTorch peers at the same shapes and batches (LoRA, the
# paper-style SIFT, QLoRA-style NF4 where bitsandbytes is installed, full fine-tuning where it fits;
# peers.jsonl). The time left is split 55% / 30% / 15% between them, each under its own timeout.
shapes_stage() {
  local cap="$1" left=$((DEADLINE - SECONDS - 10))
  local t=$(( cap < left ? cap : left ))
  local peers=":"
  if [ -n "$PY" ]; then
    local toy=""; [ "$HAVE_TF" = 0 ] && toy="--toy-model"
    local p="timeout -k 5"
    p="$p $((t * 30 / 100)) '$PY' -B bench/peers/torch_train.py --device cuda $toy --config bench/configs/llama-3-8b.json --methods lora,sift,qlora,full --rates 0.01 --batch 4 --seq 2048 --warmup 1 --steps 3 >> '$PEERS' 2>> '$LOG'"
    p="$p; timeout -k 5 $((t * 15 / 100)) '$PY' -B bench/peers/torch_train.py --device cuda $toy --config bench/configs/llama-3.2-1b.json --methods lora,sift,qlora,full --rates 0.01 --batch 8 --seq 2048 --warmup 1 --steps 3 >> '$PEERS' 2>> '$LOG'"
    peers="$p"
  fi
  stage shapes "$cap" "$BENCH" sh -c "timeout -k 5 $((t * 55 / 100)) node '$DIST/bench/run.js' shapes --device=cuda --steps=4; rc=\$?; $peers; exit \$rc"
}
# The parity fixtures made again with transformers itself where it is installed: the script loads
# the same weights into transformers' classes and fails when they disagree with the float64
# reimplementation the committed fixtures come from (every family, logits, loss and gradients).
if [ "$HAVE_TF" = 1 ] && [ "$SHAPES" = 0 ]; then
  stage fixtures-transformers 120 /dev/null sh -c "'$PY' -B test/fixtures/make_fixtures.py --out '$WORK/fixtures' > '$WORK/fixtures.txt' 2>&1; rc=\$?; cat '$WORK/fixtures.txt' >> '$LOG'; exit \$rc"
fi
if [ "$SST2" = 1 ]; then
  # Pre-training 4 minutes (240 s) and 3 learning rates x 4 methods + 2 more seeds each (20 runs of
  # 300 steps) within one call: the stage's cap is the whole budget.
  stage sst2 "$BUDGET" /dev/null node "$DIST/bench/experiment.js" sst2 --out "$WORK/sst2" --data "$SST2_DATA" --device cuda \
    --architecture gpt2 --size large --pretrain-minutes 4 --pretrain-batch 32 --block 256 --pretrain-lr 6e-4 --tokenizer-vocab 8192 --tokenizer-sample-mb 5 \
    --pretrain-data "$SST2_DATA/gutenberg" --train-size 20000 --dev-size 1000 --test-size 2000 --steps 300 --batch 32 --max-length 64 \
    --lrs 1e-4,1e-3,1e-2 --seeds 3 --quiet
  [ -f "$WORK/sst2/results.json" ] && cp "$WORK/sst2/results.json" "$OUTDIR/sst2-results.json"
  [ -f "$WORK/sst2/report.html" ] && cp "$WORK/sst2/report.html" "$OUTDIR/sst2-report.html"
elif [ "$SHAPES" = 1 ]; then
  shapes_stage "$BUDGET"
elif [ "$SMOKE" = 1 ]; then
  stage train 90 "$BENCH" "${RUN[@]}" train --cpu-only --quick --models=gpt2,llama
  if [ -n "$PY" ]; then
    TOY=""; [ "$HAVE_TF" = 0 ] && TOY="--toy-model"
    # shellcheck disable=SC2086
    stage peers-train 90 "$PEERS" "$PY" -B bench/peers/torch_train.py --device cpu --tiny --budget-s 0.3 --warmup 1 $TOY
    stage peers-kernels 60 "$PEERS" "$PY" -B bench/peers/torch_kernels.py --device cpu --quick --only topk,adamw,attention --sizes 1024x4096 --dtypes f32
  fi
  peft_stage
  stage select 60 "$BENCH" "${RUN[@]}" select --cpu-only --quick --sizes=1024x4096 --dtypes=f32
  stage sddmm 45 "$BENCH" "${RUN[@]}" sddmm --cpu-only --quick --dtypes=f32
  stage adamw 60 "$BENCH" "${RUN[@]}" adamw --cpu-only --quick
  stage attention 30 "$BENCH" "${RUN[@]}" attention --cpu-only --quick
  stage profile 60 "$BENCH" "${RUN[@]}" profile --cpu-only --model=gpt2 --method=sift --steps=2
  [ "$WITH_TESTS" = 1 ] && stage tests 600 /dev/null sh -c "${JEST[*]} > '$TESTS' 2>&1"
else
  # The tensor-core attention kernels first ran here: check them (and both CUDA paths with
  # soft-capping and the sliding window) against the CPU and the CUDA-core kernels before anything
  # depends on them, and fall back to the CUDA-core kernels if they fail.
  stage attention-check 120 /dev/null sh -c "${JEST[*]} test/autograd/attention.test.ts test/autograd/attention-softcap-window.test.ts -t 'tensor-core|softcap and window: CUDA' > '$WORK/attn.txt' 2>&1; rc=\$?; cat '$WORK/attn.txt' >> '$TESTS'; exit \$rc"
  if [ "$PLAN" = 0 ] && ! grep -q '"stage":"attention-check","rc":0' "$BENCH"; then
    export SIFT_FT_CUDA_ATTENTION=simt
    say "tensor-core attention check failed (see tests.txt): the rest runs with SIFT_FT_CUDA_ATTENTION=simt"
    echo "{\"bench\":\"stage\",\"stage\":\"attention-fallback\",\"rc\":null,\"seconds\":0,\"status\":\"simt\"}" >> "$BENCH"
  fi
  # The SDDMM (SIFT's weight gradient at the selected entries, CUDA-core kernel) against the CPU
  # kernel before its benchmark; SIFT's 'auto' mode keeps the dense weight gradient on CUDA, so a
  # failure only drops the SDDMM benchmark and leaves every other stage on the dense path.
  # A run where no test passed (CUDA not usable, the tests skipped) counts as a failure.
  stage sddmm-check 90 /dev/null sh -c "${JEST[*]} test/native/sddmm.test.ts -t 'sddmm: CUDA' > '$WORK/sddmm.txt' 2>&1; rc=\$?; cat '$WORK/sddmm.txt' >> '$TESTS'; grep -Eq '^Tests: .*[0-9]+ passed' '$WORK/sddmm.txt' || exit 3; exit \$rc"
  if [ "$PLAN" = 0 ] && ! grep -q '"stage":"sddmm-check","rc":0' "$BENCH"; then
    say "SDDMM check failed (see tests.txt): its benchmark is skipped; SIFT runs with the dense weight gradient"
    echo "{\"bench\":\"stage\",\"stage\":\"sddmm-fallback\",\"rc\":null,\"seconds\":0,\"status\":\"dense\"}" >> "$BENCH"
  else
    # SDDMM at 1% vs the dense bf16 weight-gradient GEMM + gather (4096x4096, 4096x11008, 4096
    # tokens) and the SIFT step of 1B-wide LLaMA layers with and without it: ratios in bench.jsonl.
    stage sddmm 120 "$BENCH" "${RUN[@]}" sddmm --cuda-only --dtypes=bf16
  fi
  # The quantized linear products on CUDA (the tiled path with SIFT's trained entries, and the GEMM
  # that dequantizes inside its shared-memory tiles) against the CPU before anything uses them: the
  # fused GEMM is used by the later stages only if this passes; otherwise they keep the tiled path.
  stage quant-gemm-check 90 /dev/null sh -c "${JEST[*]} test/native/quant.test.ts -t 'CUDA vs CPU' > '$WORK/quant.txt' 2>&1; rc=\$?; cat '$WORK/quant.txt' >> '$TESTS'; exit \$rc"
  if [ "$PLAN" = 0 ]; then
    if grep -q '"stage":"quant-gemm-check","rc":0' "$BENCH"; then
      export SIFT_FT_CUDA_QUANT_GEMM=fused
      say "quantized GEMM check passed: the rest runs with SIFT_FT_CUDA_QUANT_GEMM=fused"
    else
      export SIFT_FT_CUDA_QUANT_GEMM=tiles
      say "quantized GEMM check failed (see tests.txt): the rest keeps the tiled path (SIFT_FT_CUDA_QUANT_GEMM=tiles)"
      echo "{\"bench\":\"stage\",\"stage\":\"quant-gemm-fallback\",\"rc\":null,\"seconds\":0,\"status\":\"tiles\"}" >> "$BENCH"
    fi
  fi
  # The memory-bound kernels (elementwise, copies, reductions, dropout, cross-entropy, norms) with
  # their 16-byte vector paths: their CUDA tests against the CPU, early, so that a failure is known
  # before the benchmarks' figures are read.
  stage vector-check 120 /dev/null sh -c "${JEST[*]} --maxWorkers=4 test/autograd/elementwise.test.ts test/autograd/reduce.test.ts test/autograd/loss.test.ts test/autograd/norm.test.ts test/autograd/dropout.test.ts test/autograd/embedding.test.ts test/autograd/rotary.test.ts -t '\\[cuda\\]' > '$WORK/vector.txt' 2>&1; rc=\$?; cat '$WORK/vector.txt' >> '$TESTS'; exit \$rc"
  # cuBLASLt with fused epilogues (bias, tanh-GELU, bias gradient) first runs here: its CUDA tests
  # (plans executed against the float64 reference, every epilogue and dtype, plain GEMMs, linear and
  # conv1d gradients against the CPU) and the cuBLAS/fallback GEMM tests. On success the rest of
  # the check runs on cuBLASLt (SIFT_FT_CUBLASLT=1), else on the verified cuBLAS path.
  GEMM_PATH=cublas
  stage gemm-check 120 /dev/null sh -c "${JEST[*]} test/native/gemm-epilogue.test.ts test/native/gemm.test.ts -t '\\[cuda\\]' > '$WORK/gemm.txt' 2>&1; rc=\$?; cat '$WORK/gemm.txt' >> '$TESTS'; exit \$rc"
  if [ "$PLAN" = 0 ] && grep -q '"stage":"gemm-check","rc":0' "$BENCH"; then
    export SIFT_FT_CUBLASLT=1
    # The library the rest will use: cuBLASLt where libcublasLt loads, else cuBLAS still.
    GEMM_PATH="$(timeout 60 node -e 'console.log(require(process.env.SIFT_FT_NATIVE).gemmInfo().cuda)' 2>&1 | tail -1 | tr -d '"\\')"
    say "cuBLASLt check passed: the rest runs with SIFT_FT_CUBLASLT=1 ($GEMM_PATH)"
  elif [ "$PLAN" = 0 ]; then
    # Also when the caller's environment asked for cuBLASLt: a failed check means cuBLAS.
    unset SIFT_FT_CUBLASLT
    say "cuBLASLt check failed (see tests.txt): the rest runs on cuBLAS"
  fi
  [ "$PLAN" = 0 ] && echo "{\"bench\":\"stage\",\"stage\":\"gemm-path\",\"rc\":null,\"seconds\":0,\"status\":\"$GEMM_PATH\"}" >> "$BENCH"
  # CUDA graphs first run here: replays against eager results, the allocator's graph pool, refused
  # waits, and a SIFT step replayed as a graph against the eager losses. The graph profile runs only
  # when they pass.
  GRAPHS=0
  stage graphs-check 90 /dev/null sh -c "${JEST[*]} test/engine/cuda-graph.test.ts -t '\\[cuda\\]' > '$WORK/graphs.txt' 2>&1; rc=\$?; cat '$WORK/graphs.txt' >> '$TESTS'; exit \$rc"
  if [ "$PLAN" = 0 ] && grep -q '"stage":"graphs-check","rc":0' "$BENCH"; then
    GRAPHS=1
  elif [ "$PLAN" = 0 ]; then
    say "CUDA graph check failed (see tests.txt): no graph profile"
    echo "{\"bench\":\"stage\",\"stage\":\"graphs-fallback\",\"rc\":null,\"seconds\":0,\"status\":\"eager\"}" >> "$BENCH"
  fi
  # Data parallel on one GPU: test/dist/dist.test.ts's NCCL test (a one-rank NCCL group through
  # the whole finetune path on cuda:0, gradients in 128-byte buckets started on the comm stream
  # during the backward, the increment compared with a run without a group). Where NCCL is not
  # found (SIFT_FT_NCCL, the loader's path, CUDA_HOME, PyTorch's nvidia/nccl) the test passes
  # without running and the stage is recorded as skipped with the reason.
  stage nccl-check 150 /dev/null sh -c "${JEST[*]} test/dist/dist.test.ts -t 'NCCL' > '$WORK/nccl.txt' 2>&1; rc=\$?; cat '$WORK/nccl.txt' >> '$TESTS'; exit \$rc"
  if [ "$PLAN" = 0 ] && grep -q 'NCCL test not run' "$WORK/nccl.txt" 2>/dev/null; then
    say "nccl-check: NCCL was not found, the one-rank NCCL test did not run (see tests.txt)"
    echo "{\"bench\":\"stage\",\"stage\":\"nccl\",\"rc\":null,\"seconds\":0,\"status\":\"skipped\",\"error\":\"NCCL was not found\"}" >> "$BENCH"
  fi
  # The bracket top-k and the prefetch sparse AdamW kernels first run here: their CUDA tests against
  # the CPU (and, for AdamW, the verified kernel) before anything depends on them. Where a check
  # passes the rest of the run uses the new kernel and the bench times both; where it fails (or no
  # test ran: CUDA not usable, the tests skipped) the verified kernel, the default, stays.
  SELECT_KERNELS=radix
  ADAMW_KERNELS=rounds
  # new_kernel_check NAME CAP TESTFILE PATTERN ENV MODE KERNELS_VAR WHAT: the tests of PATTERN in
  # TESTFILE; where they pass, ENV=MODE for the rest of the run and KERNELS_VAR gains MODE (the bench
  # times both); where they fail, ENV is unset and the summary records NAME's fallback.
  new_kernel_check() {
    local name=$1 cap=$2 file=$3 pattern=$4 env=$5 mode=$6 kvar=$7 what=$8
    stage "$name" "$cap" /dev/null sh -c "${JEST[*]} $file -t '$pattern' > '$WORK/$name.txt' 2>&1; rc=\$?; cat '$WORK/$name.txt' >> '$TESTS'; grep -Eq '^Tests: .*[0-9]+ passed' '$WORK/$name.txt' || exit 3; exit \$rc"
    [ "$PLAN" = 0 ] || return 0
    local verified=${!kvar} kind=${name%-check}
    if grep -q "\"stage\":\"$name\",\"rc\":0" "$BENCH"; then
      export "$env=$mode"
      printf -v "$kvar" '%s,%s' "$verified" "$mode"
    else
      unset "$env"
      say "$what check failed (see tests.txt): the rest runs with the $verified kernels ($env unset)"
      echo "{\"bench\":\"stage\",\"stage\":\"$kind-fallback\",\"rc\":null,\"seconds\":0,\"status\":\"$verified\"}" >> "$BENCH"
    fi
  }
  new_kernel_check select-check 180 test/native/select.test.ts 'bracket kernels' SIFT_FT_CUDA_SELECT bracket SELECT_KERNELS 'bracket top-k'
  new_kernel_check adamw-check 90 test/native/optim.test.ts 'prefetch kernel' SIFT_FT_CUDA_SPARSE_ADAMW prefetch ADAMW_KERNELS 'prefetch sparse AdamW'
  stage train 170 "$BENCH" "${RUN[@]}" train --cuda-only
  if [ -n "$PY" ]; then
    # Without transformers the peers are plain-PyTorch re-implementations (their rows say so).
    TOYG=""; [ "$HAVE_TF" = 0 ] && TOYG="--toy-model"
    # shellcheck disable=SC2086
    stage peers-train 140 "$PEERS" "$PY" -B bench/peers/torch_train.py --device cuda $TOYG
  fi
  peft_stage
  stage select 90 "$BENCH" "${RUN[@]}" select --cuda-only --kernels="$SELECT_KERNELS"
  stage adamw 60 "$BENCH" "${RUN[@]}" adamw --cuda-only --kernels="$ADAMW_KERNELS"
  stage attention 60 "$BENCH" "${RUN[@]}" attention --cuda-only
  [ -n "$PY" ] && stage peers-kernels 75 "$PEERS" "$PY" -B bench/peers/torch_kernels.py --device cuda
  # The family tokenizers and chat templates against transformers' AutoTokenizer on the same files.
  [ -n "$PY" ] && [ "$HAVE_TF" = 1 ] && stage tokenizers 30 "$PEERS" sh -c "node '$DIST/bench/tokenizers.js' > '$WORK/tokenizers.json' && '$PY' -B bench/peers/compare_tokenizers.py '$WORK/tokenizers.json'"
  # CUDA tests first (the CPU suites pass on the CPU machines); the whole suite if time is left.
  # The suites a check stage already passed are not run again (after a failed check they run
  # again, under the fallback it switched to).
  SKIP_DONE=""
  grep -q '"stage":"vector-check","rc":0' "$BENCH" && SKIP_DONE="$SKIP_DONE --testPathIgnorePatterns='test/autograd/(elementwise|reduce|loss|norm|dropout|embedding|rotary)\.test\.ts'"
  grep -q '"stage":"gemm-check","rc":0' "$BENCH" && SKIP_DONE="$SKIP_DONE --testPathIgnorePatterns='test/native/gemm(-epilogue)?\.test\.ts'"
  grep -q '"stage":"graphs-check","rc":0' "$BENCH" && SKIP_DONE="$SKIP_DONE --testPathIgnorePatterns='test/engine/cuda-graph\.test\.ts'"
  grep -q '"stage":"nccl-check","rc":0' "$BENCH" && SKIP_DONE="$SKIP_DONE --testPathIgnorePatterns='test/dist/dist\.test\.ts'"
  stage tests-cuda 150 /dev/null sh -c "${JEST[*]} --maxWorkers=4 $SKIP_DONE -t '\\[cuda\\]' > '$WORK/tests-cuda.txt' 2>&1; rc=\$?; cat '$WORK/tests-cuda.txt' >> '$TESTS'; exit \$rc"
  stage profile 45 "$BENCH" "${RUN[@]}" profile --model=gpt2 --method=sift
  # Device busy over step time with CUDA graphs off and on (the same work: dropout off in both).
  if [ "$GRAPHS" = 1 ] || [ "$PLAN" = 1 ]; then
    stage profile-graphs-off 45 "$BENCH" "${RUN[@]}" profile --model=gpt2 --method=sift --no-dropout
    stage profile-graphs-on 45 "$BENCH" "${RUN[@]}" profile --model=gpt2 --method=sift --graphs
  fi
  stage profile-sync 45 "$BENCH" "${RUN[@]}" profile --model=gpt2 --method=sift --sync-each --steps=1
  stage profile-llama 45 "$BENCH" "${RUN[@]}" profile --model=llama --method=sift
  # Every GEMM shape (forward, input- and weight-gradient products) on cuBLAS, cuBLASLt and the
  # fallback; summary.md's GEMM table puts each next to torch's (peers-kernels) with the ratio.
  stage gemm 100 "$BENCH" "${RUN[@]}" gemm --cuda-only
  # Per-kernel device time (what the op-level profile cannot split: the select's and the sparse
  # step's kernels, cuBLAS's choices) from Nsight Systems, and the limiters of the attention and
  # select kernels (throughput, occupancy, warp stalls) from Nsight Compute, where installed.
  find_tool() {
    local t; t="$(command -v "$1" || true)"
    for c in /usr/local/cuda/bin/"$1" /opt/nvidia/nsight-*/*/"$1" /opt/nvidia/nsight-*/*/bin/"$1" /usr/local/cuda/nsight-*/"$1" /usr/local/cuda/nsight-*/bin/"$1"; do
      [ -z "$t" ] && [ -x "$c" ] && t="$c"
    done
    echo "$t"
  }
  NSYS="$(find_tool nsys)"
  NCU="$(find_tool ncu)"
  KERN="$OUTDIR/kernels.txt"
  if [ -n "$NSYS$NCU" ]; then
    : > "$KERN"
    cat > "$WORK/kernels.sh" <<KEOF
set -u
# nsys_kernels NAME CMD...: profile CMD, append its per-kernel summary
nsys_kernels() {
  local name="\$1"; shift
  [ -n "$NSYS" ] || return 0
  "$NSYS" profile --trace=cuda --sample=none --cpuctxsw=none --force-overwrite=true -o "$WORK/nsys-\$name" "\$@" > /dev/null 2>> "$LOG" || return 1
  echo "==== nsys \$name: \$*" >> "$KERN"
  "$NSYS" stats --report cuda_gpu_kern_sum --format csv "$WORK/nsys-\$name.nsys-rep" >> "$KERN" 2>> "$LOG" \\
    || "$NSYS" stats --report gpukernsum --format csv "$WORK/nsys-\$name.nsys-rep" >> "$KERN" 2>> "$LOG"
}
# ncu_kernels NAME REGEX CMD...: the first launches of the kernels matching REGEX
ncu_kernels() {
  local name="\$1" re="\$2"; shift 2
  [ -n "$NCU" ] || return 0
  echo "==== ncu \$name (\$re): \$*" >> "$KERN"
  "$NCU" --target-processes all --kernel-name "regex:\$re" --launch-count 1 --section SpeedOfLight --section Occupancy \\
    --section WarpStateStats --section LaunchStats "\$@" 2>> "$LOG" | grep -v '^{' >> "$KERN"
}
nsys_kernels select ${RUN[*]} select --cuda-only --quick --rates=0.01 --dtypes=f32,bf16 --sizes=4096x4096,8192x28672
nsys_kernels adamw ${RUN[*]} adamw --cuda-only --quick
nsys_kernels step ${RUN[*]} profile --model=gpt2 --method=sift --steps=2
for kn in attn_fwd_tc_kernel attn_bwd_dkdv_tc_kernel attn_bwd_dq_tc_kernel; do
  ncu_kernels attention "\$kn" ${RUN[*]} attention --cuda-only --modes=auto
done
for kn in cand_kernel write_kernel2 split_kernel '^write_kernel\$'; do
  ncu_kernels select "\$kn" ${RUN[*]} select --cuda-only --quick --rates=0.01 --dtypes=bf16 --sizes=8192x28672
done
KEOF
    stage kernels 150 /dev/null bash "$WORK/kernels.sh"
  else
    say "neither nsys nor ncu found: no per-kernel tables (kernels.txt)"
  fi
  shapes_stage 240
  if [ "$FULL_TESTS" = 1 ] || [ $((DEADLINE - SECONDS)) -gt 200 ]; then
    stage tests-all 600 /dev/null sh -c "echo '==== whole suite' >> '$TESTS'; ${JEST[*]} --maxWorkers=8 >> '$TESTS' 2>&1"
  fi
fi
[ "$PLAN" = 1 ] && { echo "mode: $( [ $SMOKE = 1 ] && echo cpu-smoke || echo gpu ), out: $OUTDIR"; rm -rf "$WORK"; exit 0; }

# ---- summary
if [ -n "$NODE" ] && [ -f "$DIST/bench/summary.js" ]; then
  node "$DIST/bench/summary.js" "$OUTDIR" 2>> "$LOG"
else
  say "summary skipped: node or $DIST/bench/summary.js missing"
fi
say "done in $((SECONDS - START))s; files in $OUTDIR: $(ls "$OUTDIR" | tr '\n' ' ')"
rm -rf "$WORK"
