#!/bin/sh
# pip install into /opt/venv inside an image build.
# WHEELS_URL (a build argument) points pip at a wheelhouse served over HTTP on the build host, for
# machines without a package index; empty means the public index (and TORCH_INDEX for torch's CPU build).
set -eu
if [ -n "${WHEELS_URL:-}" ]; then
  set -- --no-index --find-links "$WHEELS_URL" "$@"
fi
exec /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check "$@"
