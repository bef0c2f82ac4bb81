#!/usr/bin/env bash
# Install Debian's nginx when it is missing: `twinserve bench --overhead` runs it as a reference proxy
# beside the gateway (its own config, in the run folder, in the foreground; never the system service).
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
echo "ensure-nginx: installing nginx-light (the reference proxy of \`twinserve bench --overhead\`)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# Debian's package starts the system nginx on port 80 after install unless policy-rc.d forbids it.
# The bench never uses that service: forbid the start for this install only, when no policy exists.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  trap '$SUDO rm -f "$POLICY"' EXIT
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light >/dev/null
/usr/sbin/nginx -v
