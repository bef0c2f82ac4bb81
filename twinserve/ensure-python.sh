#!/usr/bin/env bash
# `make setup` makes .venv with Python 3.11. On a fresh Debian 12, python3.11 is there but `-m venv`
# needs the python3.11-venv package (ensurepip); elsewhere python3.11 itself may be missing.
# Install what is missing with apt-get, as ensure-java.sh does for Java, or say the exact apt line.
set -euo pipefail
PY=${1:-python3.11}
if command -v "$PY" >/dev/null 2>&1 && "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  exit 0
fi
need=("${PY##*/}-venv")
command -v "$PY" >/dev/null 2>&1 || need=("${PY##*/}" "${need[@]}")
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "ensure-python: $PY cannot make a venv; run: apt-get install -y ${need[*]}" >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "ensure-python: installing ${need[*]} (needed to make .venv)"
$SUDO apt-get update -qq
if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null; then
  echo "ensure-python: could not install ${need[*]}; on this release run: apt-get install -y ${need[*]} (or point PYTHON= at a Python 3.11 with venv)" >&2
  exit 1
fi
