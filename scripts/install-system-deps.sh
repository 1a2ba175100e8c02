#!/usr/bin/env bash
# Installs the servers the test suite starts on free ports (redis-server, haproxy, PostgreSQL)
# and the browser the browser tests drive (Debian's chromium, through the playwright Python
# package; never `playwright install`) from Debian's packages when they are missing. Fails
# loudly here rather than in a test.
set -euo pipefail

# The Kubernetes tests render the manifests with `kubectl kustomize`; kubectl is not a Debian
# package, so it is checked rather than installed.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "error: kubectl is missing (the Kubernetes manifest tests run 'kubectl kustomize');" \
    "install it: https://kubernetes.io/docs/tasks/tools/" >&2
  exit 1
fi

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

echo "installing system packages: ${need[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "error: need root (or sudo) to apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# A policy-rc.d answering 101 keeps the packages' own services (port 6379, 5432) from
# starting: the tests start their own servers on free ports.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  added_policy=1
fi
cleanup() { [ "$added_policy" = 1 ] && $sudo rm -f "$policy"; return 0; }
trap cleanup EXIT
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

for bin in redis-server redis-cli haproxy chromium; do
  command -v "$bin" >/dev/null 2>&1 || { echo "error: $bin still missing after install" >&2; exit 1; }
done
