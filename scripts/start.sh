#!/usr/bin/env bash
# The main job: a local scoutfs on file-backed devices under ./run (override with
# SCOUTFS_RUN_DIR).  Creates the devices and formats them when absent, then checks them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
run=${SCOUTFS_RUN_DIR:-$PWD/run}
mkdir -p "$run"
meta=$run/meta.img
data=$run/data.img
[ -e "$meta" ] || truncate -s "${SCOUTFS_META_SIZE:-1G}" "$meta"
[ -e "$data" ] || truncate -s "${SCOUTFS_DATA_SIZE:-4G}" "$data"
if ! bin/scoutfs print "$meta" -n 0 >/dev/null 2>&1; then
  bin/scoutfs mkfs -Q 3 "$meta" "$data"
fi
bin/scoutfs check "$meta" "$data"
