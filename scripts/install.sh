#!/usr/bin/env bash
# Install jvlm into ./.venv (created if absent). Works on a fresh machine with Python >= 3.10 and pip.
#   bash scripts/install.sh          # runtime: model, CLI, server, PDF input
#   bash scripts/install.sh --test   # + everything the test suite needs (fonts, tokenizer ranks, MLX port)
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST=0
[ "${1:-}" = "--test" ] && WITH_TEST=1
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
# Pin torch first: an unpinned requirement would pull a multi-GB CUDA build. 2.13.0 has a CPU wheel.
"${PIP[@]}" "torch==2.13.0"
if [ "$WITH_TEST" = 1 ]; then
  "${PIP[@]}" -e ".[serve,pdf,train,eval,transformers,test]"
  # The real Qwen BPE ranks (Apache-2.0) ship inside this wheel; only that one file is used.
  "${PIP[@]}" --no-deps "qwen-agent"
  if [ -f scripts/install_test_extras.sh ]; then bash scripts/install_test_extras.sh; fi
else
  "${PIP[@]}" -e ".[serve,pdf]"
fi
