#!/bin/sh
# redis-server with the password in the file $TRIMO_REDIS_PASSWORD_FILE (a compose secret),
# given as configuration on stdin: never on a command line or in the environment.
# Arguments go to redis-server as they are.
set -eu
file=${TRIMO_REDIS_PASSWORD_FILE:?set TRIMO_REDIS_PASSWORD_FILE to the file with the password}
if ! password=$(cat "$file"); then
  echo "trimo-redis-start: cannot read the password file $file" >&2
  exit 1
fi
case $password in
  "" | *[!A-Za-z0-9._~-]*)
    echo "trimo-redis-start: $file must hold one line of letters, digits and ._~- (openssl rand -hex 32)" >&2
    exit 1
    ;;
esac
exec redis-server - "$@" <<CONFIG
requirepass $password
CONFIG
