#!/bin/bash
# Entrypoint of the agent container: a writable HOME, then the agent command.
set -e
umask 0002
mkdir -p "${HOME:-/home/agent}" 2>/dev/null || true
exec "$@"
