#!/usr/bin/env bash
# Run the Transformers tests against the oldest Transformers that pyproject.toml allows
# (5.5.0, the first whose auto classes prefer a registered class over a folder's remote code),
# in its own venv (.venv-hf-old); the main suite covers the newest.
set -euo pipefail
cd "$(dirname "$0")/.."
OLDEST=5.5.0
PY=${PYTHON:-python3}
if [ ! -x .venv-hf-old/bin/python ]; then
  "$PY" -m venv .venv-hf-old
fi
PIP=(.venv-hf-old/bin/python -m pip install --disable-pip-version-check -q)
# Pin torch first: an unpinned requirement would pull a multi-GB CUDA build.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" "torch==2.13.0" "transformers==$OLDEST" numpy pillow safetensors tokenizers huggingface_hub jinja2 \
  rich pyyaml pytest accelerate peft torchao
.venv-hf-old/bin/python -c "import transformers; assert transformers.__version__ == '$OLDEST', transformers.__version__"
PYTHONPATH="$PWD/src" .venv-hf-old/bin/python -m pytest -q -p no:cacheprovider \
  tests/test_hf_release.py tests/test_hf_generate.py tests/test_hf_options.py \
  tests/test_hf_processor.py tests/test_hf_peft.py tests/test_hf_api.py "$@"
