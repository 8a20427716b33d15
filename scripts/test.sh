#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite. Fails if no test ran.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
# vLLM's CPU build in its own environment (.venv-vllm), for tests/test_vllm.py.
bash scripts/install_vllm.sh
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
