# Sourced by install.sh and install_test_extras.sh (expects PIP=(python -m pip install ...)).
# pip, after each install, lists installed packages whose requirements are unmet. qwen-agent is
# installed with --no-deps on purpose (only its tokenizer file is used), so its lines are noise.
pip_install() {
  local log rc=0
  log=$(mktemp)
  "${PIP[@]}" "$@" >"$log" 2>&1 || rc=$?
  grep -v -e "^qwen-agent .* requires " -e "^ERROR: pip's dependency resolver does not currently take into account" \
    "$log" >&2 || true
  rm -f "$log"
  return "$rc"
}
