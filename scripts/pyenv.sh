#!/usr/bin/env bash
# A Python virtual environment with clients/python (logfence-handler) and its test extras
# (pytest) installed, for the handler's tests (tests/it/python_handler.rs) and the demo
# (scripts/demo.sh). Prints the environment's python on stdout; progress goes to stderr.
#
# Usage: scripts/pyenv.sh [VENV_DIR]   (default: target/py-venv)
#
# The package is installed again only when a file under clients/python (tests excluded)
# changed since the last install, so a second run costs a hash. Needs python3 (3.9 or
# newer) with its venv module, and pip's access to PyPI (pika, pytest, setuptools).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-${CARGO_TARGET_DIR:-$ROOT/target}/py-venv}"
PKG="$ROOT/clients/python"

die() {
  echo "pyenv.sh: $*" >&2
  exit 1
}

command -v python3 >/dev/null 2>&1 || die "python3 is not installed (CPython 3.9 or newer is needed)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
  die "python3 is $(python3 --version 2>&1); logfence-handler needs 3.9 or newer"

# One preparer at a time (the demo and the handler's tests may run together).
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9

if [ ! -x "$VENV/bin/python" ]; then
  echo "pyenv.sh: creating $VENV" >&2
  python3 -m venv "$VENV" >&2 ||
    die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi

# What is installed is named by a hash of the package's files.
STAMP="$VENV/.logfence-handler.sha256"
WANT="$(cd "$PKG" && find pyproject.toml README.md src -type f ! -name '*.pyc' ! -path '*.egg-info/*' -print0 |
  sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "pyenv.sh: pip install $PKG[test]" >&2
  rm -f "$STAMP"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$PKG[test]" >&2 ||
    die "pip install of clients/python[test] failed: pip needs PyPI (pika, pytest, setuptools); see its message above"
  echo "$WANT" >"$STAMP"
fi
echo "$VENV/bin/python"
