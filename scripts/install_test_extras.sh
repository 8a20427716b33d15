#!/usr/bin/env bash
# Extra tools some tests need beyond the Python extras; called by `scripts/install.sh --test`.
# Each block is idempotent: it does nothing (and needs no network) when its tools are present.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_PY=${VENV_PY:-.venv/bin/python}
PIP=("$VENV_PY" -m pip install --disable-pip-version-check -q)
source scripts/pip_quiet.sh  # pip_install: pip without its complaint about qwen-agent
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --- browser for the web playground's end-to-end test (tests/test_playground.py) ----------
# The Debian `chromium` package, driven by the Playwright Python package through
# executable_path=/usr/bin/chromium. Playwright's own browser download is never used.
if [ ! -x /usr/bin/chromium ]; then
  echo "install_test_extras: installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends chromium
fi
if ! "$VENV_PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
  echo "install_test_extras: installing the playwright Python package"
  pip_install playwright
fi

# --- ARM64 cross compiler and qemu for the NEON kernel check (tests/test_decode_kernels.py) ---
# The NEON kernel cores are cross-compiled for aarch64 and run under qemu-user on x86 CI.
if ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1; then
  echo "install_test_extras: installing the aarch64 cross compiler and qemu-user"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends g++-aarch64-linux-gnu qemu-user
fi

# --- fonts for the synthetic document data (tests/test_synthetic.py) ----------------------
bash scripts/install_fonts.sh

# --- the independent MLX port, for the parity test (tests/test_mlx_parity.py) -------------
# Only its model code is needed: mlx-vlm's other dependencies (datasets, opencv, ...) are skipped.
if ! "$VENV_PY" -c "import mlx_vlm.models.jina_vlm" >/dev/null 2>&1; then
  echo "install_test_extras: installing mlx (CPU) and mlx-vlm"
  pip_install 'mlx[cpu]==0.32.4' requests
  pip_install --no-deps 'mlx-vlm==0.7.10'
fi
