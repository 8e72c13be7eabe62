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

sources=/etc/apt/sources.list.d/debian.sources
mirror=http://deb.debian.org/debian
security=http://deb.debian.org/debian-security
if [ -f "$sources" ]; then
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$sources")
  security=$(awk '/^URIs:/ && $2 ~ /security/ {print $2; exit}' "$sources")
fi

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
