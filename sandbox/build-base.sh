#!/usr/bin/env bash
# Build the base image debian:bookworm-slim locally with mmdebstrap when it is
# missing and no registry can be reached. On a machine that can pull, `docker
# pull debian:bookworm-slim` does the same job; this script tries that first.
set -euo pipefail
IMAGE="${1:-debian:bookworm-slim}"
DOCKER="${DOCKER:-/usr/bin/docker}"

if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi
if timeout 20 "$DOCKER" pull "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi

# The Debian mirror is this machine's own (apt's sources), or TRIMO_DEBIAN_MIRROR.
mirror="${TRIMO_DEBIAN_MIRROR:-}"
security="${TRIMO_DEBIAN_SECURITY_MIRROR:-}"
for sources in /etc/apt/sources.list.d/*.sources; do
  [ -f "$sources" ] || continue
  [ -n "$mirror" ] || mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$sources")
  [ -n "$security" ] || security=$(awk '/^URIs:/ && $2 ~ /security/ {print $2; exit}' "$sources")
done
for list in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -f "$list" ] || continue
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' "$list")
  [ -n "$security" ] || security=$(awk '$1 == "deb" && $2 ~ /security/ {print $2; exit}' "$list")
done
if [ -z "$mirror" ]; then
  echo "[trimo] no Debian mirror in apt's sources: set TRIMO_DEBIAN_MIRROR=http://host/debian" >&2
  exit 1
fi
security="${security:-${mirror%/debian}/debian-security}"

echo "[trimo] building $IMAGE from $mirror with mmdebstrap (about 30 s, once)" >&2
mmdebstrap --variant=minbase --mode=root --quiet \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  bookworm - \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb $security bookworm-security main" \
  | "$DOCKER" import -c 'CMD ["bash"]' - "$IMAGE" >/dev/null
