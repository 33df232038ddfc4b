#!/usr/bin/env bash
# Build the tpu-mlir environment (`make tpu-env`): CPython 3.10 + requirements-tpu-mlir.txt,
# with the glibc fix installed so that it survives a reinstall (batchsr/py310/glibc_fix.py).
# Usage: compile/tpu_env.sh [VENV]   (default .venv-tpu). Idempotent: a finished
# environment (VENV/.installed newer than its inputs) is left as it is.
# Python 3.10 is looked for as: $TPU_PYTHON, then pyenv's versions/3.10.*/bin/python3.10
# (whatever pyenv's default version is), then every python3.10 on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-tpu}
req=requirements-tpu-mlir.txt
fix=batchsr/py310/glibc_fix.py
stamp=$venv/.installed

if [ -f "$stamp" ] && [ "$stamp" -nt "$req" ] && [ "$stamp" -nt "$fix" ] && [ "$stamp" -nt "$0" ]; then
  echo "$venv is up to date"
  exit 0
fi

is_310() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; }

find_python() {
  local tried=() p root
  if [ -n "${TPU_PYTHON:-}" ]; then
    is_310 "$TPU_PYTHON" && { echo "$TPU_PYTHON"; return 0; }
    tried+=("\$TPU_PYTHON=$TPU_PYTHON")
  fi
  root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  for p in $(ls -d "$root"/versions/3.10*/bin/python3.10 2>/dev/null | sort -V -r); do
    is_310 "$p" && { echo "$p"; return 0; }
  done
  tried+=("$root/versions/3.10*/bin/python3.10")
  # A pyenv shim refuses while another version is pyenv's default: is_310 skips it.
  for p in $(type -a -p python3.10 2>/dev/null); do
    is_310 "$p" && { echo "$p"; return 0; }
  done
  tried+=("python3.10 on PATH")
  echo "error: tpu-mlir needs CPython 3.10 and none was found; looked for: ${tried[*]}." \
       "Install one (e.g. pyenv install 3.10.13) or set TPU_PYTHON=/path/to/python3.10" >&2
  return 1
}

py=$(find_python)
echo "building $venv with $py ($("$py" -V 2>&1))"
start=$(date +%s)
[ -x "$venv/bin/python" ] && is_310 "$venv/bin/python" || "$py" -m venv --clear "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp "$fix" "$site/batchsr_glibc_fix.py"
echo "import batchsr_glibc_fix" > "$site/batchsr_glibc_fix.pth"
"$venv/bin/python" "$fix"
# Smoke test: a tool starts and its native modules load (fails loudly if the fix did not hold).
"$venv/bin/python" -c 'import batchsr_glibc_fix, tpu_mlir, sys; sys.path.insert(0, tpu_mlir.package_path + "/python"); import pymlir' 
"$venv/bin/model_tool" --version >/dev/null 2>&1 || "$venv/bin/model_tool" 2>&1 | head -n 1 >/dev/null
touch "$stamp"
echo "$venv ready in $(( $(date +%s) - start )) s, $(du -sh "$venv" | cut -f1)"
