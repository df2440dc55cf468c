#!/usr/bin/env bash
# Prepares .device/ for one call of bench/gpu-check.sh on the GPU machine (which has no Node.js and
# no npm registry) and prints the `run` call to make. Everything goes compressed into .device/
# (ignored by git), the one path to carry; the check unpacks it there:
#   node.xz              this machine's Node.js binary
#   sift_ft.node.xz      the addon with its CUDA backend (archs 80 and 90 by default)
#   dist.tar.xz          the compiled TypeScript (lib/ and bench/)
#   node_modules.tar.xz  node_modules without packages the check does not need
#
#   bash bench/pack-for-device.sh [--addon=PATH] [--archs="80-real;90"] [--build-dir=build-device]
#
# Without --addon the addon is built into the build dir (CUDA, the given archs) when missing or
# older than a file under native/ (slow: several minutes on a few cores).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ADDON=""
ARCHS="80-real;90"
BUILD_DIR="build-device"
LIMIT=$((64 * 1024 * 1024))
# Not needed by the check (ONNX runtime binaries are hundreds of MB; the formatter, linter and
# package checkers are tens).
EXCLUDES=(--exclude=node_modules/onnxruntime-node --exclude=node_modules/onnxruntime-common --exclude=node_modules/.cache
  --exclude=node_modules/@biomejs --exclude=node_modules/@arethetypeswrong --exclude=node_modules/publint)
for a in "$@"; do
  case "$a" in
    --addon=*) ADDON="${a#--addon=}" ;;
    --archs=*) ARCHS="${a#--archs=}" ;;
    --build-dir=*) BUILD_DIR="${a#--build-dir=}" ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "pack-for-device: unknown argument $a" >&2; exit 2 ;;
  esac
done
mkdir -p .device
grep -qxF '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude 2>/dev/null || true

# Node.js
NODE_BIN="$(readlink -f "$(command -v node)")"
if [ ! -s .device/node.xz ] || [ "$NODE_BIN" -nt .device/node.xz ]; then
  echo "packing node $("$NODE_BIN" --version) ..."
  xz -T0 -6 -c "$NODE_BIN" > .device/node.xz
fi

# The addon, with CUDA
if [ -z "$ADDON" ]; then
  ADDON="$BUILD_DIR/Release/sift_ft.node"
  stale=""
  [ -f "$ADDON" ] && stale="$(find native CMakeLists.txt -newer "$ADDON" -type f 2>/dev/null | head -1)"
  if [ ! -f "$ADDON" ] || [ -n "$stale" ]; then
    echo "building the addon with CUDA archs $ARCHS into $BUILD_DIR${stale:+ ($stale is newer)} ..."
    SIFT_FT_BUILD_DIR="$BUILD_DIR" SIFT_FT_CUDA_ARCHS="$ARCHS" node scripts/build-native.js
  fi
fi
[ -f "$ADDON" ] || { echo "pack-for-device: no addon at $ADDON" >&2; exit 1; }
if ! node -e "process.exit(require(require('path').resolve(process.argv[1])).backends().cuda.compiled ? 0 : 1)" "$ADDON"; then
  echo "pack-for-device: $ADDON was built without CUDA" >&2
  exit 1
fi
if [ ! -s .device/sift_ft.node.xz ] || [ "$ADDON" -nt .device/sift_ft.node.xz ] || [ -n "${FORCE:-}" ]; then
  echo "packing $ADDON ..."
  xz -T0 -6 -c "$ADDON" > .device/sift_ft.node.xz
fi

# Compiled TypeScript (tsc emits even when another file has a type error; say so).
TMP_DIST="$(mktemp -d)"
if ! node node_modules/typescript/bin/tsc -p tsconfig.json --outDir "$TMP_DIST" > "$TMP_DIST.log" 2>&1; then
  echo "warning: tsc reported errors (output emitted anyway):"; head -5 "$TMP_DIST.log"
fi
# The sources it was compiled from, so that gpu-check uses it only while they are unchanged.
find lib bench -name '*.ts' -type f | LC_ALL=C sort | xargs cat | sha1sum | cut -d' ' -f1 > "$TMP_DIST/.sources.sha1"
tar -cJf .device/dist.tar.xz -C "$TMP_DIST" .
rm -rf "$TMP_DIST" "$TMP_DIST.log"

# node_modules (repacked when package-lock.json changed)
if [ ! -s .device/node_modules.tar.xz ] || [ package-lock.json -nt .device/node_modules.tar.xz ] || [ -n "${FORCE:-}" ]; then
  echo "packing node_modules ..."
  tar -cf - "${EXCLUDES[@]}" node_modules | xz -T0 -6 > .device/node_modules.tar.xz
fi

extra="$(find .device -mindepth 1 -maxdepth 1 ! -name node.xz ! -name sift_ft.node.xz ! -name dist.tar.xz ! -name node_modules.tar.xz)"
[ -n "$extra" ] && echo "note: .device also holds (and will carry): $extra"
carried=$(du -cb .device | tail -1 | cut -f1)
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | awk '$2=="total"{s+=$1} END{print s+0}')
ls -la .device
echo "carry .device: $((carried / 1048576)) MiB; working tree (travels anyway): $((tree / 1048576)) MiB; limit 64 MiB"
if [ $((carried + tree)) -gt $LIMIT ]; then
  echo "pack-for-device: over the 64 MiB limit" >&2
  exit 1
fi
cat <<'EOF'

Run on the GPU machine (one call, under 10 minutes):
  run(carry: [".device"], timeout_s: 600, command: "bash bench/gpu-check.sh")
It writes summary.md, results.json, bench.jsonl, peers.jsonl, tests.txt, env.txt and log.txt to $OUT.
Elsewhere (any machine with an NVIDIA GPU, after npm install): bash bench/gpu-check.sh OUTDIR
EOF
