#!/usr/bin/env bash
# Set up (if needed), lint and run the test suite. This is the README's second command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench scripts
.venv/bin/python -m pytest -q "$@"
