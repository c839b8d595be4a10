#!/usr/bin/env bash
# Refuse a Python older than 3.11 or one without venv, with the fix.
set -euo pipefail
py=${1:-python3}
command -v "$py" >/dev/null || { echo "orthocad needs Python >= 3.11: '$py' not found (apt-get install python3 python3-venv)" >&2; exit 2; }
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "orthocad needs Python >= 3.11; $("$py" --version) found (make PYTHON=python3.11 ...)" >&2; exit 2; }
"$py" -c 'import venv, ensurepip' 2>/dev/null ||
  { echo "Python's venv module is missing: apt-get install python3-venv" >&2; exit 2; }
