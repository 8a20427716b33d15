#!/usr/bin/env bash
# Install the fonts the synthetic data generator (jvlm_demo.synthetic) renders with.
#
# Why these packages: they are the smallest Debian set that covers every script the
# generator writes, about 4.1 MB downloaded in total (the Noto core + CJK pair would be
# about 69 MB):
#   fonts-dejavu-core   1.1 MB  Latin (English, Portuguese, Turkish) and Cyrillic (Russian)
#   fonts-noto-ui-core  1.4 MB  Noto Sans Arabic UI (Arabic, shaped by Pillow's raqm layout)
#   fonts-wqy-microhei  1.6 MB  WenQuanYi Micro Hei (Simplified Chinese)
#   libfribidi0          tiny   bidi library that Pillow's bundled raqm loads at run time
#
# Idempotent: it does nothing (and needs no network) when every package is present.
# Same fonts everywhere is what makes a seed reproduce byte-identical images.
set -euo pipefail

packages=(fonts-dejavu-core fonts-noto-ui-core fonts-wqy-microhei libfribidi0 fontconfig)

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install_fonts: all font packages already installed (${packages[*]})"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

echo "install_fonts: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fc-cache -f >/dev/null 2>&1 || true
echo "install_fonts: done"
