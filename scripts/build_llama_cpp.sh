#!/usr/bin/env bash
# Build llama.cpp's benchmark tools for bench/peer_llama_cpp.py:
#   llama-bench, llama-quantize, and the HF -> GGUF converter (convert_hf_to_gguf.py with its gguf-py)
# from the llama-cpp-python source distribution on PyPI, which vendors llama.cpp under vendor/llama.cpp.
#
#   bash scripts/build_llama_cpp.sh                  # default version, into the cache folder below
#   LLAMA_CPP_PYTHON_VERSION=0.3.36 bash scripts/build_llama_cpp.sh
#   PYTHON=.venv/bin/python bash scripts/build_llama_cpp.sh   # reuse an interpreter that has torch
#                                                             # and transformers for the converter
#
# Result: ${JVLM_CACHE:-$HOME/.cache/jvlm}/llama.cpp/<version>/
#   bin/llama-bench, bin/llama-quantize     Release, native CPU flags (GGML_NATIVE), static libraries
#   src/vendor/llama.cpp/convert_hf_to_gguf.py (+ gguf-py)
#   venv/                                   the converter's interpreter (unless PYTHON was reused)
#   manifest.json                           paths, version, llama.cpp commit, build flags; read by
#                                           bench/peer_llama_cpp.py (point JVLM_LLAMA_CPP at this folder
#                                           to use a build elsewhere)
# A second run with the binaries present does nothing but print where they are.
# Needs: python3 (with venv), pip, gcc/g++ (installed with apt-get if g++ is missing), about 6 minutes
# on 2 cores. cmake and ninja come from PyPI unless recent enough ones are on PATH.
set -euo pipefail

VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
CACHE_ROOT=${JVLM_CACHE:-$HOME/.cache/jvlm}/llama.cpp
PREFIX=$CACHE_ROOT/$VERSION
SRC=$PREFIX/src
LLAMA_SRC=$SRC/vendor/llama.cpp
BUILD=$PREFIX/build
BIN=$PREFIX/bin
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
SYS_PY=${BOOTSTRAP_PYTHON:-python3}
PIP_FLAGS=(--disable-pip-version-check -q)

log() { echo "build_llama_cpp: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {  # apt_install PKG...: install Debian packages (only called when something is missing)
  if ! command -v apt-get >/dev/null; then
    log "missing $*, and apt-get is not available: install them with your package manager"; exit 1
  fi
  log "installing $* with apt-get"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

mkdir -p "$PREFIX"

# --- 1. compilers -------------------------------------------------------------------------------
if ! command -v g++ >/dev/null || ! command -v gcc >/dev/null; then
  apt_install g++ gcc
fi
if ! "$SYS_PY" -c 'import venv, ensurepip' 2>/dev/null; then
  pyver=$("$SYS_PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  apt_install "python${pyver}-venv" || apt_install python3-venv
fi

# --- 2. converter interpreter -----------------------------------------------------------------------
# Either PYTHON (if it already has torch and transformers) or PREFIX/venv with torch pinned first
# (an unpinned torch would pull a multi-GB CUDA build).
CONVERT_PY=""
if [ -n "${PYTHON:-}" ]; then
  if "$PYTHON" -c 'import torch, transformers' 2>/dev/null; then
    CONVERT_PY=$(command -v "$PYTHON" || echo "$PYTHON")
    CONVERT_PY=$(cd "$(dirname "$CONVERT_PY")" && pwd)/$(basename "$CONVERT_PY")
    log "reusing $CONVERT_PY for the converter"
  else
    log "PYTHON=$PYTHON lacks torch or transformers; using a venv of its own instead"
  fi
fi
if [ -z "$CONVERT_PY" ]; then
  CONVERT_PY=$PREFIX/venv/bin/python
  if ! "$CONVERT_PY" -c 'import torch, transformers, sentencepiece, safetensors, numpy' 2>/dev/null; then
    log "creating the converter venv in $PREFIX/venv (torch CPU wheel, transformers, ...)"
    [ -x "$CONVERT_PY" ] || "$SYS_PY" -m venv "$PREFIX/venv"
    "$CONVERT_PY" -m pip install "${PIP_FLAGS[@]}" "torch==2.13.0"
    # transformers as pinned by the vendored requirements/requirements-convert_legacy_llama.txt
    "$CONVERT_PY" -m pip install "${PIP_FLAGS[@]}" "transformers==4.57.6" numpy sentencepiece \
      safetensors "protobuf>=4.21,<5" pyyaml tqdm requests
  fi
fi
# cmake/ninja: the system ones if recent enough, else from PyPI into a small tools venv
TOOLS=$PREFIX/tools
cmake_ok() {
  command -v cmake >/dev/null && command -v ninja >/dev/null || return 1
  cmake --version | head -1 | awk '{split($3,v,"."); exit !((v[1]>3)||(v[1]==3&&v[2]>=18))}'
}
if cmake_ok; then
  CMAKE=$(command -v cmake); NINJA=$(command -v ninja)
else
  if [ ! -x "$TOOLS/bin/cmake" ] || [ ! -x "$TOOLS/bin/ninja" ]; then
    log "installing cmake and ninja from PyPI into $TOOLS"
    [ -x "$TOOLS/bin/python" ] || "$SYS_PY" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install "${PIP_FLAGS[@]}" cmake ninja
  fi
  CMAKE=$TOOLS/bin/cmake; NINJA=$TOOLS/bin/ninja
fi

# --- 3. source -------------------------------------------------------------------------------------
if [ ! -f "$LLAMA_SRC/convert_hf_to_gguf.py" ]; then
  DL=$PREFIX/download
  mkdir -p "$DL"
  log "downloading the llama-cpp-python $VERSION source distribution"
  "$SYS_PY" -m pip download "${PIP_FLAGS[@]}" --no-binary :all: --no-deps -d "$DL" "llama-cpp-python==$VERSION"
  tarball=$(ls "$DL"/llama_cpp_python-"$VERSION".tar.gz)
  rm -rf "$SRC.tmp"; mkdir -p "$SRC.tmp"
  tar -xzf "$tarball" -C "$SRC.tmp" --strip-components=1
  rm -rf "$SRC"; mv "$SRC.tmp" "$SRC"
  rm -f "$tarball"
fi
# The sdist has no git metadata; its changelog names the vendored llama.cpp commit.
COMMIT=$(awk -v v="## [$VERSION]" '$0==v{f=1;next} /^## \[/{f=0} f' "$SRC/CHANGELOG.md" 2>/dev/null \
  | grep -o 'llama\.cpp@[0-9a-f]\{7,40\}' | head -1 | cut -d@ -f2 || true)
COMMIT=${COMMIT:-unknown}

# gguf-py for the converter (the converter also finds it beside itself; installing makes it importable)
if ! "$CONVERT_PY" -c 'import gguf, sys; sys.exit(0 if "'"$LLAMA_SRC"'" in gguf.__file__ else 1)' 2>/dev/null; then
  if [ "$CONVERT_PY" = "$PREFIX/venv/bin/python" ]; then
    "$CONVERT_PY" -m pip install "${PIP_FLAGS[@]}" --no-deps -e "$LLAMA_SRC/gguf-py"
  else
    # a reused interpreter gets only the small modules it lacks (the converter puts its own
    # gguf-py on sys.path itself)
    missing=$("$CONVERT_PY" -c '
import importlib.util
need = {"sentencepiece": "sentencepiece", "safetensors": "safetensors", "numpy": "numpy",
        "yaml": "pyyaml", "tqdm": "tqdm", "requests": "requests"}
print(" ".join(p for m, p in need.items() if importlib.util.find_spec(m) is None))')
    if [ -n "$missing" ]; then
      log "installing $missing into $CONVERT_PY for the converter"
      # shellcheck disable=SC2086
      "$CONVERT_PY" -m pip install "${PIP_FLAGS[@]}" $missing
    fi
  fi
fi

# --- 4. build ------------------------------------------------------------------------------------
if [ -x "$BIN/llama-bench" ] && [ -x "$BIN/llama-quantize" ] && [ -f "$PREFIX/manifest.json" ]; then
  log "binaries already built"
else
  log "configuring llama.cpp $COMMIT (Release, GGML_NATIVE=ON) in $BUILD"
  "$CMAKE" -S "$LLAMA_SRC" -B "$BUILD" -G Ninja -DCMAKE_MAKE_PROGRAM="$NINJA" \
    -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_COMMIT="$COMMIT" \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_OPENSSL=OFF \
    -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF >"$PREFIX/configure.log" 2>&1 \
    || { tail -40 "$PREFIX/configure.log" >&2; exit 1; }
  log "building llama-bench and llama-quantize with $JOBS jobs (a few minutes)"
  start=$(date +%s)
  "$CMAKE" --build "$BUILD" --target llama-bench llama-quantize -j "$JOBS" >"$PREFIX/build.log" 2>&1 \
    || { tail -40 "$PREFIX/build.log" >&2; exit 1; }
  log "built in $(( $(date +%s) - start )) s"
  mkdir -p "$BIN"
  cp "$BUILD/bin/llama-bench" "$BUILD/bin/llama-quantize" "$BIN/"
fi

# --- 5. manifest ----------------------------------------------------------------------------------
# (the GGML_AVX* switches are not listed: GGML_NATIVE=ON overrides them)
FLAGS=$(grep -E '^(GGML_NATIVE|GGML_OPENMP|CMAKE_BUILD_TYPE|BUILD_SHARED_LIBS):' "$BUILD/CMakeCache.txt" \
  2>/dev/null | sed -E 's/:[A-Z]+=/=/' | tr '\n' ' ' || true)
COMPILER=$("$BIN/llama-bench" --version 2>&1 | grep -o 'built with .*' | head -1 || true)
# what GGML_NATIVE's -march=native turns on here (the vector extensions only)
ISA=$(g++ -march=native -Q --help=target 2>/dev/null \
  | awk '$2=="[enabled]" && $1 ~ /^-m(avx|fma|f16c|amx)/ {sub(/^-m/,"",$1); printf "%s ", $1}' || true)
"$SYS_PY" - "$PREFIX" "$VERSION" "$COMMIT" "$CONVERT_PY" "$LLAMA_SRC" "$FLAGS" "$ISA" "$COMPILER" <<'EOF'
import json, sys, os
prefix, version, commit, py, src, flags, isa, compiler = sys.argv[1:]
manifest = {
    "llama_cpp_python_version": version,
    "llama_cpp_commit": commit,
    "bin": os.path.join(prefix, "bin"),
    "llama_bench": os.path.join(prefix, "bin", "llama-bench"),
    "llama_quantize": os.path.join(prefix, "bin", "llama-quantize"),
    "convert_hf_to_gguf": os.path.join(src, "convert_hf_to_gguf.py"),
    "python": py,
    "cmake_flags": flags.split(),
    "native_isa": isa.split(),
    "compiler": compiler,
}
with open(os.path.join(prefix, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
EOF

echo "llama.cpp $COMMIT (from llama-cpp-python $VERSION) is ready in $PREFIX"
echo "  llama-bench:        $BIN/llama-bench"
echo "  llama-quantize:     $BIN/llama-quantize"
echo "  converter:          $LLAMA_SRC/convert_hf_to_gguf.py"
echo "  converter python:   $CONVERT_PY"
echo "  manifest:           $PREFIX/manifest.json"
echo "  benchmark:          python bench/peer_llama_cpp.py --quick --threads 2"
