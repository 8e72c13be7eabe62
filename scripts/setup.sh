#!/usr/bin/env bash
# Shared set-up steps: system services, the Python environment, the images.
# Sourced by scripts/test and scripts/start; every step skips what is done.
set -euo pipefail
# shellcheck source=scripts/services.sh
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"

PYTHON="${PYTHON:-python3}"

setup_venv() {
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "$PYTHON" -m venv .venv
  fi
  local stamp=.venv/.trimo-installed
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements-dev.lock -nt "$stamp" ]; then
    log "installing Trimo and its dependencies into .venv"
    .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
    # The versions the suite passed with, verified by hash (scripts/lock writes the file).
    .venv/bin/pip install -q --require-hashes -r requirements-dev.lock
    # Built with the locked setuptools just installed, not a fresh unpinned download into a
    # build environment of its own (10 s more, and no hashes).
    .venv/bin/pip install -q --no-deps -e . --no-build-isolation
    touch "$stamp"
  fi
}

setup_axe() {
  # axe-core for the browser tests' accessibility checks, at the version its lock pins.
  local stamp=tests/axe/node_modules/.trimo-installed
  if [ ! -f "$stamp" ] || [ tests/axe/package-lock.json -nt "$stamp" ]; then
    log "installing axe-core for the browser tests (npm ci)"
    (cd tests/axe && npm ci --no-audit --no-fund --silent)
    touch "$stamp"
  fi
}

setup_images() {
  bash sandbox/build-base.sh debian:bookworm-slim
  log "building the agent images (cached after the first time)"
  .venv/bin/trimo image build --target base --tag trimo-agent:base --quiet
  log "building the egress proxy image (cached after the first time)"
  .venv/bin/python -c 'import docker; from runner.network.proxyimage import ensure_image; ensure_image(docker.from_env())'
}

setup_all() {
  install_packages
  start_docker
  start_redis
  # npm ci needs nothing of the Python environment: beside it, not after it.
  setup_axe &
  local axe=$!
  setup_venv
  setup_images
  wait "$axe"
}
