#!/usr/bin/env bash
# Install jvlm into ./.venv (created if absent). Works on a fresh machine with Python >= 3.10 and pip.
#   bash scripts/install.sh          # everything the `jvlm` command runs: model, CLI, chat, server,
#                                    # PDF input, evaluation (incl. the openai client), training plots
#   bash scripts/install.sh --test   # + everything the test suite needs (the demo recipe, fonts, tokenizer ranks, MLX port)
# Nothing is installed outside .venv, except by --test (see scripts/install_test_extras.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST=0
[ "${1:-}" = "--test" ] && WITH_TEST=1
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)

source scripts/pip_quiet.sh  # pip_install: pip without its complaint about qwen-agent

# Pin torch first: an unpinned requirement would pull a multi-GB CUDA build. 2.13.0 has a CPU wheel.
pip_install "torch==2.13.0"
if [ "$WITH_TEST" = 1 ]; then
  pip_install -e ".[serve,pdf,train,eval,transformers,test]"
  # The jvlm-demo recipe (recipes/jvlm_demo): its own package on top of the library; --no-deps
  # because its only requirement is the jvlm just installed.
  pip_install --no-deps -e recipes/jvlm_demo
  # The real Qwen BPE ranks (Apache-2.0) ship inside this wheel; only that one file is used.
  pip_install --no-deps "qwen-agent"
  if [ -f scripts/install_test_extras.sh ]; then bash scripts/install_test_extras.sh; fi
else
  pip_install -e ".[serve,pdf,train,eval]"
fi
# Compile the decode kernels for this CPU now (once, about a minute; cached in jvlm's cache folder)
# rather than on the first `jvlm infer`. If they cannot be built, jvlm says so and uses PyTorch's.
echo "install.sh: compiling jvlm's decode kernels for this CPU (once, about a minute)"
.venv/bin/python -c "from jvlm.inference import kernels; ks = kernels.load(); print('install.sh: decode kernels:', ks.name if ks else 'none, PyTorch kernels will be used')" || true
echo "install.sh: installed into .venv; run .venv/bin/jvlm --help (or: source .venv/bin/activate; jvlm --help)"
