#!/usr/bin/env bash
# The main job: scoutfs on file-backed devices under ./run (override with SCOUTFS_RUN_DIR),
# mounted through FUSE at ./run/mnt with Prometheus metrics on 127.0.0.1:9560
# (SCOUTFS_METRICS_ADDR).  Formats the devices when they are absent; Ctrl-C unmounts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
run=${SCOUTFS_RUN_DIR:-$PWD/run}
mkdir -p "$run"
meta=$run/meta.img
data=$run/data.img
mnt=$run/mnt
[ -e "$meta" ] || truncate -s "${SCOUTFS_META_SIZE:-1G}" "$meta"
[ -e "$data" ] || truncate -s "${SCOUTFS_DATA_SIZE:-4G}" "$data"
if ! bin/scoutfs print "$meta" -n 0 >/dev/null 2>&1; then
  bin/scoutfs mkfs -Q 3 "$meta" "$data"
fi
bin/scoutfs check -q "$meta" "$data"
if grep -q " $mnt fuse" /proc/mounts; then
  echo "$mnt is already mounted; unmount it with: bin/scoutfs umount $mnt" >&2
  exit 1
fi
metrics=${SCOUTFS_METRICS_ADDR:-127.0.0.1:9560}
echo "mounting at $mnt (metrics: http://$metrics/metrics); Ctrl-C to unmount" >&2
exec bin/scoutfs mount --metadev "$meta" "$data" "$mnt" --foreground --metrics-addr "$metrics"
