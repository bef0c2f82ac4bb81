#!/usr/bin/env bash
# Proof of the compose deployment on a machine without a container registry:
# a private Docker engine, a local Debian base image, a wheelhouse served on loopback,
# every image built, the stack up with the TF-Serving-compatible image in place of the
# official one, predictions for every model through the gateway to the three stacks (TorchServe,
# TF Serving, KServe's model server running ONNX Runtime), a short locust load from the `loadtest`
# profile; then the three stacks scaled to 2 replicas each with
# `docker-compose up --scale` (the gateway untouched: it finds them through Docker's DNS), every
# replica shown serving, and a kill drill (one TorchServe replica `docker kill`ed under locust load,
# no request lost, then `docker start`ed and serving again); then everything torn down.
#
#   bash services/docker/smoke.sh            (what `make compose-smoke` runs)
# Environment: TWINSERVE_DOCKER_DIR (engine data, base image, wheelhouse; default /var/tmp/twinserve-docker),
# SMOKE_GATEWAY_PORT (default 18000) and SMOKE_GATEWAY_GRPC_PORT (default 18001).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=${TWINSERVE_DOCKER_DIR:-/var/tmp/twinserve-docker}
PORT=${SMOKE_GATEWAY_PORT:-18000}
GRPC_PORT=${SMOKE_GATEWAY_GRPC_PORT:-18001}
PY=$ROOT/.venv/bin/python
export DOCKER_HOST=unix://$WORK/docker.sock
export COMPOSE_PROJECT_NAME=twinserve-smoke
export COMPOSE_DOCKER_CLI_BUILD=0
export BASE_IMAGE=local/python:3.11
export TFSERVING_IMAGE=twinserve/tfserving-compat:local
export GATEWAY_PORT=$PORT GATEWAY_GRPC_PORT=$GRPC_PORT
mkdir -p "$WORK"

log() { printf '\n== %s\n' "$*"; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

WHEEL_PID=""
cleanup() {
  status=$?
  log "tearing down"
  docker-compose --profile loadtest --profile monitoring down -v --remove-orphans >/dev/null 2>&1 || true
  # each run's rebuilt images leave the previous ones untagged (several GB a run): drop those and
  # any stopped build containers, keep the tagged images as the next run's cache
  docker container prune -f >/dev/null 2>&1 || true
  docker image prune -f >/dev/null 2>&1 || true
  [ -n "$WHEEL_PID" ] && kill "$WHEEL_PID" 2>/dev/null || true
  if [ -f "$WORK/docker.pid" ]; then
    kill "$(cat "$WORK/docker.pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do [ -f "$WORK/docker.pid" ] || break; sleep 0.2; done
  fi
  exit $status
}
trap cleanup EXIT

log "starting a private Docker engine (no NAT, no default bridge) in $WORK"
if ! docker info >/dev/null 2>&1; then
  if [ -f "$WORK/docker.pid" ] && ! kill -0 "$(cat "$WORK/docker.pid")" 2>/dev/null; then
    rm -f "$WORK/docker.pid"  # left by an engine that was killed
  fi
  $SUDO dockerd --iptables=false --bridge=none -H "$DOCKER_HOST" --data-root "$WORK/data" \
    --exec-root "$WORK/exec" --pidfile "$WORK/docker.pid" >"$WORK/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log"; exit 1; }
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  MIRROR=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  [ -n "$MIRROR" ] || MIRROR=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -E '/debian/?$' | head -n1)
  log "building the base image $BASE_IMAGE with debootstrap from the host's Debian mirror"
  rm -rf "$WORK/rootfs"
  $SUDO debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log"
  $SUDO rm -rf "$WORK/rootfs/var/lib/apt/lists"/* "$WORK/rootfs/var/cache/apt"/*
  $SUDO tar -C "$WORK/rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
  $SUDO rm -rf "$WORK/rootfs"
fi

log "wheelhouse: every pinned dependency, downloaded with the host's pip and served on loopback"
mkdir -p "$WORK/wheels"
"$PY" - "$WORK/wheels" <<'PYEOF'
import subprocess, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
deps = [("torch==2.13.0+cpu" if d.startswith("torch==") else d) for d in deps] + ["setuptools>=68", "wheel"]
subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", sys.argv[1], *deps], check=True)
# the kserve image's own set, resolved on its own (kserve 0.21 pins psutil<6 and protobuf 6, the
# project psutil 7 and protobuf 7): both sets lie side by side, each image's pip picks what its pins allow
subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", sys.argv[1], "-r", "services/kserve/requirements.txt"], check=True)
PYEOF
WHEEL_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$PY" -m http.server "$WHEEL_PORT" --bind 127.0.0.1 --directory "$WORK/wheels" >/dev/null 2>&1 &
WHEEL_PID=$!
export WHEELS_URL=http://127.0.0.1:$WHEEL_PORT/

log "building images"
docker build -q --network host --build-arg BASE_IMAGE --build-arg WHEELS_URL -f services/tfserving/Dockerfile -t "$TFSERVING_IMAGE" .
docker-compose --profile loadtest build

log "starting the stack (docker-compose up, waiting for health)"
docker-compose --profile loadtest down -v --remove-orphans >/dev/null 2>&1 || true  # leftovers of an interrupted run
docker-compose up -d
for _ in $(seq 1 180); do
  state=$(docker inspect -f '{{.State.Health.Status}}' "$(docker-compose ps -q gateway)" 2>/dev/null || echo starting)
  [ "$state" = healthy ] && break
  sleep 2
done
docker-compose ps
[ "$state" = healthy ] || { docker-compose logs --tail 40; exit 1; }

log "predictions for every model through the gateway, to the three stacks, over REST and gRPC"
"$PY" -m loadtests.smoke "http://127.0.0.1:$PORT" --grpc "127.0.0.1:$GRPC_PORT"

log "a short locust load from the loadtest profile"
before=$("$PY" -m loadtests.smoke --served "http://127.0.0.1:$PORT")
LOCUST_DURATION=10s docker-compose --profile loadtest up --no-color --exit-code-from locust-master locust-master locust-worker 2>&1 | tail -25
after=$("$PY" -m loadtests.smoke --served "http://127.0.0.1:$PORT")
echo "requests served through the gateway during the load: $((after - before))"
[ $((after - before)) -gt 0 ] || { echo "the locust profile sent nothing"; exit 1; }

log "several replicas per stack: docker-compose up --scale torchserve=2 --scale tfserving=2 --scale kserve=2"
gateway_started=$(docker inspect -f '{{.State.StartedAt}}' "$(docker-compose ps -q gateway)")
docker-compose up -d --no-recreate --scale torchserve=2 --scale tfserving=2 --scale kserve=2 2>&1 | tail -20
docker-compose ps
"$PY" -m loadtests.smoke ready "http://127.0.0.1:$PORT" --replicas 2
[ "$(docker inspect -f '{{.State.StartedAt}}' "$(docker-compose ps -q gateway)")" = "$gateway_started" ] \
  || { echo "FAIL the gateway was restarted by the scale-up"; exit 1; }
echo "the gateway kept running (started $gateway_started): it found the new replicas by itself"

log "every replica serves: requests to each stack, the split per replica from the gateway's metrics"
"$PY" -m loadtests.smoke split "http://127.0.0.1:$PORT" --requests 300

log "kill drill: locust through the gateway to TorchServe, one replica killed and started again"
drill=0
"$PY" -m loadtests.smoke drill "http://127.0.0.1:$PORT" --service torchserve || drill=$?
echo "the gateway's log about replicas:"
docker-compose logs --no-color gateway 2>&1 | grep -E 'replica' | tail -20 || true
[ "$drill" -eq 0 ] || exit "$drill"

log "compose smoke passed"
