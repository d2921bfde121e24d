#!/usr/bin/env bash
# The main job end to end: set up, migrate, then API + worker on the sample data with progress bars.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/geoservice migrate
exec .venv/bin/geoservice demo "$@"
