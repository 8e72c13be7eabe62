#!/usr/bin/env bash
# Install and start what Trimo needs on a Debian machine, idempotently:
# git, Docker engine (docker.io), Redis (redis-server), mmdebstrap, e2fsprogs.
# Sourced or run; safe to run again: it skips what is already there.
set -euo pipefail

log() { printf '\033[1;34m[trimo]\033[0m %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "This step installs system packages and must run as root (or with sudo)." >&2
    exit 1
  fi
}

install_packages() {
  local missing=()
  command -v git >/dev/null || missing+=(git)
  [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  # Each pipeline's disk is an ext4 filesystem in a file, loop-mounted (TRIMO_DISK).
  command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
  command -v losetup >/dev/null || missing+=(mount)
  # Tests make a TLS certificate for a Redis with a TLS port.
  command -v openssl >/dev/null || missing+=(openssl)
  # The dashboard's browser tests drive Debian's headless Chromium through selenium.
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  # ... and check every page with axe-core (tests/axe/, installed with npm).
  command -v npm >/dev/null || missing+=(npm)
  # Tests validate deploy/: the compose file and the systemd units.
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v systemd-analyze >/dev/null || missing+=(systemd)
  # ... and deploy/prometheus/trimo-rules.yml, with promtool.
  command -v promtool >/dev/null || missing+=(prometheus)
  # ... and deploy/Caddyfile, with two App instances restarted behind it.
  command -v caddy >/dev/null || missing+=(caddy)
  if [ "${#missing[@]}" -gt 0 ]; then
    need_root
    log "installing ${missing[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
    # The tests run promtool and caddy themselves: where systemd started their daemons, stop them.
    if [ -d /run/systemd/system ]; then
      for unit in prometheus prometheus-node-exporter caddy; do
        if [[ " ${missing[*]} " == *" ${unit%-node-exporter} "* ]]; then
          systemctl disable --now "$unit" >/dev/null 2>&1 || true
        fi
      done
    fi
  fi
}

start_docker() {
  if docker_ok; then return; fi
  need_root
  log "starting dockerd"
  mkdir -p /var/log
  nohup /usr/sbin/dockerd >/var/log/trimo-dockerd.log 2>&1 &
  for _ in $(seq 1 120); do
    docker_ok && return
    sleep 0.5
  done
  echo "dockerd did not come up; see /var/log/trimo-dockerd.log" >&2
  exit 1
}

docker_ok() { [ -S /var/run/docker.sock ] && /usr/bin/docker info >/dev/null 2>&1; }

start_redis() {
  if redis-cli -p "${TRIMO_TEST_REDIS_PORT:-6379}" ping >/dev/null 2>&1; then return; fi
  log "starting redis-server on 127.0.0.1:${TRIMO_TEST_REDIS_PORT:-6379}"
  redis-server --bind 127.0.0.1 --port "${TRIMO_TEST_REDIS_PORT:-6379}" --daemonize yes \
    --save '' --appendonly no --logfile /tmp/trimo-redis.log
  for _ in $(seq 1 50); do
    redis-cli -p "${TRIMO_TEST_REDIS_PORT:-6379}" ping >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "redis-server did not come up; see /tmp/trimo-redis.log" >&2
  exit 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  install_packages
  start_docker
  start_redis
fi
