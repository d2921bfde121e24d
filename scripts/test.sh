#!/usr/bin/env bash
# The test suite: set up, check the architecture contracts and lint, then pytest against real
# PostGIS, Redis and Celery worker processes (each run uses its own database and queue).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/lint-imports
exec .venv/bin/pytest "$@"
