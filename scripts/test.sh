#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite. Fails if no test ran.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
if [ "$rc" = 0 ] && [ "$#" = 0 ]; then
  # the Transformers tests once more, on the oldest Transformers pyproject.toml allows
  bash scripts/test_transformers_oldest.sh || rc=$?
fi
exit "$rc"
