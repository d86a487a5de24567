#!/usr/bin/env bash
# The main job: a local 3-node scoutfs cluster on file-backed devices under ./run (override
# with SCOUTFS_RUN_DIR), mounted through FUSE at ./run/mnt0..mnt2, with a status table.
# This script makes sure the machine and the build are ready (scripts/ensure-deps.sh), then
# hands over to scripts/local-cluster.ts (dist/scripts/local-cluster.js), which formats the
# devices when they hold no filesystem, checks them, starts the agents and stops them on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
exec node dist/scripts/local-cluster.js
