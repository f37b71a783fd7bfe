#!/bin/sh
# Install the Debian packages sluice builds and tests with, only those missing.
set -e
PKGS="build-essential pkg-config libevent-dev libssl-dev libhiredis-dev libinih-dev libcmocka-dev clang libclang-rt-14-dev
libnghttp2-dev nghttp2-client python3-h2 gunicorn python3-pytest python3-pytest-xdist curl openssl redis-server nginx haproxy wrk procps chromium"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "deps: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null 2>&1 || true
  apt-get install -y -q $missing >/dev/null
fi
