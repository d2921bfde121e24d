#!/usr/bin/env bash
# Set up everything geoservice needs on a Debian machine: PostGIS from Debian's packages,
# PostgreSQL and Redis running, and a virtualenv (.venv) with the pinned Python dependencies.
# Idempotent: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
PGVER="${PGVER:-$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)}"
PGVER="${PGVER:-15}"

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! ls /usr/share/postgresql/"$PGVER"/extension/postgis.control >/dev/null 2>&1; then
  log "installing PostGIS (postgresql-$PGVER-postgis-3) from Debian's packages"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "postgresql-$PGVER-postgis-3" >/dev/null
fi
command -v redis-server >/dev/null || {
  log "installing Redis"; $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null; }

# Node.js + npm run the real SuperMap iClient in tests/supermap (npm ci there, from its lock file).
command -v npm >/dev/null || {
  log "installing Node.js and npm"; $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null; }
if [ ! -d tests/supermap/iclient/node_modules ]; then
  log "installing the SuperMap iClient test harness (npm ci)"
  (cd tests/supermap/iclient && npm ci --no-audit --no-fund --loglevel=error)
fi

if ! pg_ready; then
  log "starting PostgreSQL $PGVER"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$PGVER" main start || true
fi
for _ in $(seq 1 60); do pg_ready && break; sleep 1; done
pg_ready || { echo "PostgreSQL does not accept connections on 127.0.0.1:5432" >&2; exit 1; }

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/geoservice.log
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.geoservice-deps-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  log "installing Python dependencies (pinned in pyproject.toml)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.geoservice-deps-*; touch "$stamp"
fi
log "ready: PostgreSQL + PostGIS, Redis, .venv"
