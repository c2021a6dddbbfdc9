#!/usr/bin/env bash
# Create .venv (Python 3.11) and install unirank with test and bench extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
# torch is pinned first so nothing pulls a CUDA build.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test,bench,onnx]"
# A venv made before the onnx extra took ONNX Runtime's OpenVINO build also has the plain build, and both
# own the `onnxruntime` module: keep the OpenVINO one, reinstalled over what the plain one overwrote.
if .venv/bin/python -m pip show -q onnxruntime-openvino 2>/dev/null && .venv/bin/python -m pip show -q onnxruntime 2>/dev/null; then
  .venv/bin/python -m pip uninstall --quiet -y onnxruntime
  .venv/bin/python -m pip install --quiet --force-reinstall --no-deps onnxruntime-openvino
fi
# Debian's chromium for the web page test (tests/test_web_page.py skips with a reason without it).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
    || echo "setup: could not install chromium; the browser test will skip" >&2
fi
