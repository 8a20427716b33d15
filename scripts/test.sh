#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite. Fails if no test ran.
#
# Besides the Python packages in .venv, this installs with apt-get (through sudo unless run as
# root), only what is missing: chromium (the playground's browser test) and fonts-dejavu-core,
# fonts-noto-ui-core, fonts-wqy-microhei, libfribidi0, fontconfig (the synthetic documents).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "test.sh: installing the test requirements into .venv; with apt-get, if missing: chromium and the fonts" \
     "fonts-dejavu-core fonts-noto-ui-core fonts-wqy-microhei libfribidi0 fontconfig"
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
if [ "$rc" = 0 ] && [ "$#" = 0 ]; then
  # the Transformers tests once more, on the oldest Transformers pyproject.toml allows
  bash scripts/test_transformers_oldest.sh || rc=$?
fi
exit "$rc"
